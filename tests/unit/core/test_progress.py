"""Progress bars (rnnlab/training/train.py): drawn on a terminal with running loss, accuracy and tokens/s,
silent otherwise, and never a bit of difference in the weights."""

from __future__ import annotations

import functools
import io

import pytest
import torch
from tqdm import tqdm

from rnnlab.config.params import ModelConfig, TrainConfig
from rnnlab.data.arrays import Split
from rnnlab.evaluation.gradients import gradient_report
from rnnlab.model.classifier import ModelSpec, RecurrentClassifier
from rnnlab.training.train import predict, train_epoch

CONFIG = TrainConfig(epochs=1, batch_size=8, lr=0.01, device="cpu")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def tiny_split(size: int = 40, steps: int = 12) -> Split:
    generator = torch.Generator().manual_seed(3)
    return Split(x=torch.randint(2, 20, (size, steps), generator=generator),
                 lengths=torch.randint(1, steps + 1, (size,), generator=generator),
                 y=torch.randint(0, 2, (size,), generator=generator))


def trained_weights(split: Split) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = RecurrentClassifier(ModelSpec(ModelConfig(embedding_dim=4, hidden_size=6, head_size=5), 20, 2, 12, ("neg", "pos")))
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG.lr)
    stats = train_epoch(model, optimizer, split, CONFIG, torch.Generator().manual_seed(0), torch.device("cpu"),
                        description="epoch 1/1")
    assert stats is not None
    predict(model, split, 16, torch.device("cpu"), description="valid")
    gradient_report(model, 0, split)
    return model.state_dict()


def test_bars_on_a_terminal_show_running_numbers_and_change_no_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    split = tiny_split()
    quiet = trained_weights(split)
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    # Draw every update: the tiny loop may finish inside tqdm's default 0.1 s between redraws.
    monkeypatch.setattr("rnnlab.training.train.tqdm", functools.partial(tqdm, mininterval=0))
    shown = trained_weights(split)
    output = terminal.getvalue()
    for needle in ("epoch 1/1", "loss=", "acc=", "tok/s=", "valid", "gradient diagnostics", "5/5"):
        assert needle in output, needle
    assert shown.keys() == quiet.keys()
    for key in quiet:
        assert torch.equal(shown[key], quiet[key]), key  # bit for bit


def test_bars_stay_silent_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    trained_weights(tiny_split())
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""  # `dvc queue` logs and CI get only the stage's own lines
