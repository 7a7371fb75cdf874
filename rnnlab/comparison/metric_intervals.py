"""95 % test-sampling intervals for the change in F1, ROC-AUC and loss, by the delta method: each metric's
sampling error is, to first order, the mean of one influence per example (the per-example loss; for F1 a
ratio of counts; for ROC-AUC DeLong's placement values), head's minus base's when paired. The normal limit
of a paired bootstrap (tests/unit/comparison/test_statistics.py checks it against one); F1 and ROC-AUC of
the positive (second) class for two classes, macro averages otherwise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.comparison.paired import Z
from rnnlab.comparison.revision import Predictions

METRICS = ("f1", "roc_auc", "loss")
PROBABILITY_FLOOR = 5e-7  # the CSV rounds to 6 decimals: a 0.000000 probability was below this
Influence = tuple[float, np.ndarray]


@dataclass(frozen=True)
class MetricChange:
    """One metric, base and head, and the 95 % interval of head - base (None: unavailable, with why)."""

    name: str
    base: float | None
    head: float | None
    low: float | None = None
    high: float | None = None
    unavailable: str | None = None

    @property
    def difference(self) -> float | None:
        return None if self.base is None or self.head is None else self.head - self.base


def scored_classes(count: int) -> list[int]:
    return [1] if count == 2 else list(range(count))


def f1_influence(predictions: Predictions) -> Influence:
    actual, predicted = predictions.codes
    values, influences = [], []
    for k in scored_classes(len(predictions.classes)):
        # F1 = 2 TP / (2 TP + FP + FN) = mean(x) / mean(y): a ratio of means, influence (x - F1 y) / mean(y).
        x = 2.0 * ((actual == k) & (predicted == k))
        y = x + ((actual != k) & (predicted == k)) + ((actual == k) & (predicted != k))
        value = x.sum() / y.sum() if y.sum() else 0.0  # a class never present nor predicted: scikit-learn's zero_division=0
        values.append(value)
        influences.append((x - value * y) / y.mean() if y.sum() else np.zeros(len(actual)))
    return float(np.mean(values)), np.mean(influences, axis=0)


def auc_influence(scores: np.ndarray, positive: np.ndarray) -> Influence | None:
    """Binary ROC-AUC and DeLong's placement values; None with one class only."""
    positives, negatives = np.sort(scores[positive]), np.sort(scores[~positive])
    if not len(positives) or not len(negatives):
        return None

    def share_below(reference: np.ndarray) -> np.ndarray:  # ties count half
        return (np.searchsorted(reference, scores, "left") + np.searchsorted(reference, scores, "right")) / (2.0 * len(reference))

    below, above = share_below(negatives), 1.0 - share_below(positives)
    auc, share = float(below[positive].mean()), positive.mean()
    return auc, np.where(positive, (below - auc) / share, (above - auc) / (1.0 - share))


def roc_auc_influence(predictions: Predictions) -> Influence | None:
    actual, _ = predictions.codes
    assert predictions.probabilities is not None
    results = [auc_influence(predictions.probabilities[:, k], actual == k) for k in scored_classes(len(predictions.classes))]
    if any(result is None for result in results):
        return None
    return float(np.mean([auc for auc, _ in results])), np.mean([influence for _, influence in results], axis=0)  # type: ignore[misc]


def loss_influence(predictions: Predictions) -> Influence:
    actual, _ = predictions.codes
    assert predictions.probabilities is not None
    losses = -np.log(np.maximum(predictions.probabilities[np.arange(len(actual)), actual], PROBABILITY_FLOOR))
    return float(losses.mean()), losses - losses.mean()


INFLUENCES: dict[str, Callable[[Predictions], Influence | None]] = {"f1": f1_influence, "roc_auc": roc_auc_influence, "loss": loss_influence}


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metric_change(name: str, base: Predictions, head: Predictions, base_value: Any, head_value: Any, paired: bool) -> MetricChange:
    """head - base of one metric with its 95 % interval, centred on the metrics files' values."""
    base_number, head_number = number(base_value), number(head_value)
    if name != "f1" and (base.probabilities is None or head.probabilities is None):
        side = "base" if base.probabilities is None else "head"
        return MetricChange(name, base_number, head_number, unavailable=f"no per-example probabilities at the {side}")
    if len(base.classes) != len(head.classes):
        return MetricChange(name, base_number, head_number, unavailable="the class lists differ")
    base_result, head_result = INFLUENCES[name](base), INFLUENCES[name](head)
    if base_result is None or head_result is None:
        return MetricChange(name, base_number, head_number, unavailable="a single class in the test set")
    (base_estimate, base_influence), (head_estimate, head_influence) = base_result, head_result
    base_number = base_estimate if base_number is None else base_number
    head_number = head_estimate if head_number is None else head_number
    if paired:
        spread = np.sqrt(np.sum(np.square(head_influence - base_influence))) / len(base_influence)
    else:
        spread = np.sqrt(np.sum(np.square(head_influence)) / len(head_influence) ** 2 + np.sum(np.square(base_influence)) / len(base_influence) ** 2)
    difference = head_number - base_number
    return MetricChange(name, base_number, head_number, difference - Z * float(spread), difference + Z * float(spread))


def metric_changes(base: Predictions, head: Predictions, base_metrics: dict[str, Any], head_metrics: dict[str, Any],
                   paired: bool, identical: bool = False) -> dict[str, MetricChange]:
    """Each metric's change with its interval (none needed when predictions and metrics are identical)."""
    if identical:
        return {name: MetricChange(name, number(base_metrics.get(name)), number(head_metrics.get(name))) for name in METRICS}
    return {name: metric_change(name, base, head, base_metrics.get(name), head_metrics.get(name), paired) for name in METRICS}
