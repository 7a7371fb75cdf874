"""Is an accuracy change beyond what retraining with another seed does? The review's calibrated rule.

Under pure reseeding (head = base's config, trained with another seed), the change in test accuracy
on the shared test set is the difference of two independent runs: mean 0, variance 2 sigma^2, with
sigma the seed-to-seed standard deviation of test accuracy *on this test set*. Test sampling is
already inside sigma: every seed's accuracy is measured on the same 25,000 reviews, with that
model's own errors on them, so the seed-to-seed spread holds the per-model part of test-sampling
noise, and the part both models share (how hard this test set is) cancels in the difference. Adding
the paired test-sampling variance on top would count it twice; it is added only when the two
revisions' test sets differ (then nothing cancels).

sigma is estimated by the band's sample std s over k seeds (k - 1 degrees of freedom), so a new
difference d of two runs satisfies d / (s sqrt 2) ~ Student t with k - 1 df: the 95 % interval of
what a reseed alone does is +-t(k-1, 0.975) s sqrt 2, and a change's p-value is the t tail beyond
|d| / (s sqrt 2). A review tests every changed variant at once, so the p-values are adjusted
together (Holm's step-down), keeping the chance of any false "changed" over the whole review at
ALPHA. tests/unit/comparison/test_calibration.py checks both by simulation.

Everything here takes numpy arrays (the simulations run thousands of reviews at once).
"""

from __future__ import annotations

import numpy as np
from scipy import special  # not scipy.stats: its import alone costs about a second

ALPHA = 0.05       # family-wise: the chance that a review of pure reseeds says "changed" for any variant
CONFIDENCE = 0.95  # each variant's own interval


def reseed_scale(std: np.ndarray | float, extra_variance: np.ndarray | float = 0.0) -> np.ndarray:
    """The standard deviation of head - base under reseeding: sqrt(2 s^2 + extra)."""
    return np.sqrt(2.0 * np.square(std) + extra_variance)


def reseed_halfwidth(std: np.ndarray | float, df: np.ndarray | float, extra_variance: np.ndarray | float = 0.0,
                     confidence: float = CONFIDENCE) -> np.ndarray:
    """Half-width of the interval a reseed alone stays inside with probability `confidence`: t(df) * scale."""
    return special.stdtrit(df, 1.0 - (1.0 - confidence) / 2.0) * reseed_scale(std, extra_variance)


def reseed_p_value(difference: np.ndarray | float, std: np.ndarray | float, df: np.ndarray | float,
                   extra_variance: np.ndarray | float = 0.0) -> np.ndarray:
    """Two-sided p-value of `difference` under "a reseed of the same config" (Student t, `df` = seeds - 1).

    A band with no spread (a deterministic variant: every seed gives the same accuracy) makes any
    change real (p = 0) and no change p = 1.
    """
    difference, scale = np.asarray(difference, dtype=float), reseed_scale(std, extra_variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(difference) / scale
        p = 2.0 * special.stdtr(df, -t)
    return np.where(scale > 0, p, np.where(difference == 0, 1.0, 0.0))


def holm(p_values: np.ndarray | list[float], axis: int = -1) -> np.ndarray:
    """Holm's step-down adjusted p-values along `axis` (reject where adjusted <= ALPHA); NaN marks "not tested".

    Sorted ascending, the i-th smallest of m is multiplied by (m - i + 1), then made non-decreasing:
    controls the family-wise error rate under any dependence between the tests.
    """
    p = np.moveaxis(np.asarray(p_values, dtype=float), axis, -1)
    tested = ~np.isnan(p)
    m = tested.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(tested, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    multipliers = m - np.arange(p.shape[-1])  # m, m-1, ... for the tested; untested sort last (NaN stays NaN)
    running_max = np.fmax.accumulate(ranked * multipliers, axis=-1)  # fmax skips NaN, so put it back after
    adjusted_sorted = np.where(np.isnan(ranked), np.nan, np.minimum(1.0, running_max))
    adjusted = np.empty_like(adjusted_sorted)
    np.put_along_axis(adjusted, order, adjusted_sorted, axis=-1)
    return np.moveaxis(adjusted, -1, axis)
