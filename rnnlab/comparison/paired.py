"""How far a change between two models can come from test sampling alone.

Accuracy: on the same test examples only the discordant ones say which model is better: Newcombe's hybrid
score interval for paired proportions (Statistics in Medicine 17:2635, method 10) and McNemar's exact test;
different test sets (a data change): Newcombe's interval for independent proportions and a z-test.
F1, ROC-AUC and loss by the delta method: to first order each is the mean of one influence per example
(for ROC-AUC DeLong's placement values), the normal limit of a paired bootstrap. F1 and ROC-AUC are the
second class's for two classes, macro averages otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from rnnlab.comparison.revision import Predictions

Z = float(special.ndtri(0.975))  # 95 % intervals
METRICS = ("f1", "roc_auc", "loss")
PROBABILITY_FLOOR = 5e-7  # the CSV rounds to 6 decimals: a 0.000000 probability was below this
Influence = tuple[float, np.ndarray]
Value = float | None


@dataclass(frozen=True)
class Comparison:
    """Head minus base accuracy on the test set, with its test-sampling uncertainty."""

    difference: float
    low: float
    high: float
    paired: bool  # False when the two revisions' test sets differ
    base_only_correct: int  # McNemar's b: the base right, the head wrong
    head_only_correct: int  # McNemar's c
    p_value: float  # McNemar's exact p when paired, a two-proportion z-test's otherwise


def wilson(successes: float, n: float) -> tuple[float, float]:
    center = (successes + Z * Z / 2) / (n + Z * Z)
    half = Z * math.sqrt(successes * (n - successes) / n + Z * Z / 4) / (n + Z * Z)
    return center - half, center + half


def newcombe_interval(head_correct: int, head_n: int, base_correct: int, base_n: int, phi: float) -> tuple[float, float]:
    """Newcombe's interval of head - base accuracy; phi is the pairs' correlation (0 unpaired)."""
    head_p, base_p = head_correct / head_n, base_correct / base_n
    (head_low, head_high), (base_low, base_high) = wilson(head_correct, head_n), wilson(base_correct, base_n)
    below = (head_p - head_low) ** 2 - 2 * phi * (head_p - head_low) * (base_high - base_p) + (base_high - base_p) ** 2
    above = (head_high - head_p) ** 2 - 2 * phi * (head_high - head_p) * (base_p - base_low) + (base_p - base_low) ** 2
    return head_p - base_p - math.sqrt(max(0.0, below)), head_p - base_p + math.sqrt(max(0.0, above))


def mcnemar_exact(base_only_correct: int, head_only_correct: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    discordant = base_only_correct + head_only_correct
    return float(min(1.0, 2.0 * special.bdtr(min(base_only_correct, head_only_correct), discordant, 0.5))) if discordant else 1.0


def compare(base_correct: np.ndarray, head_correct: np.ndarray, paired: bool = True) -> Comparison:
    base, head = np.asarray(base_correct, dtype=bool), np.asarray(head_correct, dtype=bool)
    base_hits, head_hits = int(base.sum()), int(head.sum())
    base_p, head_p = base_hits / len(base), head_hits / len(head)
    if not paired:  # Newcombe's interval of independent proportions, a two-proportion z-test
        low, high = newcombe_interval(head_hits, len(head), base_hits, len(base), phi=0.0)
        pooled = (head_hits + base_hits) / (len(head) + len(base))
        scale = math.sqrt(pooled * (1 - pooled) * (1 / len(head) + 1 / len(base)))
        p_value = float(2.0 * special.ndtr(-abs(head_p - base_p) / scale)) if scale else float(head_p == base_p)
        return Comparison(head_p - base_p, low, high, False, 0, 0, p_value)
    both = int(np.sum(base & head))
    base_only, head_only, both_wrong = base_hits - both, head_hits - both, len(base) - base_hits - head_hits + both
    # The pairs' correlation phi from the 2x2 table; the same outcome everywhere leaves nothing to resample.
    margins = (both + head_only) * (base_only + both_wrong) * (both + base_only) * (head_only + both_wrong)
    phi = (both * both_wrong - head_only * base_only) / math.sqrt(margins) if margins else 0.0
    low, high = newcombe_interval(head_hits, len(base), base_hits, len(base), phi) if head_only or base_only else (0.0, 0.0)
    p_value = mcnemar_exact(base_only, head_only)
    return Comparison((head_hits - base_hits) / len(base), low, high, True, base_only, head_only, p_value)


@dataclass(frozen=True)
class MetricChange:
    """One metric, base and head, and the 95 % interval of head - base (None: unavailable, with why)."""

    name: str
    base: Value
    head: Value
    low: Value = None
    high: Value = None
    unavailable: str | None = None


def f1_influence(actual: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray, k: int) -> Influence | None:
    # F1 = 2 TP / (2 TP + FP + FN) = mean(x) / mean(y): a ratio of means, influence (x - F1 y) / mean(y).
    x = 2.0 * ((actual == k) & (predicted == k))
    y = x + ((actual != k) & (predicted == k)) + ((actual == k) & (predicted != k))
    if not y.sum():  # a class never present nor predicted: scikit-learn's zero_division=0
        return 0.0, np.zeros(len(actual))
    value = x.sum() / y.sum()
    return value, (x - value * y) / y.mean()


def roc_auc_influence(actual: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray, k: int) -> Influence | None:
    """One-vs-rest ROC-AUC and DeLong's placement values; None when the test set lacks the class or its rest."""
    scores, positive = probabilities[:, k], actual == k
    if positive.all() or not positive.any():
        return None
    # Each example's share of the other side's scores below it (ties count half).
    below, above = (
        (np.searchsorted(reference, scores, "left") + np.searchsorted(reference, scores, "right")) / (2.0 * len(reference))
        for reference in (np.sort(scores[~positive]), np.sort(scores[positive]))
    )
    auc, share = float(below[positive].mean()), positive.mean()
    return auc, np.where(positive, (below - auc) / share, (1.0 - above - auc) / (1.0 - share))


def influence(name: str, predictions: Predictions) -> Influence | None:
    """The metric and its per-example influence: the positive (second) class's of two, else the classes' mean."""
    classes = np.array(predictions.classes)
    actual, predicted = ((names[:, None] == classes).argmax(axis=1) for names in (predictions.actual, predictions.predicted))
    if name == "loss":
        losses = -np.log(np.maximum(predictions.probabilities[np.arange(len(actual)), actual], PROBABILITY_FLOOR))
        return float(losses.mean()), losses - losses.mean()
    of_class = f1_influence if name == "f1" else roc_auc_influence
    scored = [1] if len(classes) == 2 else range(len(classes))
    results = [of_class(actual, predicted, predictions.probabilities, k) for k in scored]
    found = [result for result in results if result is not None]
    if len(found) < len(results):
        return None
    return float(np.mean([value for value, _ in found])), np.mean([influences for _, influences in found], axis=0)


def number(value: Any) -> Value:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metric_change(name: str, base: Predictions, head: Predictions, old: Value, new: Value, paired: bool) -> MetricChange:
    """head - base of one metric with its 95 % interval, centred on the metrics files' values."""
    if len(base.classes) != len(head.classes):
        return MetricChange(name, old, new, unavailable="the class lists differ")
    base_result, head_result = influence(name, base), influence(name, head)
    if base_result is None or head_result is None:
        return MetricChange(name, old, new, unavailable="a single class in the test set")
    (base_value, base_influence), (head_value, head_influence) = base_result, head_result
    old, new = base_value if old is None else old, head_value if new is None else new
    if paired:
        spread = float(np.sqrt(np.sum(np.square(head_influence - base_influence)))) / len(base_influence)
    else:  # the two means' variances add
        spread = float(np.sqrt(sum(np.sum(np.square(each)) / len(each) ** 2 for each in (head_influence, base_influence))))
    return MetricChange(name, old, new, new - old - Z * spread, new - old + Z * spread)


def metric_changes(base: Predictions, head: Predictions, old: dict, new: dict, paired: bool) -> dict[str, MetricChange]:
    return {name: metric_change(name, base, head, number(old.get(name)), number(new.get(name)), paired) for name in METRICS}
