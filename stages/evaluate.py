"""Stage `evaluate@<variant>`: test-set metrics for one trained variant, the same keys for all.

Precision, recall and F1 are for the positive class when there are two classes and macro
averages otherwise; ROC-AUC is one-vs-rest macro for more than two classes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as skm

from stages.common import StageError, atomic_path, run_cli, write_json
from stages.config import load_params
from stages.dataset import Split, load_split
from stages.engine import predict, setup_runtime
from stages.gradients import gradient_report
from stages.history import best_valid_accuracy, read_history
from stages.model import count_parameters, load_checkpoint
from stages.runtime import result_environment
from stages.timings import record_evaluation

EVAL_BATCH_SIZE = 500


def classification_metrics(y: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]) -> dict[str, Any]:
    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(class_names)))
    binary = len(class_names) == 2
    average = "binary" if binary else "macro"
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y, predicted, labels=None if binary else labels, average=average, zero_division=0)
    try:
        roc_auc = skm.roc_auc_score(y, probabilities[:, 1]) if binary else skm.roc_auc_score(y, probabilities, multi_class="ovr", labels=labels)
    except ValueError:  # a test set with a single class has no ROC curve
        roc_auc = None
    matrix = skm.confusion_matrix(y, predicted, labels=labels)
    totals = matrix.sum(axis=1)
    return {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": None if roc_auc is None else float(roc_auc),
        "per_class_accuracy": {name: float(matrix[i, i] / totals[i]) if totals[i] else None for i, name in enumerate(class_names)},
        # confusion[actual][predicted]
        "confusion": {actual: {pred: int(matrix[i, j]) for j, pred in enumerate(class_names)} for i, actual in enumerate(class_names)},
    }


PROBABILITY_DIGITS = 6


def write_predictions(path: Path, y: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]) -> None:
    """One row per test example: actual and predicted class, then each class's probability.

    `dvc plots` draws the confusion matrix from the actual/predicted columns; `stages.review`
    compares two revisions example by example from the same file.
    """
    predicted = probabilities.argmax(axis=1)
    header = ",".join(["actual", "predicted", *(f"p_{name}" for name in class_names)])
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(header + "\n")
        for actual, guess, row in zip(y.tolist(), predicted.tolist(), probabilities.tolist()):
            values = ",".join(f"{value:.{PROBABILITY_DIGITS}f}" for value in row)
            handle.write(f"{class_names[actual]},{class_names[guess]},{values}\n")


def evaluate(
    model_path: Path, history_path: Path, data_dir: Path, device_name: str, gradients_path: Path | None = None,
) -> tuple[dict[str, Any], Split, np.ndarray, float]:
    """Metrics (only numbers that reproduce), the test split, its probabilities and the eval tokens/s."""
    device = setup_runtime(0, device_name)
    model, checkpoint = load_checkpoint(model_path)
    model.to(device)
    history = read_history(history_path)
    test = load_split(data_dir, "test")
    if test.x.shape[1] != model.spec.sequence_length or int(test.x.max()) >= model.spec.input_size:
        raise StageError(f"{data_dir}/test does not match the data {model_path} was trained on; rerun `dvc repro`.")
    started = time.perf_counter()
    probabilities, loss = predict(model, test, EVAL_BATCH_SIZE, device, description="test")
    eval_seconds = time.perf_counter() - started
    y, probabilities = test.y.numpy(), probabilities.double().numpy()
    scores = classification_metrics(y, probabilities, model.spec.class_names)
    train_config = checkpoint["train"]
    metrics = {
        "variant": checkpoint["variant"],
        "study": checkpoint["study"],
        **{key: scores[key] for key in ("accuracy", "precision", "recall", "f1", "roc_auc")},
        "loss": loss,
        "per_class_accuracy": scores["per_class_accuracy"],
        "confusion": scores["confusion"],
        "parameters": count_parameters(model),
        "epochs_trained": len(history),
        "best_epoch": checkpoint["best_epoch"],
        "best_valid_accuracy": best_valid_accuracy(history),
        "diverged": bool(checkpoint["diverged"]),
        "seed": train_config["seed"],
        "cell": model.config.cell,
        # Where the weights were trained, as far as it decides their bits (checkpoints from before
        # the environment was recorded: the evaluating process's).
        "environment": checkpoint.get("environment") or result_environment(device),
    }
    # Gradient flow through time (issue 5): scalars here, the per-step profile as a plots file.
    metrics["gradient"], gradient_rows = gradient_report(model, train_config["seed"], load_split(data_dir, "valid"))
    if gradients_path is not None:
        write_json(gradients_path, gradient_rows)
    return metrics, test, probabilities, len(test) * test.sequence_length / eval_seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True, help="the train stage's DVCLive directory")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True, help="per-example CSV: actual, predicted, p_<class>")
    parser.add_argument("--timings", type=Path, help="machine-dependent timings JSON to update (not a DVC output)")
    parser.add_argument("--gradients", type=Path, help="plots JSON: log10 ||dL/dx_t|| by steps back")
    args = parser.parse_args(argv)
    _study, variant = load_params().find_variant(args.variant)
    # Refuse a checkpoint trained under other model params (stale or copied in) before any work.
    load_checkpoint(args.model, expected=variant.model)
    metrics, test, probabilities, eval_tokens_per_second = evaluate(
        args.model, args.history, args.data, variant.train.device, args.gradients,
    )
    write_predictions(args.predictions, test.y.numpy(), probabilities, tuple(metrics["confusion"]))
    write_json(args.metrics, metrics)
    if args.timings is not None:
        record_evaluation(args.timings, variant.name, eval_tokens_per_second)
    print(json.dumps({key: metrics[key] for key in ("variant", "accuracy", "f1", "roc_auc", "loss", "diverged")}))


if __name__ == "__main__":
    run_cli(main)
