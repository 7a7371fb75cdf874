"""The linear baseline: TF-IDF + logistic regression on the same inputs the recurrent models see.

Each review is its token ids from the xy arrays (10k vocabulary, 200 tokens kept by `data.truncate`, `<unk>` kept
as a token), so the comparison is like for like. C is chosen on the validation split; the test split is scored once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from rnnlab.config.params import BaselineConfig
from rnnlab.core.files import outputs_together, write_json
from rnnlab.data.arrays import Split, load_meta, load_split
from rnnlab.evaluation.metrics import EvaluationOutputs, classification_metrics, write_predictions
from rnnlab.runtime.environment import BASELINE_MATH, record_evaluation, record_training, reproducible, result_environment

NAME = "linear_tfidf"
BASELINE_METRICS = ("accuracy", "f1", "roc_auc", "loss")  # the declared metrics but best_epoch: one fit, no epochs


def documents(split: Split) -> list[str]:
    """Token ids as space-separated words, padding cut off at each review's length."""
    return [" ".join(map(str, row[:length])) for row, length in zip(split.x.tolist(), split.lengths.tolist(), strict=True)]


def fit_and_select(config: BaselineConfig, train: Split, valid: Split) -> tuple[TfidfVectorizer, dict[str, Any]]:
    """The vectorizer and the best fit on the validation split (the first of equals): C, its model and seconds."""
    vectorizer = TfidfVectorizer(
        tokenizer=str.split, token_pattern=None, lowercase=False, ngram_range=(1, config.ngram_max), sublinear_tf=True
    )
    train_features = vectorizer.fit_transform(documents(train))
    valid_features = vectorizer.transform(documents(valid))
    fits = []
    for exponent in range(config.c_grid[0], config.c_grid[1] + 1):
        c_value = 10.0**exponent
        started = time.perf_counter()
        classifier = LogisticRegression(C=c_value, max_iter=config.max_iter).fit(train_features, train.y.numpy())
        seconds = time.perf_counter() - started
        accuracy = float((classifier.predict(valid_features) == valid.y.numpy()).mean())
        print(f"baseline C={c_value:g}: valid accuracy {accuracy:.4f} ({seconds:.1f}s)")
        fits.append({"C": c_value, "valid_accuracy": accuracy, "seconds": seconds, "classifier": classifier})
    return vectorizer, max(fits, key=lambda fit: fit["valid_accuracy"])


def run_baseline(config: BaselineConfig, data_dir: Path, outputs: EvaluationOutputs) -> None:
    """Fit on train, choose C on valid, score test once; write metrics and predictions like evaluate does."""
    outputs.check_writable()  # before the work, not after it
    meta = load_meta(data_dir)
    train, valid, test = (load_split(data_dir, split) for split in ("train", "valid", "test"))
    vectorizer, best = fit_and_select(config, train, valid)
    classifier = best["classifier"]
    started = time.perf_counter()
    probabilities = classifier.predict_proba(vectorizer.transform(documents(test)))
    eval_seconds = time.perf_counter() - started
    y = test.y.numpy()
    loss = float(log_loss(y, probabilities, labels=list(range(meta.num_classes))))
    math = BASELINE_MATH if reproducible() else "numpy/scipy OpenBLAS: machine-dependent"
    metrics = {
        "variant": NAME,
        "study": "imdb",
        **classification_metrics(y, probabilities, meta.class_names, loss),
        "parameters": int(classifier.coef_.size + classifier.intercept_.size),
        "epochs_trained": 1,
        "best_epoch": 1,
        "best_valid_accuracy": best["valid_accuracy"],
        "diverged": False,
        "seed": 0,
        "cell": "linear",
        "gradient": None,  # no recurrence: nothing flows through time
        "environment": result_environment(torch.device("cpu"), math=math),
    }
    with outputs_together(*outputs.files) as staged:
        write_predictions(staged[outputs.predictions], y, probabilities, meta.class_names)
        write_json(staged[outputs.details], metrics)
        write_json(staged[outputs.metrics], {key: metrics[key] for key in BASELINE_METRICS})
    if outputs.timings is not None:
        record_training(outputs.timings, NAME, "cpu", [best["seconds"]], int(train.lengths.sum()))
        record_evaluation(outputs.timings, NAME, float(test.lengths.sum()) / eval_seconds)
    print(json.dumps({"variant": NAME, "C": best["C"], "accuracy": metrics["accuracy"], "roc_auc": metrics["roc_auc"]}))
