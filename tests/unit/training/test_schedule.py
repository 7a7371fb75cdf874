"""train.lr_schedule: constant keeps Adam's rate untouched; cosine decays it per batch to ~0 at the end."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.config.params import ModelConfig, TrainConfig
from rnnlab.core.errors import ConfigError
from rnnlab.model.classifier import ModelSpec, RecurrentClassifier
from rnnlab.training.train import fit
from tests.support.splits import tiny_split

TRAIN_SIZE, BATCH_SIZE, EPOCHS = 50, 16, 3  # 4 batches per epoch, the last one partial
STEPS = EPOCHS * math.ceil(TRAIN_SIZE / BATCH_SIZE)


def tiny_model() -> RecurrentClassifier:
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", embedding_dim=4, hidden_size=4, dropout=0.0, head_size=0)
    return RecurrentClassifier(ModelSpec(config, 9, 2, 6, ("neg", "pos")))


def learning_rates(schedule: str) -> list[float]:
    """The rate every optimizer step of a real `fit` used, recorded by wrapping Adam.step."""
    config = TrainConfig(epochs=EPOCHS, batch_size=BATCH_SIZE, lr=0.01, lr_schedule=schedule, device="cpu")
    used: list[float] = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", recording_step)
        fit(tiny_model(), tiny_split(TRAIN_SIZE, 1), tiny_split(20, 2), config, torch.device("cpu"))
    return used


def test_constant_schedule_trains_every_step_at_lr() -> None:
    assert learning_rates("constant") == [0.01] * STEPS


def test_cosine_schedule_falls_from_lr_to_near_zero_over_every_step_of_the_run() -> None:
    rates = learning_rates("cosine")
    assert len(rates) == STEPS
    assert rates[0] == pytest.approx(0.01)
    assert all(later < earlier for earlier, later in zip(rates, rates[1:]))
    # Half a cosine over STEPS steps: halfway through it is at lr / 2, the last step just above 0.
    assert rates[STEPS // 2] == pytest.approx(0.005)
    assert rates[-1] == pytest.approx(0.01 * (1 + math.cos(math.pi * (STEPS - 1) / STEPS)) / 2)
    assert rates[-1] < 0.001


def test_unknown_schedule_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="constant.*cosine"):
        TrainConfig.from_dict({"lr_schedule": "cosin"}, "train")
