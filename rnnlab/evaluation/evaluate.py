"""Evaluate one trained variant: test metrics, per-example predictions, gradient flow through time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rnnlab.config.params import Variant
from rnnlab.core.errors import UserError
from rnnlab.core.files import outputs_together, write_json
from rnnlab.data.arrays import load_split
from rnnlab.evaluation.gradients import gradient_report
from rnnlab.evaluation.metrics import DECLARED_METRICS, EvaluationOutputs, classification_metrics, write_predictions
from rnnlab.model.classifier import count_parameters, load_checkpoint
from rnnlab.runtime.environment import record_evaluation, result_environment, setup_torch
from rnnlab.training.train import predict

EVAL_BATCH_SIZE = 500
# What the train stage records of its run beside the weights (rnnlab/training/train.py).
RUN_ENTRIES = ("variant", "study", "train", "best_epoch", "diverged", "epochs_trained", "best_valid_accuracy")


def evaluate_variant(variant: Variant, data_dir: Path, model_path: Path, outputs: EvaluationOutputs) -> dict[str, Any]:
    """Write the variant's metrics, details, predictions and gradient profile (all of them, or none); returns the details."""
    outputs.check_writable()  # before the work, not after it
    device = setup_torch(variant.train.device)
    # Refuses a checkpoint trained under other model params (stale or copied in) before any work.
    model, checkpoint = load_checkpoint(model_path, expected=variant.model)
    if missing := [key for key in RUN_ENTRIES if key not in checkpoint]:
        raise UserError(f"{model_path} has no {', '.join(missing)}: an older or foreign checkpoint; retrain it with `dvc repro`.")
    model.to(device)
    test = load_split(data_dir, "test")
    if test.x.shape[1] != model.spec.sequence_length or int(test.x.max()) >= model.spec.input_size:
        raise UserError(f"{data_dir}/test does not match the data {model_path} was trained on; rerun `dvc repro`.")
    started = time.perf_counter()
    test_probabilities, loss = predict(model, test, EVAL_BATCH_SIZE, device, description="test")
    tokens_per_second = len(test) * test.sequence_length / (time.perf_counter() - started)
    probabilities = test_probabilities.double().numpy()
    metrics = {  # only numbers that reproduce
        "variant": checkpoint["variant"],
        "study": checkpoint["study"],
        **classification_metrics(test.y.numpy(), probabilities, model.spec.class_names, loss),
        "parameters": count_parameters(model),
        "epochs_trained": checkpoint["epochs_trained"],
        "best_epoch": checkpoint["best_epoch"],
        "best_valid_accuracy": checkpoint["best_valid_accuracy"],
        "diverged": bool(checkpoint["diverged"]),
        "seed": checkpoint["train"]["seed"],
        "cell": model.config.cell,
        # Where the weights were trained, as far as it decides their bits.
        "environment": checkpoint.get("environment") or result_environment(device),
    }
    # Gradient flow through time: scalars in the metrics, the per-step profile as a plots file.
    metrics["gradient"], gradient_rows = gradient_report(model, checkpoint["train"]["seed"], load_split(data_dir, "valid"))
    with outputs_together(*outputs.files) as staged:
        if outputs.gradients is not None:
            write_json(staged[outputs.gradients], gradient_rows)
        write_predictions(staged[outputs.predictions], test.y.numpy(), probabilities, model.spec.class_names)
        write_json(staged[outputs.details], metrics)
        write_json(staged[outputs.metrics], {key: metrics[key] for key in DECLARED_METRICS})
    if outputs.timings is not None:
        record_evaluation(outputs.timings, variant.name, tokens_per_second)
    print(json.dumps({key: metrics[key] for key in ("variant", "accuracy", "f1", "roc_auc", "loss", "diverged")}))
    return metrics
