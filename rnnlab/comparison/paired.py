"""How far a difference in test accuracy between two models can come from test sampling alone.

Both models predict the same test examples, so only the discordant ones (one model right, the other
wrong) say which is better: the 95 % interval of head - base is Newcombe's hybrid score interval for
paired proportions (Statistics in Medicine 17:2635, method 10), the p-value McNemar's exact test.
Different test sets (a data change) are not paired: Newcombe's interval for independent proportions
and a two-proportion z-test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

Z = float(special.ndtri(0.975))  # 95 % intervals


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
    unpaired_variance: float  # binomial variance of the difference of two independent accuracies


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


def paired_interval(both_correct: int, head_only: int, base_only: int, both_wrong: int) -> tuple[float, float]:
    """95 % interval of head - base accuracy from the 2x2 table of paired outcomes."""
    if head_only == base_only == 0:
        return 0.0, 0.0  # the same outcome on every example: nothing varies under resampling
    n = both_correct + head_only + base_only + both_wrong
    margins = (both_correct + head_only) * (base_only + both_wrong) * (both_correct + base_only) * (head_only + both_wrong)
    phi = (both_correct * both_wrong - head_only * base_only) / math.sqrt(margins) if margins else 0.0
    return newcombe_interval(both_correct + head_only, n, both_correct + base_only, n, phi)


def mcnemar_exact(base_only_correct: int, head_only_correct: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    discordant = base_only_correct + head_only_correct
    if discordant == 0:
        return 1.0
    return float(min(1.0, 2.0 * special.bdtr(min(base_only_correct, head_only_correct), discordant, 0.5)))


def two_proportion_p(head_correct: int, head_n: int, base_correct: int, base_n: int) -> float:
    pooled = (head_correct + base_correct) / (head_n + base_n)
    scale = math.sqrt(pooled * (1 - pooled) * (1 / head_n + 1 / base_n))
    difference = head_correct / head_n - base_correct / base_n
    if scale == 0:
        return 1.0 if difference == 0 else 0.0
    return float(2.0 * special.ndtr(-abs(difference) / scale))


def compare(base_correct: np.ndarray, head_correct: np.ndarray, paired: bool = True) -> Comparison:
    """Head minus base accuracy with its 95 % test-sampling interval and p-value."""
    base, head = np.asarray(base_correct, dtype=bool), np.asarray(head_correct, dtype=bool)
    if not len(base) or not len(head):
        raise ValueError("a comparison needs test examples on both sides")
    base_hits, head_hits = int(base.sum()), int(head.sum())
    base_p, head_p = base_hits / len(base), head_hits / len(head)
    variance = base_p * (1 - base_p) / len(base) + head_p * (1 - head_p) / len(head)
    if not paired:
        low, high = newcombe_interval(head_hits, len(head), base_hits, len(base), phi=0.0)
        p_value = two_proportion_p(head_hits, len(head), base_hits, len(base))
        return Comparison(head_p - base_p, low, high, False, 0, 0, p_value, variance)
    if base.shape != head.shape:
        raise ValueError("a paired comparison needs the same test examples on both sides")
    both = int(np.sum(base & head))
    base_only, head_only = base_hits - both, head_hits - both
    low, high = paired_interval(both, head_only, base_only, len(base) - both - base_only - head_only)
    return Comparison((head_hits - base_hits) / len(base), low, high, True, base_only, head_only, mcnemar_exact(base_only, head_only), variance)
