"""rnnlab.comparison's statistics: the paired accuracy interval, McNemar, the F1/ROC-AUC/loss intervals (each
against a brute-force paired bootstrap), Holm, and the verdict order. Fast: no repository, no git."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from rnnlab.comparison import paired, verdicts
from rnnlab.comparison.paired import metric_changes
from rnnlab.comparison.revision import Predictions
from rnnlab.comparison.verdicts import SeedBand

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
    return Predictions("p.csv", names[actual], names[probabilities.argmax(axis=1)], classes, probabilities)


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


def test_reseed_interval_uses_the_band_degrees_of_freedom() -> None:
    # 3 seeds: t(2, 0.975) = 4.303; 10 seeds: t(9, 0.975) = 2.262; both times s sqrt(2).
    assert verdicts.reseed_halfwidth(0.01, 2) == pytest.approx(4.3027 * 0.01 * np.sqrt(2), rel=1e-4)
    assert verdicts.reseed_halfwidth(0.01, 9) == pytest.approx(2.2622 * 0.01 * np.sqrt(2), rel=1e-4)
    assert verdicts.reseed_p_value(4.3027 * 0.01 * np.sqrt(2), 0.01, 2) == pytest.approx(0.05, abs=1e-4)
    assert verdicts.reseed_p_value([0.0, 0.01], 0.0, 4).tolist() == [1.0, 0.0]  # a deterministic variant: any change is real


def row(difference_examples: int, band: SeedBand | None, *, identical: bool = False, not_rerun: str | None = None,
        environment: dict | None = None, n: int = 2_000) -> verdicts.Row:
    """A variant whose head gets `difference_examples` more test examples right than its base."""
    actual = np.array(["pos", "neg"] * (n // 2))
    base_predicted = actual.copy()
    base_predicted[:400] = np.where(actual[:400] == "pos", "neg", "pos")  # the base misses the first 400
    head_predicted = base_predicted.copy()
    if not identical:
        head_predicted[400:440] = np.where(actual[400:440] == "pos", "neg", "pos")  # 40 new misses...
        fixed = 40 + difference_examples                                          # ... and this many fixes
        head_predicted[:fixed] = actual[:fixed]
    base = Predictions("b.csv", actual, base_predicted, ("neg", "pos"), np.eye(2)[(base_predicted == "pos").astype(int)])
    head = Predictions("h.csv", actual, head_predicted, ("neg", "pos"), np.eye(2)[(head_predicted == "pos").astype(int)])
    stamp = {"torch": "2.13.0", "device": "cpu"}
    base_metrics = {"accuracy": float(base.correct.mean()), "environment": stamp}
    head_metrics = {"accuracy": float(head.correct.mean()), "environment": environment or stamp}
    return verdicts.gather("v", base_metrics, head_metrics, base, head, band, not_rerun)


@pytest.mark.parametrize(("changed_examples", "band", "expected"), [
    (200, SeedBand(0.01, 10), verdicts.CHANGED),          # +10 points, s = 1 point, 10 seeds
    (200, SeedBand(0.03, 3), verdicts.WITHIN_SEED_NOISE),       # +10 points, s = 3 points, 3 seeds: t(2) * 4.2 = 18
    (-200, SeedBand(0.01, 10), verdicts.CHANGED),
    (0, SeedBand(0.01, 10), verdicts.WITHIN_SEED_NOISE),  # different predictions, same accuracy
    (100, None, verdicts.CHANGED_WITHOUT_BAND),
    (4, None, verdicts.WITHIN_TEST_SAMPLING),
])
def test_verdict_of_one_variant(changed_examples: int, band: SeedBand | None, expected: str) -> None:
    judged, = verdicts.judge([row(changed_examples, band)])
    assert judged.verdict == expected


def test_not_rerun_comes_first_and_no_change_needs_identical_predictions() -> None:
    assert verdicts.judge([row(0, None, identical=True, not_rerun="head: stale")])[0].verdict == verdicts.NOT_RERUN
    assert verdicts.judge([row(0, None, identical=True)])[0].verdict == verdicts.NO_CHANGE
    assert verdicts.judge([row(0, None)])[0].verdict == verdicts.WITHIN_TEST_SAMPLING  # other predictions, same accuracy


def test_another_environment_is_judged_by_seed_noise_only() -> None:
    other = {"torch": "2.14.0", "device": "cpu"}
    assert verdicts.judge([row(100, None, environment=other)])[0].verdict == verdicts.NOT_JUDGED
    assert verdicts.judge([row(200, SeedBand(0.01, 10), environment=other)])[0].verdict == verdicts.CHANGED
    assert verdicts.environment_difference({"environment": {"a": 1, "b": 2}}, {"environment": {"a": 1, "b": 3, "c": 0}}) == "b, c"
    assert verdicts.environment_difference({}, {"environment": {"a": 1}}) == "not recorded at the base"


def test_one_review_is_one_family() -> None:
    """Alone, a 2.4-sigma-ish change is flagged; beside three other changed variants, Holm asks for more."""
    band = SeedBand(0.01, 10)
    alone, = verdicts.judge([row(66, band)])
    assert alone.verdict == verdicts.CHANGED and alone.adjusted_p == pytest.approx(alone.p_value)
    family = verdicts.judge([row(66, band), row(1, band), row(2, band), row(3, band)])
    assert family[0].verdict == verdicts.WITHIN_SEED_NOISE and family[0].adjusted_p == pytest.approx(4 * family[0].p_value)


def test_a_band_is_read_from_its_accuracies() -> None:
    band = verdicts.seed_band({"seeds": [0, 1, 2], "accuracies": [0.64, 0.66, 0.68], "std": 99.0}, "relu", "bands")
    assert band == SeedBand(pytest.approx(0.02), 3) and band.runs == 3
    assert verdicts.seed_band(None, "relu", "bands") is None
    with pytest.raises(verdicts.UserError, match=r"bands: the band of relu needs the `accuracies` of two or more seeds"):
        verdicts.seed_band({"std": 0.01, "accuracies": [0.6]}, "relu", "bands")


def test_metrics_equal_to_the_tolerance_are_no_change() -> None:
    """Identical predictions, the loss moved in its last digits (another summation order): no change."""
    base = {"accuracy": 0.8652, "loss": 0.34906327813786875, "roc_auc": 0.9397319168}
    assert verdicts.same_metrics(base, {**base, "loss": 0.3490632781378724})
    assert not verdicts.same_metrics(base, {**base, "loss": 0.3480632781378724})
