"""The review's seed-noise rule (rnnlab/comparison/verdicts.py) on recorded real runs, and its arithmetic by
simulation. docs/review.md quotes the counts these tests check.

Real runs: relu's committed seed band (seeds 0-9, reports/seed_bands.json) and the held-out reseeds 10-29, each
a `dvc exp run -S train.seed=N evaluate@relu` recorded in reports/studies.json; the power side is relu with
`model.readout=max`, seeds 0-2. A pure reseed is never a real change, so every "changed" among them is a false
alarm.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rnnlab.comparison import verdicts

REPORTS = Path(__file__).resolve().parents[3] / "reports"
BAND_SEEDS = range(10)


def relu_runs(overrides: dict) -> dict[int, float]:
    """seed -> relu test accuracy of the recorded experiments whose params changed exactly `overrides` (and the seed)."""
    found = {}
    for entry in json.loads((REPORTS / "studies.json").read_text())["experiments"]:
        rest = {key: value for key, value in entry["overrides"].items() if key != "train.seed"}
        if rest == overrides and "relu" in entry["rows"]:
            row = entry["rows"]["relu"]
            found[row["seed"]] = row["accuracy"]
    return found


def band() -> list[float]:
    entry = json.loads((REPORTS / "seed_bands.json").read_text())["variants"]["relu"]
    return [accuracy for seed, accuracy in zip(entry["seeds"], entry["accuracies"], strict=True) if seed in BAND_SEEDS]


def held_out() -> list[float]:
    return [accuracy for seed, accuracy in sorted(relu_runs({}).items()) if seed not in BAND_SEEDS]


def named(accuracies: list[float]) -> verdicts.Runs:
    return verdicts.Runs(tuple(f"run{index}" for index in range(len(accuracies))), tuple(accuracies))


def verdict(head: list[float], band_runs: list[float]) -> str:
    """The review's verdict for one judged variant whose head has these runs (test sampling plays no part)."""
    row = verdicts.Row("relu", {}, {}, False, None, None, None, named(band_runs), named(head), {})  # type: ignore[arg-type]
    return verdicts.judge([row])[0].verdict


def clopper_pearson(count: int, trials: int) -> tuple[float, float]:
    from scipy.stats import beta

    low = 0.0 if count == 0 else float(beta.ppf(0.025, count, trials - count + 1))
    high = 1.0 if count == trials else float(beta.ppf(0.975, count + 1, trials - count))
    return low, high


def test_the_recorded_runs_are_the_ones_the_docs_describe() -> None:
    assert len(band()) == 10 and len(held_out()) >= 20
    assert sorted(relu_runs({"model.readout": "max"})) == [0, 1, 2]


def test_a_single_real_reseed_is_never_called_changed_against_ten_seeds() -> None:
    """One run against 10 can reach p = 2/11 at best: each of the 20 held-out reseeds gets "too few seeds"."""
    said = [verdict([accuracy], band()) for accuracy in held_out()]
    assert said == [verdicts.CANNOT_TELL] * len(said)


def test_pairs_of_real_reseeds_raise_at_most_the_stated_false_alarms() -> None:
    """Disjoint pairs of held-out reseeds (10+11, 12+13, ...) against the band: two seeds can be judged, and
    a false alarm needs both below (or above) all ten band runs. docs/review.md states this count."""
    runs = held_out()
    said = [verdict(runs[index : index + 2], band()) for index in range(0, len(runs) - 1, 2)]
    false_alarms = said.count(verdicts.CHANGED)
    assert len(said) == 10 and false_alarms == 0
    assert clopper_pearson(false_alarms, len(said))[1] == pytest.approx(0.308, abs=0.001)


def test_all_held_out_reseeds_together_are_within_seed_noise() -> None:
    assert verdict(held_out(), band()) == verdicts.WITHIN_SEED_NOISE


def test_a_real_change_is_called_changed_with_the_seeds_the_rule_asks_for() -> None:
    """relu with a max-over-time readout (seeds 0-2) against relu's band: the rule asks for 2 seeds."""
    changed = [accuracy for _, accuracy in sorted(relu_runs({"model.readout": "max"}).items())]
    assert verdicts.seeds_needed(len(band())) == 2
    assert verdict(changed[:1], band()) == verdicts.CANNOT_TELL
    assert verdict(changed[:2], band()) == verdict(changed, band()) == verdicts.CHANGED


def power(shift: float, head_seeds: int, band_seeds: int, reviews: int, rng: np.random.Generator) -> float:
    """Share of reviews called changed when the head's runs are real relu runs moved by `shift`, band and head
    runs drawn without replacement from the 30 recorded runs (their skew included)."""
    pool = np.array(band() + held_out())
    called = 0
    for _ in range(reviews):
        drawn = rng.permutation(pool)
        called += verdict(list(drawn[:head_seeds] + shift), list(drawn[head_seeds : head_seeds + band_seeds])) == verdicts.CHANGED
    return called / reviews


@pytest.mark.parametrize(("shift", "head_seeds", "minimum", "maximum"), [
    (0.10, 2, 0.80, 0.95), (0.10, 3, 0.86, 0.98), (0.05, 3, 0.45, 0.67), (0.05, 10, 0.84, 0.97), (0.0, 3, 0.0, 0.08),
])
def test_power_on_the_real_seed_distribution(shift: float, head_seeds: int, minimum: float, maximum: float) -> None:
    """docs/review.md's table of seeds per change size comes from this resampling (400 reviews per cell)."""
    rng = np.random.default_rng(round(100 * shift) + head_seeds)
    assert minimum <= power(shift, head_seeds, 10, 400, rng) <= maximum


@pytest.mark.parametrize(("head_seeds", "band_seeds"), [(1, 39), (2, 10), (3, 10), (5, 20)])
def test_exchangeable_runs_of_any_shape_are_called_changed_at_most_alpha(head_seeds: int, band_seeds: int) -> None:
    """The arithmetic: runs from a skewed mixture (a cluster and a tail, like IMDB's) are called changed in at most
    ALPHA of 2,000 simulated reviews, and near ALPHA where the sizes allow it (2 / C(m + n, n) small)."""
    rng = np.random.default_rng(head_seeds * 100 + band_seeds)
    runs = np.where(rng.random((2000, head_seeds + band_seeds)) < 0.2, rng.normal(0.58, 0.02, (2000, head_seeds + band_seeds)),
                    rng.normal(0.67, 0.01, (2000, head_seeds + band_seeds)))
    rate = np.mean([verdict(list(row[:head_seeds]), list(row[head_seeds:])) == verdicts.CHANGED for row in runs])
    slack = 3 * math.sqrt(verdicts.ALPHA * (1 - verdicts.ALPHA) / len(runs))
    assert rate <= verdicts.ALPHA + slack
    assert rate >= 0.02  # a rule that never fires would pass the line above
