"""model.members > 1: independently trained copies whose class probabilities are averaged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rnnlab.config.params import ModelConfig, TrainConfig
from rnnlab.core.errors import ConfigError
from rnnlab.evaluation.gradients import gradient_report
from rnnlab.model.classifier import (
    Classifier,
    EnsembleClassifier,
    ModelSpec,
    RecurrentClassifier,
    build_model,
    count_parameters,
    load_checkpoint,
    members_of,
    save_checkpoint,
)
from rnnlab.training.train import fit, predict
from tests.support.splits import tiny_split

CONFIG = ModelConfig(cell="lstm", embedding_dim=4, hidden_size=5, bidirectional=True, readout="mean_max", dropout=0.0, head_size=0)
TRAIN = TrainConfig(epochs=1, batch_size=16, lr=0.01, device="cpu", seed=3)


def spec(members: int) -> ModelSpec:
    return ModelSpec(replace(CONFIG, members=members), 9, 2, 6, ("neg", "pos"))


def seeded(members: int, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return build_model(spec(members))


def test_one_member_is_the_plain_classifier() -> None:
    model = seeded(1)
    assert type(model) is RecurrentClassifier
    assert members_of(model) == [model]


def test_ensemble_averages_member_probabilities() -> None:
    model = seeded(3).eval()
    assert isinstance(model, EnsembleClassifier) and len(model.members) == 3
    split = tiny_split(7, 1)
    with torch.no_grad():
        member_probabilities = torch.stack([member(split.x, split.lengths).softmax(dim=1) for member in model.members])
        ensemble = model(split.x, split.lengths).softmax(dim=1)
    assert torch.allclose(ensemble, member_probabilities.mean(dim=0), atol=1e-6)
    assert not torch.allclose(member_probabilities[0], member_probabilities[1])  # members start apart
    assert count_parameters(model) == 3 * count_parameters(seeded(1))


def test_member_zero_starts_from_the_single_models_weights() -> None:
    single, ensemble = seeded(1), seeded(3)
    for (name, weight), (_, member_weight) in zip(single.state_dict().items(), ensemble.members[0].state_dict().items()):
        assert torch.equal(weight, member_weight), name


def test_members_train_independently() -> None:
    """Member 0 of a trained ensemble equals a single model trained alone with the same seed:
    the other members neither share its gradients nor its batch order (no dropout, one epoch)."""
    train, valid = tiny_split(40, 1), tiny_split(12, 2)
    single, ensemble = seeded(1), seeded(2)
    single_result = fit(single, train, valid, TRAIN, torch.device("cpu"))
    ensemble_result = fit(ensemble, train, valid, TRAIN, torch.device("cpu"))
    ensemble.load_state_dict(ensemble_result.best_state)
    single.load_state_dict(single_result.best_state)
    for (name, weight), (_, member_weight) in zip(single.state_dict().items(), ensemble.members[0].state_dict().items()):
        assert torch.allclose(weight, member_weight, atol=1e-6), name
    # Member 1 trained too (its own seed and batch order), so it differs from its initial weights.
    initial = seeded(2)
    assert any(not torch.equal(a, b) for a, b in zip(initial.members[1].parameters(), ensemble.members[1].parameters()))
    # One history row per epoch, scored on the ensemble's averaged probabilities.
    assert len(ensemble_result.history) == TRAIN.epochs
    probabilities, _ = predict(ensemble, valid, 64, torch.device("cpu"))
    assert ensemble_result.history[0].valid_accuracy == pytest.approx(float((probabilities.argmax(1) == valid.y).float().mean()))


def test_checkpoint_round_trip_rebuilds_the_ensemble(tmp_path: Path) -> None:
    model = seeded(2).eval()
    path = tmp_path / "ensemble.pt"
    save_checkpoint(path, model, model.state_dict(), {"variant": "strong"})
    loaded, _ = load_checkpoint(path, expected=model.spec.model)
    split = tiny_split(5, 4)
    assert isinstance(loaded, EnsembleClassifier)
    with torch.no_grad():
        assert torch.equal(loaded(split.x, split.lengths), model(split.x, split.lengths))


def test_gradient_report_profiles_the_first_member() -> None:
    valid = tiny_split(8, 5)
    ensemble = seeded(2)
    metrics, rows = gradient_report(ensemble, 0, valid)
    single_metrics, single_rows = gradient_report(ensemble.members[0], 0, valid)
    assert metrics == single_metrics and rows == single_rows


def test_zero_members_is_refused() -> None:
    with pytest.raises(ConfigError, match="model.members must be >= 1"):
        ModelConfig.from_dict({"members": 0}, "model")
