"""Gradient flow through time (issue 5): measured ||dL/dx_t|| against an unrolled reference,
vanishing vs identity recurrences, padding-free alignment, init rebuild, evaluate wiring
(the figure: tests/unit/reporting/test_figures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from rnnlab.config.params import ModelConfig
from rnnlab.data.arrays import Split
from rnnlab.evaluation.gradients import (
    align_by_steps_back,
    gradient_report,
    input_gradient_norms,
    measure_profile,
    profile_summary,
)
from rnnlab.model.classifier import ModelSpec, RecurrentClassifier, initial_model
from rnnlab.training import train as training
from rnnlab.training.train import FitResult
from stages import evaluate as evaluate_stage
from stages import order_data
from stages import train as train_stage
from tests.support.stage_runner import write_params

REPO = Path(__file__).resolve().parents[3]
CLASSES = ("Q", "R", "S", "U")


def tiny_model(cell: str, seed: int = 0, **overrides: object) -> RecurrentClassifier:
    options = dict(cell=cell, input_encoding="embedding", embedding_dim=3, hidden_size=4, dropout=0.0, head_size=0)
    options.update(overrides)
    torch.manual_seed(seed)
    return RecurrentClassifier(ModelSpec(ModelConfig(**options), 9, len(CLASSES), 12, CLASSES)).double()


def tiny_batch(lengths: list[int], steps: int = 12, seed: int = 1) -> Split:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 9, (len(lengths), steps), generator=generator)  # (B, T)
    length_tensor = torch.tensor(lengths)
    tokens[torch.arange(steps).unsqueeze(0) >= length_tensor.unsqueeze(1)] = 0  # pad id 0
    labels = torch.randint(0, len(CLASSES), (len(lengths),), generator=generator)
    return Split(x=tokens, lengths=length_tensor, y=labels)


def unrolled_reference(model: RecurrentClassifier, batch: Split) -> torch.Tensor:
    """||dL/dx_t|| from an explicit per-step cell loop with the fused layer's weights. (B, T)"""
    config, fused = model.config, model.rnn
    cell_type = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[config.cell]
    options = {"nonlinearity": config.nonlinearity} if config.cell == "rnn" else {}
    cell = cell_type(fused.input_size, fused.hidden_size, **options).double()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, name).data.copy_(getattr(fused, f"{name}_l0"))
    inputs = model.embed(batch.x).detach().double().requires_grad_(True)  # (B, T, F)
    batch_size, steps, _ = inputs.shape
    hidden = torch.zeros(batch_size, fused.hidden_size, dtype=torch.float64)  # (B, H)
    memory = torch.zeros_like(hidden)  # LSTM cell state
    for step in range(steps):
        if config.cell == "lstm":
            new_hidden, new_memory = cell(inputs[:, step], (hidden, memory))
        else:
            new_hidden, new_memory = cell(inputs[:, step], hidden), memory
        # Past a sequence's end the state is frozen, so the loss sees its true last step only.
        running = (step < batch.lengths).unsqueeze(1)  # (B, 1)
        hidden = torch.where(running, new_hidden, hidden)
        memory = torch.where(running, new_memory, memory)
    loss = F.cross_entropy(model.head(hidden), batch.y, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, inputs)
    return gradient.norm(dim=2)  # (B, T)


@pytest.mark.parametrize(
    ("cell", "overrides"),
    [("rnn", {}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}), ("gru", {}), ("gru", {"input_encoding": "one_hot"})],
)
def test_fused_input_gradients_match_unrolled_cell_loop(cell: str, overrides: dict[str, object]) -> None:
    model = tiny_model(cell, **overrides)
    batch = tiny_batch([12, 7, 3, 10])
    measured = input_gradient_norms(model, batch.x, batch.lengths, batch.y)  # (B, T)
    reference = unrolled_reference(model, batch)
    assert measured.shape == (4, 12)
    assert reference[0].min() > 0  # the comparison is not between zeros
    torch.testing.assert_close(measured, reference, rtol=1e-9, atol=1e-12)


def rnn_with_recurrence(recurrent: torch.Tensor, nonlinearity: str, input_bias: float) -> RecurrentClassifier:
    model = tiny_model("rnn", nonlinearity=nonlinearity, embedding_dim=8, hidden_size=8)
    with torch.no_grad():
        model.rnn.weight_hh_l0.copy_(recurrent)
        model.rnn.weight_ih_l0.mul_(0.01)  # tiny inputs: the recurrence decides the gradient path
        model.rnn.bias_ih_l0.fill_(input_bias)
        model.rnn.bias_hh_l0.zero_()
    return model


def test_small_recurrent_weights_vanish_identity_recurrence_does_not() -> None:
    batch = tiny_batch([160] * 6, steps=160)
    vanishing = profile_summary(measure_profile(rnn_with_recurrence(0.1 * torch.eye(8), "tanh", 0.0), batch)[0])
    # relu with W_hh = I and a positive bias keeps every unit active: each step's Jacobian is I.
    identity = profile_summary(measure_profile(rnn_with_recurrence(torch.eye(8), "relu", 0.5), batch)[0])
    assert vanishing["decades_50"] > 10 and vanishing["decades_150"] > vanishing["decades_50"]
    assert abs(identity["decades_50"]) < 0.05 and abs(identity["decades_150"]) < 0.05


def test_alignment_by_steps_back_ignores_padding() -> None:
    padding = 99.0  # would show up in every mean if padding steps were counted
    norms = torch.tensor([[1.0, 2.0, 3.0, padding, padding], [10.0, 20.0, 30.0, 40.0, 50.0]])  # (B, T)
    means, counts = align_by_steps_back(norms, torch.tensor([3, 5]))
    assert means.tolist() == [26.5, 21.0, 15.5, 20.0, 10.0]
    assert counts.tolist() == [2, 2, 2, 1, 1]


def test_profile_unchanged_by_extra_padding() -> None:
    model = tiny_model("lstm")
    short = tiny_batch([12, 5, 8])
    padded = Split(x=F.pad(short.x, (0, 6)), lengths=short.lengths, y=short.y)  # 6 more padding steps
    model_padded = RecurrentClassifier(ModelSpec(model.config, 9, 4, 18, CLASSES)).double()
    model_padded.load_state_dict(model.state_dict())
    (first, _), (second, _) = measure_profile(model, short), measure_profile(model_padded, padded)
    assert len(first) == len(second) == 12  # deepest steps_back = longest length - 1
    assert first == pytest.approx(second, abs=1e-6)


@pytest.mark.parametrize("readout", ["last", "mean", "max", "concat"])
def test_report_has_the_same_keys_for_every_cell(readout: str) -> None:
    batch = tiny_batch([12, 7, 3, 10])
    keys = set()
    for cell in ("rnn", "lstm", "gru"):
        metrics, rows = gradient_report(tiny_model(cell, readout=readout).float(), 0, batch)
        keys.add(json.dumps({k: sorted(v) if isinstance(v, dict) else None for k, v in metrics.items()}, sort_keys=True))
        assert [row["steps_back"] for row in rows] == list(range(12))
    assert len(keys) == 1


def small_order_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["order"]["data"].update(train_size=40, valid_size=20, test_size=20, min_length=30, max_length=36,
                                   early_window=[3, 6], late_window=[20, 25])
    params["order"]["train"].update(epochs=1, batch_size=20, seed=7, device="cpu")
    write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    order_data.main(["--out", "data/order"])
    return tmp_path


def test_initial_model_is_the_one_training_started_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_order_project(tmp_path, monkeypatch)
    captured: dict[str, dict[str, torch.Tensor]] = {}

    def fake_fit(model: nn.Module, *args: object, **kwargs: object) -> FitResult:
        captured["state"] = {key: value.clone() for key, value in model.state_dict().items()}
        return FitResult(history=[], best_state=captured["state"], best_epoch=0, diverged=False, epoch_seconds=[])

    monkeypatch.setattr(training, "fit", fake_fit)
    train_stage.main(["--variant", "order_gru", "--data", "data/order", "--model", "m.pt", "--history", "live"])
    spec = ModelSpec.from_dict(torch.load("m.pt", weights_only=True)["config"])
    rebuilt = initial_model(spec, seed=7).state_dict()
    assert rebuilt.keys() == captured["state"].keys()
    for key, value in captured["state"].items():
        torch.testing.assert_close(rebuilt[key], value, rtol=0, atol=0)
    assert not torch.equal(initial_model(spec, seed=8).state_dict()["rnn.weight_hh_l0"], rebuilt["rnn.weight_hh_l0"])


def test_evaluate_writes_gradient_metrics_and_plot_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_order_project(tmp_path, monkeypatch)
    monkeypatch.setenv("RNNLAB_THREADS", "1")
    train_stage.main(["--variant", "order_rnn", "--data", "data/order", "--model", "m.pt", "--history", "live"])
    evaluate_stage.main(["--variant", "order_rnn", "--data", "data/order", "--model", "m.pt",
                         "--metrics", "metrics.json", "--details", "details.json", "--predictions", "c.csv", "--gradients", "g.json"])
    gradient = json.loads(Path("details.json").read_text())["gradient"]
    assert set(gradient) == {"init", "trained", "steps_back_max", "sequences"}
    assert set(gradient["init"]) == set(gradient["trained"]) == {"decades_50", "decades_150", "log10_norm_last"}
    rows = json.loads(Path("g.json").read_text())
    assert len(rows) == gradient["steps_back_max"] + 1 <= 36
    assert gradient["sequences"] == 20
    assert rows[0]["log10_grad_norm_trained"] != rows[0]["log10_grad_norm_init"]  # trained weights differ
    assert gradient["init"]["decades_50"] == pytest.approx(rows[0]["log10_grad_norm_init"] - rows[-1]["log10_grad_norm_init"], abs=1e-3)
