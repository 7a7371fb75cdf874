"""Per variant: is a metrics delta beyond test-sampling noise, and beyond seed noise?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.comparison.paired import Comparison, compare
from rnnlab.comparison.revision import Revision
from rnnlab.comparison.sources import read_predictions

SEED_FACTOR = 2.0  # |delta| within this many seed standard deviations counts as seed noise
NO_CHANGE = "no change"
WITHIN_TEST_SAMPLING = "within test-sampling noise"
WITHIN_SEED_NOISE = "within seed noise"
CHANGED = "changed beyond seed noise"
CHANGED_WITHOUT_BAND = "changed beyond test-sampling noise (no seed band)"


@dataclass(frozen=True)
class Row:
    """One variant present in both revisions."""

    variant: str
    study: str
    base: dict[str, Any]
    head: dict[str, Any]
    unchanged: bool
    comparison: Comparison
    band: dict[str, Any] | None
    verdict: str


def verdict(unchanged: bool, comparison: Comparison, band_std: float | None, factor: float = SEED_FACTOR) -> str:
    """No change, else test sampling first (the interval), then the seed band when there is one."""
    if unchanged:
        return NO_CHANGE
    if comparison.contains_zero:
        return WITHIN_TEST_SAMPLING
    if band_std is None:
        return CHANGED_WITHOUT_BAND
    return WITHIN_SEED_NOISE if abs(comparison.difference) <= factor * band_std else CHANGED


def without_environment(metrics: dict[str, Any]) -> dict[str, Any]:
    # The environment is reported on its own line: equal numbers from another torch are still equal.
    return {key: value for key, value in metrics.items() if key != "environment"}


def compare_variant(base: Revision, head: Revision, variant: str, base_metrics: dict[str, Any],
                    head_metrics: dict[str, Any], band: dict[str, Any] | None) -> Row:
    base_predictions, head_predictions = read_predictions(base, variant), read_predictions(head, variant)
    unchanged = base_predictions.text == head_predictions.text and without_environment(base_metrics) == without_environment(head_metrics)
    # Same test examples in the same order (same labels): paired; otherwise the data changed under it.
    paired = base_predictions.actual == head_predictions.actual
    comparison = compare(base_predictions.correct, head_predictions.correct, paired=paired)
    return Row(variant, head_metrics.get("study", "imdb"), base_metrics, head_metrics, unchanged, comparison, band,
               verdict(unchanged, comparison, band["std"] if band else None))
