"""Per variant, one verdict, in this order: *not rerun* (a side's results are not its own params' and code's);
*no change* (the same predicted class for every test example, the same metrics); with a seed band, changed or
within seed noise by the Holm-adjusted reseed p-value; without one, the same by McNemar's p, or *not judged* when
the environments differ (that alone changes results like a reseed).

The seed-noise rule: under pure reseeding, head - base is the difference of two independent runs, variance
2 sigma^2 (sigma: the seed-to-seed std of test accuracy, test sampling inside it). With sigma estimated by a band's
std s over k seeds, d / (s sqrt 2) ~ Student t(k - 1); one review's p-values are adjusted together (Holm), keeping
the chance of any false "changed" at ALPHA. The calibration tests check both by simulation."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import special  # not scipy.stats: its import alone costs about a second

from rnnlab.comparison.paired import Comparison, MetricChange, compare, metric_changes
from rnnlab.comparison.revision import Predictions
from rnnlab.core.errors import UserError

NOT_RERUN = "not rerun"
NO_CHANGE = "no change"
WITHIN_SEED_NOISE = "within seed noise"
CHANGED = "changed beyond seed noise"
WITHIN_TEST_SAMPLING = "within test-sampling noise (no seed band)"
CHANGED_WITHOUT_BAND = "changed beyond test-sampling noise (no seed band)"
NOT_JUDGED = "not judged (environment differs, no seed band)"
ORDER = (CHANGED, CHANGED_WITHOUT_BAND, NOT_RERUN, NOT_JUDGED, WITHIN_SEED_NOISE, WITHIN_TEST_SAMPLING, NO_CHANGE)
MOVED = (CHANGED, CHANGED_WITHOUT_BAND)
CURVE_VERDICTS = (*MOVED, NOT_JUDGED)  # whose curves are drawn: a change within noise has curves that differ by noise
QUALITY_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "loss")
METRICS_TOLERANCE = 1e-4  # the report shows 4 decimals; summation order moves a loss's last digits, not these
ALPHA = 0.05  # family-wise: the chance that a review of pure reseeds says "changed" for any variant
Values = np.ndarray | float  # one value, or many reviews at once (the calibration tests)


def reseed_scale(std: Values, extra_variance: Values) -> np.ndarray:  # the std of head - base under reseeding
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


@dataclass(frozen=True)
class SeedBand:
    """A variant's sample std (n - 1) of test accuracy over `runs` seeds (reports/seed_bands.json)."""

    std: float
    runs: int


def seed_band(entry: Any, variant: str, where: str) -> SeedBand | None:
    """A band from its file entry's `accuracies` (None without an entry)."""
    if entry is None:
        return None
    accuracies = entry.get("accuracies") if isinstance(entry, dict) else None
    if not isinstance(accuracies, list) or len(accuracies) < 2 or any(type(x) not in (int, float) for x in accuracies):
        message = "needs the `accuracies` of two or more seeds; refresh it with `python -m tools.seed_bands`."
        raise UserError(f"{where}: the band of {variant} {message}")
    return SeedBand(statistics.stdev(accuracies), len(accuracies))


@dataclass(frozen=True)
class Row:
    """One variant present in both revisions: what its verdict rests on, then the verdict (`judge`)."""

    variant: str
    base: dict[str, Any]
    head: dict[str, Any]
    identical: bool  # same predicted class everywhere, same metrics (to METRICS_TOLERANCE)
    not_rerun: str | None  # why one side's results are not its own params' and code's
    environment_difference: str | None  # the stamp keys that differ; None when the stamps are equal
    comparison: Comparison  # test sampling only
    band: SeedBand | None
    reseed_halfwidth: float | None  # 95 % half-width of a reseed's change (t(k-1) s sqrt 2)
    metric_changes: dict[str, MetricChange]
    adjusted_p: float | None = None  # Holm over the review's tested variants
    verdict: str = ""

    @property
    def combined_interval(self) -> tuple[float, float] | None:
        """The change's 95 % interval with test sampling and seed noise together."""
        difference, half = self.comparison.difference, self.reseed_halfwidth
        return None if half is None else (difference - half, difference + half)

    @property
    def p_value(self) -> float | None:
        """Reseed p when banded, test sampling's otherwise; None when not tested."""
        if self.not_rerun is not None or self.identical or (self.band is None and self.environment_difference is not None):
            return None
        if self.band is None:
            return self.comparison.p_value
        extra = 0.0 if self.comparison.paired else self.comparison.unpaired_variance
        return float(reseed_p_value(self.comparison.difference, self.band.std, self.band.runs - 1, extra))


def environment_difference(base: dict[str, Any], head: dict[str, Any]) -> str | None:
    """None when the environment stamps are equal (every key); else which keys differ."""
    old, new = base.get("environment"), head.get("environment")
    if old == new:
        return None
    if not isinstance(old, dict) or not isinstance(new, dict):
        return f"not recorded at the {'base' if not isinstance(old, dict) else 'head'}"
    return ", ".join(sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key)))


def same_metrics(base: dict[str, Any], head: dict[str, Any]) -> bool:
    def same(old: Any, new: Any) -> bool:
        numbers = isinstance(old, (int, float)) and isinstance(new, (int, float))
        return abs(old - new) <= METRICS_TOLERANCE if numbers else old == new

    return all(same(base.get(key), head.get(key)) for key in QUALITY_KEYS)


def gather(
    variant: str, old: dict, new: dict, base: Predictions, head: Predictions, band: SeedBand | None, not_rerun: str | None
) -> Row:
    """A variant's row from its metrics (`old`, `new`) and its predictions at each side."""
    paired = np.array_equal(base.actual, head.actual)  # the same test examples in the same order, else the data changed
    identical = paired and np.array_equal(base.predicted, head.predicted) and same_metrics(old, new)
    comparison = compare(base.correct, head.correct, paired=paired)
    extra = 0.0 if paired else comparison.unpaired_variance
    halfwidth = None if band is None else float(reseed_halfwidth(band.std, band.runs - 1, extra))
    changes, environment = metric_changes(base, head, old, new, paired), environment_difference(old, new)
    return Row(variant, old, new, identical, not_rerun, environment, comparison, band, halfwidth, changes)


def verdict(row: Row, adjusted_p: float | None) -> str:
    changed = adjusted_p is not None and adjusted_p <= ALPHA
    if row.not_rerun is not None or row.identical:
        return NOT_RERUN if row.not_rerun is not None else NO_CHANGE
    if row.band is not None:
        return CHANGED if changed else WITHIN_SEED_NOISE
    if row.environment_difference is not None:
        return NOT_JUDGED
    return CHANGED_WITHOUT_BAND if changed else WITHIN_TEST_SAMPLING


def judge(rows: list[Row]) -> list[Row]:
    """The verdicts of one review: the tested variants' p-values adjusted together (Holm)."""
    adjusted = holm([np.nan if row.p_value is None else row.p_value for row in rows]).tolist() if rows else []
    adjusted_p = [None if np.isnan(value) else float(value) for value in adjusted]
    return [replace(row, adjusted_p=value, verdict=verdict(row, value)) for row, value in zip(rows, adjusted_p, strict=True)]
