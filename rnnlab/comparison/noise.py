"""Is an accuracy change beyond what retraining with another seed does? The review's calibrated rule.

Under pure reseeding, head - base on the shared test set is the difference of two independent runs: mean 0,
variance 2 sigma^2, sigma the seed-to-seed std of test accuracy on this test set (test sampling is already inside
it; its variance is added only when the two test sets differ). With sigma estimated by a band's std s over k seeds,
d / (s sqrt 2) ~ Student t(k - 1): a reseed alone stays within +-t(k-1, 0.975) s sqrt 2, and the p-values of one
review are adjusted together (Holm), keeping the chance of any false "changed" at ALPHA. The calibration tests
check both by simulation.
"""

from __future__ import annotations

import numpy as np
from scipy import special  # not scipy.stats: its import alone costs about a second

ALPHA = 0.05  # family-wise: the chance that a review of pure reseeds says "changed" for any variant
Values = np.ndarray | float  # one value, or many reviews at once (the calibration tests)


def reseed_scale(std: Values, extra_variance: Values) -> np.ndarray:
    """The standard deviation of head - base under reseeding: sqrt(2 s^2 + extra)."""
    return np.sqrt(2.0 * np.square(std) + extra_variance)


def reseed_halfwidth(std: Values, df: Values, extra_variance: Values = 0.0) -> np.ndarray:
    """Half-width of the 95 % interval a reseed alone stays inside: t(df, 0.975) * scale."""
    return special.stdtrit(df, 0.975) * reseed_scale(std, extra_variance)


def reseed_p_value(difference: Values, std: Values, df: Values, extra_variance: Values = 0.0) -> np.ndarray:
    """Two-sided p-value of `difference` under "a reseed of the same config" (Student t, `df` = seeds - 1).
    A band with no spread (every seed gives the same accuracy) makes any change real (p = 0), no change p = 1."""
    difference, scale = np.asarray(difference, dtype=float), reseed_scale(std, extra_variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2.0 * special.stdtr(df, -np.abs(difference) / scale)
    return np.where(scale > 0, p, np.where(difference == 0, 1.0, 0.0))


def holm(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values along the last axis (reject where adjusted <= ALPHA); NaN marks "not tested".
    Sorted ascending, the i-th smallest of m is multiplied by (m - i + 1), then made non-decreasing: this controls
    the family-wise error rate under any dependence between the tests."""
    p = np.asarray(p_values, dtype=float)
    tested = ~np.isnan(p)
    order = np.argsort(np.where(tested, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    multipliers = tested.sum(axis=-1, keepdims=True) - np.arange(p.shape[-1])  # m, m-1, ...; the untested sort last
    running_max = np.fmax.accumulate(ranked * multipliers, axis=-1)  # fmax skips NaN, so put it back after
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, np.where(np.isnan(ranked), np.nan, np.minimum(1.0, running_max)), axis=-1)
    return adjusted
