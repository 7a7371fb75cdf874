"""The review's verdict rule by simulation: how often it cries wolf under pure reseeding, and whether it
still sees a real change (rnnlab/comparison/verdicts.py). Vectorised over thousands of reviews: seconds.

docs/review.md quotes these rates (from the same simulations at 40,000 reviews each).
"""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.comparison.verdicts import ALPHA, holm, reseed_halfwidth, reseed_p_value

# The default IMDB variants' seed stds over seeds 0-2 (reports/seed_bands.json): leaky_relu, relu, sigmoid, tanh.
SIGMAS = np.array([0.0161, 0.0313, 0.0445, 0.0405])
REVIEWS = 20_000
# Three standard errors of a rate of 5 % over REVIEWS reviews.
SLACK = 3 * np.sqrt(ALPHA * (1 - ALPHA) / REVIEWS)


def simulate(rng: np.random.Generator, seeds: int, variants: int, base_in_band: bool, shift: np.ndarray | None = None,
             reviews: int = REVIEWS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(difference, band std, Holm-adjusted p) per review and variant, each variant's band from `seeds` runs.

    Runs are Normal(0, sigma^2) test accuracies (the spread over seeds on one test set); the head is a
    fresh run, the base either a fresh run or (as when the band was made from the base commit, whose
    committed run is its seed 0) one of the band's runs.
    """
    sigma = np.resize(SIGMAS, variants)
    band = rng.normal(0.0, sigma[:, None], size=(reviews, variants, seeds))
    std = band.std(axis=-1, ddof=1)
    base = band[..., 0] if base_in_band else rng.normal(0.0, sigma, size=(reviews, variants))
    head = rng.normal(0.0, sigma, size=(reviews, variants)) + (0.0 if shift is None else shift)
    difference = head - base
    return difference, std, holm(reseed_p_value(difference, std, seeds - 1))


@pytest.mark.parametrize("seeds", [3, 10])
@pytest.mark.parametrize("variants", [1, 4, 11])
@pytest.mark.parametrize("base_in_band", [False, True])
def test_pure_reseeding_says_changed_in_at_most_5_percent_of_reviews(seeds: int, variants: int, base_in_band: bool) -> None:
    rng = np.random.default_rng(1000 * seeds + 10 * variants + base_in_band)
    _, _, adjusted = simulate(rng, seeds, variants, base_in_band)
    false_alarms = np.mean((adjusted <= ALPHA).any(axis=-1))  # any variant of the review "changed beyond seed noise"
    assert false_alarms <= ALPHA + SLACK, false_alarms
    if not base_in_band:
        # Exact, not just safe: a rule that never fires would pass the line above.
        assert false_alarms >= ALPHA - SLACK - 0.005 * (variants > 1), false_alarms


def test_the_old_rule_fired_far_too_often() -> None:
    """|delta| <= 2 x the seed std: a difference of two runs has std sqrt(2) sigma, and 3 seeds give 2 df."""
    rng = np.random.default_rng(7)
    difference, std, _ = simulate(rng, seeds=3, variants=11, base_in_band=False)
    per_variant = np.mean(np.abs(difference) > 2 * std)
    assert per_variant == pytest.approx(0.29, abs=0.01)                    # the 29 %
    assert np.mean((np.abs(difference) > 2 * std).any(axis=-1)) > 0.95    # and nearly every 11-variant review


def test_the_reseed_interval_covers_95_percent_of_reseeds() -> None:
    rng = np.random.default_rng(8)
    for seeds in (3, 10):
        difference, std, _ = simulate(rng, seeds, variants=4, base_in_band=False)
        covered = np.abs(difference) <= reseed_halfwidth(std, seeds - 1)
        assert covered.mean() == pytest.approx(0.95, abs=0.005)  # 80,000 reseeds: one standard error is 0.0008


@pytest.mark.parametrize(("seeds", "variants", "minimum"), [(10, 1, 0.93), (10, 4, 0.82), (3, 1, 0.58)])
def test_a_real_10_point_change_is_flagged(seeds: int, variants: int, minimum: float) -> None:
    """Power: +10 points on the least seed-noisy default variant (sigma 1.6 pts), the others reseeded only.

    With 10 seeds it is flagged in about 97 % of reviews when it is the only variant retrained and 87 %
    when all four IMDB variants are; with 3 seeds (t(2) is wide) only about 64 % / 23 %.
    """
    rng = np.random.default_rng(10 * seeds + variants)
    shift = np.zeros(variants)
    shift[0] = 0.10
    _, _, adjusted = simulate(rng, seeds, variants, base_in_band=True, shift=shift, reviews=5_000)
    power = np.mean(adjusted[:, 0] <= ALPHA)
    assert power >= minimum, power
    if variants > 1:
        assert np.mean(adjusted[:, 1:] <= ALPHA) <= ALPHA  # and the unchanged variants stay quiet


def test_test_sampling_is_already_inside_the_seed_spread() -> None:
    """Per example, through the whole chain: models that share a test set (hard examples are hard for every
    seed) and differ by a seed effect plus their own per-example errors. The seed std measured on that test
    set, with no test-sampling term added, gives a calibrated rule: about 5 % per variant, <= 5 % per review."""
    rng = np.random.default_rng(9)
    reviews, variants, seeds, examples = 300, 4, 10, 1_000
    difficulty = rng.normal(size=(reviews, variants, examples))  # the test set, shared by every run
    # The band's runs, then base and head: each a seed's effect on the whole model plus its own per-example luck.
    accuracy = np.stack([(0.45 + rng.normal(0.0, 0.08, size=(reviews, variants, 1)) + 0.8 * difficulty
                          + 0.6 * rng.normal(size=(reviews, variants, examples)) > 0).mean(axis=-1)
                         for _ in range(seeds + 2)], axis=-1)
    std = accuracy[..., :seeds].std(axis=-1, ddof=1)
    difference = accuracy[..., seeds + 1] - accuracy[..., seeds]
    p_values = reseed_p_value(difference, std, seeds - 1)
    assert np.mean(p_values <= ALPHA) == pytest.approx(ALPHA, abs=0.02)
    assert np.mean((holm(p_values) <= ALPHA).any(axis=-1)) <= ALPHA + 0.03  # 300 reviews: +-0.013 is one SE
