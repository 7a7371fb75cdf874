"""rnnlab.comparison's statistics: the paired accuracy interval, McNemar, the F1/ROC-AUC/loss intervals (each
against a brute-force paired bootstrap), Holm, and the verdict order. Fast: no repository, no git."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn import metrics as skm

from rnnlab.comparison import paired, verdicts
from rnnlab.comparison.paired import metric_changes
from rnnlab.comparison.revision import Predictions, Revision
from rnnlab.comparison.verdicts import Runs
from rnnlab.experiments.seed_bands import config_key, seed_runs
from tests.unit.experiments.test_studies import PARAMS, commit, experiment, git, with_changes

# -- accuracy: Newcombe's paired interval and McNemar -------------------------------------------------

def correlated_outcomes(rng: np.random.Generator, n: int, base_rate: float, fixes: float, breaks: float) -> tuple[np.ndarray, np.ndarray]:
    base = rng.random(n) < base_rate
    flip = rng.random(n)
    return base, np.where(base, flip >= breaks, flip < fixes)


@pytest.mark.parametrize(("n", "fixes", "breaks"), [(25_000, 0.30, 0.10), (25_000, 0.12, 0.12), (2_000, 0.05, 0.02)])
def test_paired_interval_matches_the_paired_bootstrap(n: int, fixes: float, breaks: float) -> None:
    """The closed form from (b, c, n) against 20,000 bootstrap resamples drawn from the same counts (the
    bootstrap of a paired accuracy difference depends on nothing else)."""
    rng = np.random.default_rng(n)
    base, head = correlated_outcomes(rng, n, 0.65, fixes, breaks)
    comparison = paired.compare(base, head)
    b, c = comparison.base_only_correct, comparison.head_only_correct
    draws = rng.multinomial(n, [b / n, c / n, 1 - (b + c) / n], size=20_000)
    low, high = np.percentile((draws[:, 1] - draws[:, 0]) / n, [2.5, 97.5])
    assert comparison.low == pytest.approx(low, abs=0.0008) and comparison.high == pytest.approx(high, abs=0.0008)
    assert comparison.difference == pytest.approx(head.mean() - base.mean())


def test_interval_contains_the_true_difference_and_pairing_narrows_it() -> None:
    rng = np.random.default_rng(1)
    base, head = correlated_outcomes(rng, 4000, 0.70, 0.12, 0.02)
    comparison = paired.compare(base, head)
    assert comparison.low < 0.30 * 0.12 - 0.70 * 0.02 < comparison.high and comparison.low > 0
    unpaired = paired.compare(base, head, paired=False)
    assert (comparison.high - comparison.low) < 0.5 * (unpaired.high - unpaired.low)
    assert not unpaired.paired and unpaired.p_value > 10 * comparison.p_value


def test_small_counts_keep_their_coverage() -> None:
    """0 vs 4 discordant examples: McNemar's p is 0.125, and the interval keeps 0 (a percentile bootstrap would not)."""
    comparison = paired.compare(np.array([False] * 4 + [True] * 76), np.array([True] * 80))
    assert comparison.p_value == pytest.approx(0.125)
    assert comparison.low < 0 < comparison.high


def test_identical_outcomes_give_a_zero_interval_and_p_one() -> None:
    outcomes = np.array([True, False, True, True])
    comparison = paired.compare(outcomes, outcomes)
    assert (comparison.low, comparison.high, comparison.p_value) == (0.0, 0.0, 1.0)


def test_mcnemar_exact_on_a_known_table() -> None:
    # 1 vs 9 discordant pairs: p = 2 * P(X <= 1 | n=10, 1/2) = 2 * 11 / 1024.
    assert paired.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert paired.mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert paired.mcnemar_exact(5, 5) == pytest.approx(1.0)


# -- F1, ROC-AUC, loss ------------------------------------------------------------------------------

def predictions(actual: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]) -> Predictions:
    names = np.array(classes)
    return Predictions(names[actual], names[probabilities.argmax(axis=1)], classes, probabilities)


def two_models(rng: np.random.Generator, n: int, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated models' probabilities (a shared per-example signal, each its own noise)."""
    actual = rng.integers(0, classes, n)
    shared = rng.normal(size=(n, classes)) + 1.2 * np.eye(classes)[actual]
    logits = [shared + rng.normal(scale=scale, size=(n, classes)) + bias * np.eye(classes)[actual]
              for scale, bias in ((0.8, 0.0), (0.7, 0.25))]
    soft = [np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) for z in logits]
    return actual, np.round(soft[0], 6), np.round(soft[1], 6)


SCIKIT = {
    "f1": lambda y, p: skm.f1_score(y, p.argmax(1), average="binary" if p.shape[1] == 2 else "macro"),
    "roc_auc": lambda y, p: skm.roc_auc_score(y, p[:, 1]) if p.shape[1] == 2 else skm.roc_auc_score(y, p, multi_class="ovr"),
    "loss": lambda y, p: float(np.mean(-np.log(np.maximum(p[np.arange(len(y)), y], 5e-7)))),
}


def weighted_metrics(weights: np.ndarray, actual: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """F1, ROC-AUC and loss of one model on each bootstrap resample (a row of `weights`: how often each example
    was drawn), by brute force: the same definitions as scikit-learn's, vectorised over the resamples."""
    classes = probabilities.shape[1]
    predicted = probabilities.argmax(1)
    scored = [1] if classes == 2 else range(classes)
    f1, auc = [], []
    for k in scored:
        tp, fp, fn = (weights @ ((actual == k) & (predicted == k)), weights @ ((actual != k) & (predicted == k)),
                      weights @ ((actual == k) & (predicted != k)))
        f1.append(2 * tp / (2 * tp + fp + fn))
        positive, negative = probabilities[actual == k, k], probabilities[actual != k, k]
        outranks = (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])
        pairs = np.sum((weights[:, actual == k] @ outranks) * weights[:, actual != k], axis=1)
        auc.append(pairs / (weights[:, actual == k].sum(1) * weights[:, actual != k].sum(1)))
    losses = -np.log(np.maximum(probabilities[np.arange(len(actual)), actual], 5e-7))
    return {"f1": np.mean(f1, axis=0), "roc_auc": np.mean(auc, axis=0), "loss": weights @ losses / len(actual)}


@pytest.mark.parametrize("classes", [2, 4])
def test_metric_intervals_match_a_paired_bootstrap(classes: int) -> None:
    rng = np.random.default_rng(classes)
    examples, resamples = 1_500, 1_000
    actual, base_p, head_p = two_models(rng, examples, classes)
    names = tuple(f"c{k}" for k in range(classes))
    base, head = predictions(actual, base_p, names), predictions(actual, head_p, names)
    values = {side: {name: SCIKIT[name](actual, probabilities) for name in SCIKIT} for side, probabilities in (("base", base_p), ("head", head_p))}
    changes = metric_changes(base, head, values["base"], values["head"], paired=True)
    # The paired bootstrap: the same resampled examples for both models.
    drawn = np.random.default_rng(0).integers(0, examples, size=(resamples, examples))
    weights = np.stack([np.bincount(row, minlength=examples) for row in drawn]).astype(float)
    base_draws, head_draws = weighted_metrics(weights, actual, base_p), weighted_metrics(weights, actual, head_p)
    for name, change in changes.items():
        assert base_draws[name].mean() == pytest.approx(values["base"][name], abs=0.01)  # the brute force is scikit-learn's metric
        low, high = np.percentile(head_draws[name] - base_draws[name], [2.5, 97.5])
        assert change.head - change.base == pytest.approx(values["head"][name] - values["base"][name])
        # Normal limit vs 1,000 resamples: the widths agree to an eighth, the centres to a fifth of a half-width.
        assert (change.high - change.low) == pytest.approx(high - low, rel=0.12), name
        assert (change.high + change.low) / 2 == pytest.approx((high + low) / 2, abs=0.2 * (high - low) / 2), name


# -- Holm and the verdicts ----------------------------------------------------------------------------

def test_holm_adjusts_a_known_family_and_skips_the_untested() -> None:
    assert verdicts.holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = verdicts.holm([0.01, np.nan, 0.03])
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.03)


def brute_force_p(head: list[float], band: list[float]) -> float:
    """Every split of the runs into |head| and |band|, the head's mid-rank sum against the observed one."""
    values = np.array(head + band)
    ranks = np.array([np.mean(np.flatnonzero(np.sort(values) == value)) + 1 for value in values])
    center, observed = len(head) * (len(values) + 1) / 2, ranks[: len(head)].sum()
    sums = [ranks[list(chosen)].sum() for chosen in itertools.combinations(range(len(values)), len(head))]
    return float(np.mean([abs(total - center) >= abs(observed - center) - 1e-9 for total in sums]))


@pytest.mark.parametrize("seed", range(6))
def test_rank_p_value_is_the_exact_permutation_p_ties_included(seed: int) -> None:
    rng = np.random.default_rng(seed)
    head = rng.choice([0.60, 0.62, 0.65, 0.66, 0.70], size=1 + seed % 4).tolist()  # few values: many ties
    band = rng.choice([0.60, 0.62, 0.65, 0.66, 0.70], size=7 + seed % 3).tolist()
    assert verdicts.rank_sum_p_value(head, band) == pytest.approx(brute_force_p(head, band))


def test_what_n_head_seeds_can_show_against_a_band() -> None:
    band = [0.60 + 0.01 * seed for seed in range(10)]
    assert verdicts.rank_sum_p_value([0.50], band) == pytest.approx(2 / 11)  # below all ten: still 18 %
    assert verdicts.rank_sum_p_value([0.50, 0.51], band) == pytest.approx(2 / 66)
    assert verdicts.smallest_p(1, 10) == pytest.approx(2 / 11) and verdicts.smallest_p(3, 10) == pytest.approx(2 / 286)
    assert [verdicts.seeds_needed(10), verdicts.seeds_needed(10, tests=4), verdicts.seeds_needed(30)] == [2, 3, 2]
    assert verdicts.seeds_needed(39) == 1  # 2 / 40: one run beyond a band of 39 is a 5 % event


def runs(*accuracies: float) -> Runs:
    return Runs(tuple(f"seed{index}" for index in range(len(accuracies))), accuracies)


BAND = runs(*(0.60 + 0.01 * seed for seed in range(10)))  # 60 .. 69 %


def row(difference_examples: int, band: Runs | None, *, identical: bool = False, not_rerun: str | None = None,
        environment: dict | None = None, n: int = 2_000, head_runs: Runs | None = None) -> verdicts.Row:
    """A variant whose head gets `difference_examples` more test examples right than its base; its seed runs
    `head_runs` (default: its own run only)."""
    actual = np.array(["pos", "neg"] * (n // 2))
    base_predicted = actual.copy()
    base_predicted[:400] = np.where(actual[:400] == "pos", "neg", "pos")  # the base misses the first 400
    head_predicted = base_predicted.copy()
    if not identical:
        head_predicted[400:440] = np.where(actual[400:440] == "pos", "neg", "pos")  # 40 new misses...
        fixed = 40 + difference_examples                                          # ... and this many fixes
        head_predicted[:fixed] = actual[:fixed]
    base = Predictions(actual, base_predicted, ("neg", "pos"), np.eye(2)[(base_predicted == "pos").astype(int)])
    head = Predictions(actual, head_predicted, ("neg", "pos"), np.eye(2)[(head_predicted == "pos").astype(int)])
    stamp = {"torch": "2.13.0", "device": "cpu"}
    base_metrics = {"accuracy": float(base.correct.mean()), "environment": stamp}
    head_metrics = {"accuracy": float(head.correct.mean()), "environment": environment or stamp}
    row = verdicts.gather("v", base_metrics, head_metrics, base, head, band, not_rerun)
    return replace(row, head_runs=head_runs) if head_runs else row


@pytest.mark.parametrize(("head_runs", "expected"), [
    (runs(0.90), verdicts.CANNOT_TELL),                    # one run far above: 2 / 11 at best
    (runs(0.90, 0.91), verdicts.CHANGED),                  # two runs above all ten: 2 / 66
    (runs(0.50, 0.52, 0.55), verdicts.CHANGED),
    (runs(0.90, 0.61), verdicts.WITHIN_SEED_NOISE),        # enough seeds, and they disagree
    (runs(0.645, 0.655, 0.665), verdicts.WITHIN_SEED_NOISE),
])
def test_verdict_of_one_variant_with_a_band(head_runs: Runs, expected: str) -> None:
    judged, = verdicts.judge([row(200, BAND, head_runs=head_runs)])
    assert judged.verdict == expected
    assert judged.seeds_needed == (2 if expected == verdicts.CANNOT_TELL else None)


@pytest.mark.parametrize(("changed_examples", "expected"), [(100, verdicts.CHANGED_WITHOUT_BAND), (4, verdicts.WITHIN_TEST_SAMPLING)])
def test_verdict_without_a_band_is_mcnemars(changed_examples: int, expected: str) -> None:
    judged, = verdicts.judge([row(changed_examples, None)])
    assert judged.verdict == expected


def test_not_rerun_comes_first_and_no_change_needs_identical_predictions() -> None:
    assert verdicts.judge([row(0, None, identical=True, not_rerun="head: stale")])[0].verdict == verdicts.NOT_RERUN
    assert verdicts.judge([row(0, None, identical=True)])[0].verdict == verdicts.NO_CHANGE
    assert verdicts.judge([row(0, None)])[0].verdict == verdicts.WITHIN_TEST_SAMPLING  # other predictions, same accuracy


def test_another_environment_is_judged_by_seed_noise_only() -> None:
    other = {"torch": "2.14.0", "device": "cpu"}
    assert verdicts.judge([row(100, None, environment=other)])[0].verdict == verdicts.NOT_JUDGED
    assert verdicts.judge([row(200, BAND, environment=other, head_runs=runs(0.9, 0.91))])[0].verdict == verdicts.CHANGED
    assert verdicts.environment_difference({"environment": {"a": 1, "b": 2}}, {"environment": {"a": 1, "b": 3, "c": 0}}) == "b, c"
    assert verdicts.environment_difference({}, {"environment": {"a": 1}}) == "not recorded at the base"


def test_one_review_is_one_family() -> None:
    """Two seeds above the band are enough alone (2 / 66); beside three other judged variants Holm's first step
    needs p <= 0.0125, which two seeds cannot reach: the review asks for three."""
    alone, = verdicts.judge([row(200, BAND, head_runs=runs(0.9, 0.91))])
    assert alone.verdict == verdicts.CHANGED and alone.adjusted_p == pytest.approx(2 / 66)
    family = verdicts.judge([row(200, BAND, head_runs=runs(0.9, 0.91)), *(row(k, BAND, head_runs=runs(0.9, 0.91)) for k in (1, 2, 3))])
    assert {judged.verdict for judged in family} == {verdicts.CANNOT_TELL} and family[0].seeds_needed == 3
    three = verdicts.judge([row(200, BAND, head_runs=runs(0.9, 0.91, 0.92)), *(row(k, BAND, head_runs=runs(0.645, 0.655, 0.665)) for k in (1, 2, 3))])
    assert [judged.verdict for judged in three] == [verdicts.CHANGED] + [verdicts.WITHIN_SEED_NOISE] * 3


def test_a_band_is_read_from_its_runs_less_the_heads_own() -> None:
    entry = {"seeds": [0, 1, 2], "runs": ["(committed)", "default-seed1", "default-seed2"], "accuracies": [0.64, 0.66, 0.68]}
    assert verdicts.seed_band(entry, "relu", "bands") == Runs(("(committed)", "default-seed1", "default-seed2"), (0.64, 0.66, 0.68))
    assert verdicts.seed_band(entry, "relu", "bands", head_name="default-seed1").names == ("(committed)", "default-seed2")
    with pytest.raises(verdicts.UserError, match=r"bands: the band of relu needs the `runs` and `accuracies` \(numbers\) of two or more seeds"):
        verdicts.seed_band({"runs": ["a"], "accuracies": [0.6]}, "relu", "bands")


def test_metrics_equal_to_the_tolerance_are_no_change() -> None:
    """Identical predictions, the loss moved in its last digits (another summation order): no change."""
    base = {"accuracy": 0.8652, "loss": 0.34906327813786875, "roc_auc": 0.9397319168}
    assert verdicts.same_metrics(base, {**base, "loss": 0.3490632781378724})
    assert not verdicts.same_metrics(base, {**base, "loss": 0.3480632781378724})


def test_the_heads_seed_runs_are_the_experiments_with_its_inputs_and_other_seeds(tmp_path: Path) -> None:
    """A sweep of readout=max over seeds 0-2: reviewing one of them finds the other two, not the baseline, not a
    run that also changed lr, and not a run named in the base's band."""
    git(tmp_path, "init", "-q")
    baseline = commit(tmp_path, PARAMS, {"relu": 0.70, "tanh": 0.60}, "baseline")
    made = {name: experiment(tmp_path, baseline, name, with_changes(model={"readout": "max"}, train={"seed": seed, **extra}),
                             {"relu": accuracy})
            for name, seed, accuracy, extra in [("max-s0", 0, 0.80, {}), ("max-s1", 1, 0.81, {}), ("max-s2", 2, 0.82, {}),
                                                ("max-lr", 1, 0.5, {"lr": 0.1}), ("max-s3", 3, 0.83, {})]}
    head = Revision(tmp_path, "max-s0", made["max-s0"])
    assert seed_runs(head, "relu", 0.80, exclude={"max-s3"}) == [("max-s0", 0.80), ("max-s1", 0.81), ("max-s2", 0.82)]
    assert config_key(head, "relu") != config_key(Revision(tmp_path, "HEAD", baseline), "relu")
    assert config_key(head, "tanh") is None  # not retrained: its results are the baseline's, not readout=max's
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_changes(model={"readout": "max"})))
    assert config_key(Revision(tmp_path, "workspace", None), "tanh") is None  # params changed, stage not rerun
