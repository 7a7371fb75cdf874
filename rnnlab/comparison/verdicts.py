"""Per variant, one verdict (`verdict` gives their order; docs/review.md, "The verdict", says why).

The seed-noise rule assumes no shape (IMDB's seed spread is skewed): under pure reseeding the head's runs and the
base's band are exchangeable, so the exact permutation p of the head's rank sum (Wilcoxon-Mann-Whitney) is valid
whatever the distribution. n head runs among m band runs reach p = 2 / C(m + n, n) at best: with fewer, the verdict
names the seeds it needs. One review's p-values are adjusted together (Holm): any false "changed" at most ALPHA."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rnnlab.comparison.paired import Comparison, MetricChange, compare, metric_changes
from rnnlab.comparison.revision import Predictions
from rnnlab.core.errors import UserError

NOT_RERUN = "not rerun"
NO_CHANGE = "no change"
WITHIN_SEED_NOISE = "within seed noise"
CHANGED = "changed beyond seed noise"
CANNOT_TELL = "too few seeds to tell"
WITHIN_TEST_SAMPLING = "within test-sampling noise (no seed band)"
CHANGED_WITHOUT_BAND = "changed beyond test-sampling noise (no seed band)"
NOT_JUDGED = "not judged (environment differs, no seed band)"
ORDER = (CHANGED, CHANGED_WITHOUT_BAND, NOT_RERUN, NOT_JUDGED, CANNOT_TELL, WITHIN_SEED_NOISE, WITHIN_TEST_SAMPLING, NO_CHANGE)
MOVED = (CHANGED, CHANGED_WITHOUT_BAND)
# Whose curves are drawn: a change within noise has curves that differ by noise.
CURVE_VERDICTS = (*MOVED, NOT_JUDGED, CANNOT_TELL)
QUALITY_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "loss")
METRICS_TOLERANCE = 1e-4  # the report shows 4 decimals; summation order moves a loss's last digits, not these
ALPHA = 0.05  # family-wise: the chance that a review of pure reseeds says "changed" for any variant
MAX_SEEDS = 100


def rank_sum_p_value(head: Sequence[float], band: Sequence[float]) -> float:
    """Two-sided exact permutation p of the head runs' rank sum among head + band runs (ties: mid-ranks).

    Doubled mid-ranks are integers; ways[j, s] counts the subsets of j runs whose doubled ranks sum to s, so
    ways[n] / C(m + n, n) is the rank sum's distribution when every split is equally likely."""
    values = np.asarray([*head, *band], dtype=float)
    below = (values[None, :] < values[:, None]).sum(axis=1)
    tied = (values[None, :] == values[:, None]).sum(axis=1)
    doubled = 2 * below + tied + 1  # (N,) twice each run's mid-rank
    n, total = len(head), int(doubled.sum())
    ways = np.zeros((n + 1, total + 1))
    ways[0, 0] = 1.0
    for rank in doubled:
        ways[1:, rank:] = ways[1:, rank:] + ways[:-1, : total + 1 - rank]
    counts = ways[n]
    center = n * (len(values) + 1)  # the doubled rank sum's mean
    extreme = np.abs(np.arange(total + 1) - center) >= abs(int(doubled[:n].sum()) - center) - 1e-9
    return float(min(1.0, counts[extreme].sum() / counts.sum()))


def smallest_p(head_runs: int, band_runs: int) -> float:
    """The smallest two-sided p `head_runs` runs can reach against `band_runs`: all of them beyond the band."""
    return min(1.0, 2 / math.comb(head_runs + band_runs, head_runs))


def seeds_needed(band_runs: int, tests: int = 1) -> int | None:
    """Head seeds that can show a change against a band of `band_runs` in a review of `tests` judged variants
    (Holm's first step compares the smallest p with ALPHA / tests); None beyond MAX_SEEDS."""
    return next((n for n in range(1, MAX_SEEDS + 1) if smallest_p(n, band_runs) * tests <= ALPHA), None)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where adjusted <= ALPHA); NaN marks "not tested". The i-th smallest
    of m is multiplied by m - i + 1, then made non-decreasing: the family-wise error rate under any dependence."""
    p = np.asarray(p_values, dtype=float)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]  # the tested, smallest p first
    adjusted = np.full(len(p), np.nan)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * (len(order) - np.arange(len(order)))))
    return adjusted


@dataclass(frozen=True)
class Runs:
    """Test accuracies of one config over seeds, with the runs they come from (experiment names)."""

    names: tuple[str, ...]
    accuracies: tuple[float, ...]

    def describe(self) -> str:
        points = sorted(100 * value for value in self.accuracies)
        if len(points) == 1:
            return f"{points[0]:.2f} (1 run)"
        return f"{points[0]:.2f}–{points[-1]:.2f}, median {statistics.median(points):.2f} ({len(points)} runs)"


def seed_band(entry: dict[str, Any], variant: str, where: str, head_name: str | None = None) -> Runs:
    """A band from its reports/seed_bands.json entry, less the head's own run when the band holds it (reviewing
    one of the band's experiments against the commit)."""
    names, accuracies = entry.get("runs") or [], entry.get("accuracies") or []
    numbers = isinstance(accuracies, list) and all(type(value) in (int, float) for value in accuracies)
    if not numbers or not isinstance(names, list) or len(names) != len(accuracies) or len(names) < 2:
        needs = "needs the `runs` and `accuracies` (numbers) of two or more seeds"
        raise UserError(f"{where}: the band of {variant} {needs}; refresh it with `python -m tools.seed_bands`.")
    kept = [(str(name), float(value)) for name, value in zip(names, accuracies, strict=True) if name != head_name]
    return Runs(tuple(name for name, _ in kept), tuple(value for _, value in kept))


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
    band: Runs | None  # the base config's runs over seeds
    head_runs: Runs  # the head's run, then its other seeds' (a sweep's or the queue's experiments)
    metric_changes: dict[str, MetricChange]
    adjusted_p: float | None = None  # Holm over the review's tested variants
    seeds_needed: int | None = None  # head seeds this review needs to tell, when it has fewer
    verdict: str = ""

    @property
    def p_value(self) -> float | None:
        """The rank test's p when banded, test sampling's otherwise; None when not tested."""
        if self.not_rerun is not None or self.identical or (self.band is None and self.environment_difference is not None):
            return None
        if self.band is None:
            return self.comparison.p_value
        return rank_sum_p_value(self.head_runs.accuracies, self.band.accuracies)


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
    variant: str, old: dict, new: dict, base: Predictions, head: Predictions, band: Runs | None, not_rerun: str | None
) -> Row:
    """A variant's row from its metrics (`old`, `new`) and its predictions at each side; its seed runs are its own."""
    paired = np.array_equal(base.actual, head.actual)  # the same test examples in the same order, else the data changed
    identical = paired and np.array_equal(base.predicted, head.predicted) and same_metrics(old, new)
    comparison = compare(base.correct, head.correct, paired=paired)
    changes, environment = metric_changes(base, head, old, new, paired), environment_difference(old, new)
    own = Runs(("head",), (float(new["accuracy"]),))
    return Row(variant, old, new, identical, not_rerun, environment, comparison, band, own, changes)


def verdict(row: Row, adjusted_p: float | None, tests: int) -> Row:
    changed = adjusted_p is not None and adjusted_p <= ALPHA
    if row.not_rerun is not None or row.identical:
        return replace(row, verdict=NOT_RERUN if row.not_rerun is not None else NO_CHANGE)
    if row.band is not None:
        band_runs = len(row.band.accuracies)
        if smallest_p(len(row.head_runs.accuracies), band_runs) * tests > ALPHA:
            return replace(row, verdict=CANNOT_TELL, adjusted_p=adjusted_p, seeds_needed=seeds_needed(band_runs, tests))
        return replace(row, verdict=CHANGED if changed else WITHIN_SEED_NOISE, adjusted_p=adjusted_p)
    if row.environment_difference is not None:
        return replace(row, verdict=NOT_JUDGED)
    return replace(row, verdict=CHANGED_WITHOUT_BAND if changed else WITHIN_TEST_SAMPLING, adjusted_p=adjusted_p)


def judge(rows: list[Row]) -> list[Row]:
    """The verdicts of one review: the tested variants' p-values adjusted together (Holm)."""
    adjusted = holm([np.nan if row.p_value is None else row.p_value for row in rows]).tolist()
    tests = sum(not np.isnan(value) for value in adjusted)
    return [verdict(row, None if np.isnan(value) else value, tests) for row, value in zip(rows, adjusted, strict=True)]
