"""Per variant: is the change real? One verdict from the trust checks, the predictions and the seed band.

In this order:
1. *not rerun*: either side's results are not what its own params and code give (dvc.lock, trust.py);
2. *no change*: the same predicted class for every test example and the same metrics (to
   METRICS_TOLERANCE: float summation order moves the last digits of a loss);
3. with a seed band: *changed beyond seed noise* when the Holm-adjusted reseed p-value is at most
   ALPHA, else *within seed noise* (noise.py: the interval a reseed alone stays in, t(k-1) s sqrt 2);
4. without one: the same with McNemar's p (test sampling only), said as such; when the two sides'
   environments differ, a different environment alone changes results like a reseed, which only a
   seed band can judge: *not judged*.
The p-values of every variant judged in 3 and 4 are adjusted together (Holm): one review is one family.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rnnlab.comparison.metric_intervals import MetricChange, metric_changes
from rnnlab.comparison.noise import ALPHA, holm, reseed_halfwidth, reseed_p_value
from rnnlab.comparison.paired import Comparison, compare
from rnnlab.comparison.revision import Predictions
from rnnlab.core.errors import UserError

NOT_RERUN = "not rerun"
NO_CHANGE = "no change"
WITHIN_SEED_NOISE = "within seed noise"
CHANGED = "changed beyond seed noise"
WITHIN_TEST_SAMPLING = "within test-sampling noise (no seed band)"
CHANGED_WITHOUT_BAND = "changed beyond test-sampling noise (no seed band)"
NOT_JUDGED = "not judged (environment differs, no seed band)"
MOVED = (CHANGED, CHANGED_WITHOUT_BAND)  # what the summary line names
# Whose training curves the review draws: what moved, and what no band could judge. A change within noise gets
# none (its curves differ by noise too); `dvc plots diff` draws every variant's from dvc.yaml's plots.
CURVE_VERDICTS = (*MOVED, NOT_JUDGED)

QUALITY_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "loss")
# Absolute, on each of QUALITY_KEYS: the report shows them to 4 decimals, and a different summation order
# or math library moves a loss or ROC-AUC in digits far below that while every prediction stays the same.
METRICS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SeedBand:
    """A variant's spread of test accuracy over seeds (reports/seed_bands.json)."""

    std: float  # sample standard deviation (n - 1) of the runs' test accuracies
    runs: int   # how many seeds it is over

    @property
    def df(self) -> int:
        """Degrees of freedom of `std`: what the review's t-interval uses (t(9) for 10 seeds, t(2) for 3)."""
        return self.runs - 1


def seed_band(entry: Any, variant: str, where: str) -> SeedBand | None:
    """A band from its file entry (None without one), from its `accuracies`: the std and the degrees of freedom
    both follow from them, whatever else the entry says."""
    if entry is None:
        return None
    accuracies = entry.get("accuracies") if isinstance(entry, dict) else None
    if (not isinstance(accuracies, list) or len(accuracies) < 2
            or not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in accuracies)):
        raise UserError(f"{where}: the band of {variant} needs the `accuracies` of two or more seeds; "
                         "refresh it with `python -m tools.seed_bands`.")
    return SeedBand(statistics.stdev(accuracies), len(accuracies))


@dataclass(frozen=True)
class Row:
    """One variant present in both revisions: what its verdict rests on, then the verdict (`judge`)."""

    variant: str
    study: str
    base: dict[str, Any]
    head: dict[str, Any]
    identical: bool                   # same predicted class everywhere, same metrics (to METRICS_TOLERANCE)
    not_rerun: str | None             # why one side's results are not its own params' and code's
    environment_difference: str | None  # the stamp keys that differ; None when the stamps are equal
    comparison: Comparison            # test sampling only
    band: SeedBand | None
    reseed_halfwidth: float | None    # 95 % half-width of a reseed's change (t(k-1) s sqrt 2)
    metric_changes: dict[str, MetricChange]
    adjusted_p: float | None = None   # Holm over the review's tested variants
    verdict: str = ""

    @property
    def unchanged(self) -> bool:
        return self.verdict == NO_CHANGE

    @property
    def combined_interval(self) -> tuple[float, float] | None:
        """The change's 95 % interval with test sampling and seed noise together: difference +- the reseed half-width."""
        if self.reseed_halfwidth is None:
            return None
        return self.comparison.difference - self.reseed_halfwidth, self.comparison.difference + self.reseed_halfwidth

    @property
    def tested(self) -> bool:
        return self.not_rerun is None and not self.identical and (self.band is not None or self.environment_difference is None)

    @property
    def p_value(self) -> float | None:
        """The family's p-value of this variant: reseed when banded, test sampling otherwise; None when not tested."""
        if not self.tested:
            return None
        if self.band is None:
            return self.comparison.p_value
        extra = 0.0 if self.comparison.paired else self.comparison.unpaired_variance
        return float(reseed_p_value(self.comparison.difference, self.band.std, self.band.df, extra))


def environment_difference(base: dict[str, Any], head: dict[str, Any]) -> str | None:
    """Two results share an environment when their stamps are equal (every key); else which keys differ."""
    base_stamp, head_stamp = base.get("environment"), head.get("environment")
    if base_stamp == head_stamp:
        return None
    if not isinstance(base_stamp, dict) or not isinstance(head_stamp, dict):
        return f"not recorded at the {'base' if not isinstance(base_stamp, dict) else 'head'}"
    return ", ".join(sorted(key for key in set(base_stamp) | set(head_stamp) if base_stamp.get(key) != head_stamp.get(key)))


def same_metrics(base: dict[str, Any], head: dict[str, Any], tolerance: float = METRICS_TOLERANCE) -> bool:
    for key in QUALITY_KEYS:
        old, new = base.get(key), head.get(key)
        if isinstance(old, (int, float)) and isinstance(new, (int, float)):
            if abs(old - new) > tolerance:
                return False
        elif old != new:
            return False
    return True


def gather(variant: str, base_metrics: dict[str, Any], head_metrics: dict[str, Any], base: Predictions, head: Predictions,
           band: SeedBand | None, not_rerun: str | None) -> Row:
    identical = base.same_outcomes(head) and same_metrics(base_metrics, head_metrics)
    # Same test examples in the same order (same labels): paired; otherwise the data changed under it.
    paired = np.array_equal(base.actual, head.actual)
    comparison = compare(base.correct, head.correct, paired=paired)
    halfwidth = None
    if band is not None:
        halfwidth = float(reseed_halfwidth(band.std, band.df, 0.0 if paired else comparison.unpaired_variance))
    return Row(variant, head_metrics.get("study", "imdb"), base_metrics, head_metrics, identical, not_rerun,
                    environment_difference(base_metrics, head_metrics), comparison, band, halfwidth,
                    metric_changes(base, head, base_metrics, head_metrics, paired, identical))


def verdict(row: Row, adjusted_p: float | None) -> str:
    if row.not_rerun is not None:
        return NOT_RERUN
    if row.identical:
        return NO_CHANGE
    if row.band is not None:
        return CHANGED if adjusted_p <= ALPHA else WITHIN_SEED_NOISE
    if row.environment_difference is not None:
        return NOT_JUDGED
    return CHANGED_WITHOUT_BAND if adjusted_p <= ALPHA else WITHIN_TEST_SAMPLING


def judge(rows: list[Row]) -> list[Row]:
    """The verdicts of one review: the tested variants' p-values adjusted together (Holm)."""
    p_values = [np.nan if row.p_value is None else row.p_value for row in rows]
    adjusted = holm(p_values).tolist() if rows else []
    judged = []
    for row, value in zip(rows, adjusted):
        adjusted_p = None if np.isnan(value) else float(value)
        judged.append(replace(row, adjusted_p=adjusted_p, verdict=verdict(row, adjusted_p)))
    return judged
