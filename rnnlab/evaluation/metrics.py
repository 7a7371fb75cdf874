"""Classification metrics with the same keys for every model, and the per-example predictions file.
Precision, recall and F1: the positive class's with two classes, else macro; ROC-AUC: one-vs-rest macro beyond two."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as skm

from rnnlab.core.files import atomic_path, check_writable

# What `dvc metrics show` and `dvc exp show` list per variant: what a reviewer compares.
DECLARED_METRICS = ("accuracy", "f1", "roc_auc", "loss", "best_epoch")


@dataclass(frozen=True)
class EvaluationOutputs:
    metrics: Path  # the declared metrics (DECLARED_METRICS)
    details: Path  # every key the stage computed, the declared ones included
    predictions: Path  # per-example CSV: actual, predicted, p_<class>
    gradients: Path | None = None  # plots JSON: log10 ||dL/dx_t|| by steps back
    timings: Path | None = None  # machine-dependent tokens/s (not a DVC output)

    @property
    def files(self) -> list[Path]:
        """The DVC outputs: written all together, or none of them."""
        return [path for path in (self.metrics, self.details, self.predictions, self.gradients) if path is not None]

    def check_writable(self) -> None:
        for path in filter(None, (*self.files, self.timings)):
            check_writable(path)


def classification_metrics(y: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...], loss: float) -> dict[str, Any]:
    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(class_names)))
    binary = len(class_names) == 2
    # sklearn ignores `labels` for a binary average, and `multi_class` for one column of scores.
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y, predicted, labels=labels, average="binary" if binary else "macro", zero_division=0
    )
    try:
        roc_auc = float(skm.roc_auc_score(y, probabilities[:, 1] if binary else probabilities, multi_class="ovr", labels=labels))
    except ValueError:  # a test set with a single class has no ROC curve
        roc_auc = None
    matrix = skm.confusion_matrix(y, predicted, labels=labels)
    totals = matrix.sum(axis=1)
    per_class = {name: float(matrix[i, i] / totals[i]) if totals[i] else None for i, name in enumerate(class_names)}
    # confusion[actual][predicted]
    confusion = {actual: {pred: int(matrix[i, j]) for j, pred in enumerate(class_names)} for i, actual in enumerate(class_names)}
    return {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": roc_auc,
        "loss": loss,
        "per_class_accuracy": per_class,
        "confusion": confusion,
    }


def write_predictions(path: Path, y: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]) -> None:
    """Actual and predicted class, then each class's probability (6 decimals): `dvc plots` draws the confusion
    matrix from it, `tools.review` compares two revisions example by example."""
    header = ",".join(["actual", "predicted", *(f"p_{name}" for name in class_names)])
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(header + "\n")
        for actual, guess, row in zip(y.tolist(), probabilities.argmax(axis=1).tolist(), probabilities.tolist(), strict=True):
            values = ",".join(f"{value:.6f}" for value in row)
            handle.write(f"{class_names[actual]},{class_names[guess]},{values}\n")
