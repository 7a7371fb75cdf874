"""Unit tests for the recurrent classifier: shapes, readouts that ignore padding, logits."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
from torch import nn

from rnnlab.config.params import ModelConfig
from rnnlab.model.classifier import ModelSpec, RecurrentClassifier, count_parameters

VOCAB_SIZE, STEPS, BATCH, CLASSES, HIDDEN = 11, 7, 4, 2, 8
CELLS = ("rnn", "lstm", "gru")
READOUTS = ("last", "mean", "max", "mean_max", "concat")


def tiny_config(**overrides: object) -> ModelConfig:
    base = ModelConfig(embedding_dim=6, hidden_size=HIDDEN, head_size=5, dropout=0.0)
    return replace(base, **overrides)


def build(config: ModelConfig, num_classes: int = CLASSES, seed: int = 0) -> RecurrentClassifier:
    torch.manual_seed(seed)
    spec = ModelSpec(config, VOCAB_SIZE, num_classes, STEPS, tuple(f"c{i}" for i in range(num_classes)))
    return RecurrentClassifier(spec).eval()


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, VOCAB_SIZE, (BATCH, STEPS), generator=generator)
    lengths = torch.tensor([STEPS, 1, 3, 5])
    tokens[torch.arange(STEPS).unsqueeze(0) >= lengths.unsqueeze(1)] = 1  # <pad>
    return tokens, lengths


def scramble_padding(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Replace every step at or after `length` by other tokens; real steps stay the same."""
    changed = tokens.clone()
    after = torch.arange(STEPS).unsqueeze(0) >= lengths.unsqueeze(1)
    changed[after] = (torch.arange(int(after.sum())) % (VOCAB_SIZE - 2)) + 2
    return changed


@pytest.mark.parametrize("cell,readout", list(itertools.product(CELLS, READOUTS)))
def test_forward_shape_for_every_cell_and_readout(cell: str, readout: str) -> None:
    model = build(tiny_config(cell=cell, readout=readout))
    tokens, lengths = batch()
    logits = model(tokens, lengths)
    assert logits.shape == (BATCH, CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("readout", READOUTS)
def test_readout_ignores_steps_after_length(cell: str, readout: str) -> None:
    model = build(tiny_config(cell=cell, readout=readout))
    tokens, lengths = batch()
    changed = scramble_padding(tokens, lengths)
    with torch.no_grad():
        assert torch.equal(model(tokens, lengths), model(changed, lengths))


@pytest.mark.parametrize("readout", ("last", "mean", "max"))
def test_readout_without_mask_would_notice_padding(readout: str) -> None:
    # Guards the test above: the scrambled steps do change the unmasked RNN outputs.
    model = build(tiny_config(readout=readout))
    tokens, lengths = batch()
    full = torch.full_like(lengths, STEPS)
    with torch.no_grad():
        assert not torch.allclose(model(tokens, full), model(scramble_padding(tokens, lengths), full))


def test_last_at_padded_end_reads_the_padding_step() -> None:
    model = build(tiny_config(readout="last", last_at_padded_end=True))
    tokens, lengths = batch()
    with torch.no_grad():
        original, changed = model(tokens, lengths), model(scramble_padding(tokens, lengths), lengths)
    short = lengths < STEPS
    assert not torch.allclose(original[short], changed[short])
    assert torch.equal(original[~short], changed[~short])  # a full-length review has no padding


def test_last_gathers_the_state_at_length_minus_one() -> None:
    model = build(tiny_config(readout="last"))
    tokens, lengths = batch()
    with torch.no_grad():
        outputs, _ = model.rnn(model.embed(tokens))
        expected = outputs[torch.arange(BATCH), lengths - 1]
        assert torch.equal(model.readout(outputs, lengths), expected)


def test_mean_and_max_pool_only_real_steps() -> None:
    outputs = torch.randn(BATCH, STEPS, HIDDEN)
    lengths = torch.tensor([STEPS, 1, 3, 5])
    for readout, pool in (("mean", lambda o: o.mean(dim=0)), ("max", lambda o: o.amax(dim=0))):
        model = build(tiny_config(readout=readout))
        pooled = model.readout(outputs, lengths)
        for row, length in enumerate(lengths.tolist()):
            assert torch.allclose(pooled[row], pool(outputs[row, :length])), readout


def test_mean_max_puts_both_pools_side_by_side() -> None:
    outputs = torch.randn(BATCH, STEPS, HIDDEN)
    lengths = torch.tensor([STEPS, 1, 3, 5])
    model = build(tiny_config(readout="mean_max", head_size=0))
    assert model.head[-1].in_features == 2 * HIDDEN
    pooled = model.readout(outputs, lengths)
    assert torch.equal(pooled[:, :HIDDEN], build(tiny_config(readout="mean")).readout(outputs, lengths))
    assert torch.equal(pooled[:, HIDDEN:], build(tiny_config(readout="max")).readout(outputs, lengths))


def test_word_dropout_zeroes_whole_steps_in_training_only() -> None:
    model = build(tiny_config(word_dropout=0.5))
    inputs = torch.randn(64, STEPS, 6)
    with torch.no_grad():
        assert torch.equal(model.word_dropout(inputs), inputs)  # eval: identity
        model.train()
        torch.manual_seed(1)
        dropped = model.word_dropout(inputs)
    zeroed = (dropped == 0).all(dim=2)  # (B, T): a step is zeroed in every feature or in none
    kept = ~zeroed
    assert torch.allclose(dropped[kept], inputs[kept] * 2.0)  # survivors scaled by 1 / (1 - p)
    assert 0.4 < zeroed.float().mean().item() < 0.6
    assert torch.equal(build(tiny_config()).train().word_dropout(inputs), inputs)  # p = 0: untouched


def test_word_dropout_changes_training_outputs() -> None:
    tokens, lengths = batch()
    model = build(tiny_config(word_dropout=0.5)).train()
    with torch.no_grad():
        torch.manual_seed(0)
        first = model(tokens, lengths)
        torch.manual_seed(1)
        assert not torch.allclose(first, model(tokens, lengths))


@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_last_reads_forward_last_and_backward_first(cell: str) -> None:
    model = build(tiny_config(cell=cell, bidirectional=True, readout="last"))
    tokens, lengths = batch()
    with torch.no_grad():
        outputs, _ = model.rnn(model.embed(tokens))
        readout = model.readout(outputs, lengths)
        assert readout.shape == (BATCH, 2 * HIDDEN)
        assert torch.equal(readout[:, :HIDDEN], outputs[torch.arange(BATCH), lengths - 1, :HIDDEN])
        assert torch.equal(readout[:, HIDDEN:], outputs[:, 0, HIDDEN:])
        assert model(tokens, lengths).shape == (BATCH, CLASSES)


@pytest.mark.parametrize("bidirectional", (False, True))
def test_concat_readout_size(bidirectional: bool) -> None:
    model = build(tiny_config(readout="concat", bidirectional=bidirectional, head_size=0))
    directions = 2 if bidirectional else 1
    assert model.head[-1].in_features == STEPS * HIDDEN * directions
    tokens, lengths = batch()
    with torch.no_grad():
        outputs, _ = model.rnn(model.embed(tokens))
        assert model.readout(outputs, lengths).shape == (BATCH, STEPS * HIDDEN * directions)


def test_one_hot_encoding_feeds_vocabulary_sized_inputs() -> None:
    model = build(tiny_config(input_encoding="one_hot"))
    tokens, lengths = batch()
    assert model.embedding is None
    assert model.rnn.input_size == VOCAB_SIZE
    inputs = model.embed(tokens)
    assert inputs.shape == (BATCH, STEPS, VOCAB_SIZE)
    assert torch.equal(inputs.argmax(dim=2), tokens) and torch.equal(inputs.sum(dim=2), torch.ones(BATCH, STEPS))
    assert model(tokens, lengths).shape == (BATCH, CLASSES)


def test_head_size_zero_maps_readout_to_classes_directly() -> None:
    model = build(tiny_config(head_size=0), num_classes=4)
    linear_layers = [module for module in model.head if isinstance(module, nn.Linear)]
    assert len(linear_layers) == 1 and linear_layers[0].in_features == HIDDEN
    tokens, lengths = batch()
    assert model(tokens, lengths).shape == (BATCH, 4)


def test_head_uses_the_configured_activation() -> None:
    for name, module_type in (("relu", nn.ReLU), ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh), ("leaky_relu", nn.LeakyReLU)):
        model = build(tiny_config(activation=name))
        assert any(isinstance(module, module_type) for module in model.head), name


def test_cell_options_reach_the_fused_kernel() -> None:
    assert isinstance(build(tiny_config(cell="lstm")).rnn, nn.LSTM)
    assert isinstance(build(tiny_config(cell="gru")).rnn, nn.GRU)
    relu_rnn = build(tiny_config(cell="rnn", nonlinearity="relu", num_layers=2, dropout=0.3)).rnn
    assert isinstance(relu_rnn, nn.RNN) and relu_rnn.nonlinearity == "relu"
    assert relu_rnn.num_layers == 2 and relu_rnn.dropout == pytest.approx(0.3)


def test_outputs_are_logits_not_probabilities() -> None:
    model = build(tiny_config(), num_classes=3)
    assert isinstance(model.head[-1], nn.Linear)  # CrossEntropyLoss applies the softmax itself
    with torch.no_grad():
        model.head[-1].bias.fill_(5.0)  # probabilities could never exceed 1
        logits = model(*batch())
    assert (logits > 1.0).all()
    assert not torch.allclose(logits.sum(dim=1), torch.ones(BATCH))


def test_parameter_count_matches_the_modules() -> None:
    model = build(tiny_config(head_size=0))
    embedding = VOCAB_SIZE * 6
    rnn = HIDDEN * 6 + HIDDEN * HIDDEN + 2 * HIDDEN
    head = HIDDEN * CLASSES + CLASSES
    assert count_parameters(model) == embedding + rnn + head


@pytest.mark.parametrize("shape", [(16, 4), (4, 16), (12, 12), (1024, 256)])
def test_orthogonal_init_is_torchs_without_lapack(shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras init's recurrent weights: the same draws and matrix as nn.init.orthogonal_, with no MKL QR."""
    from rnnlab.model.classifier import orthogonal_

    torch.manual_seed(0)
    expected = torch.nn.init.orthogonal_(torch.empty(shape))
    monkeypatch.setattr(torch.linalg, "qr", lambda *args, **kwargs: pytest.fail("LAPACK QR used"))
    torch.manual_seed(0)
    ours = orthogonal_(torch.empty(shape))
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-6)
    rows, cols = shape
    gram = ours.t() @ ours if rows >= cols else ours @ ours.t()
    torch.testing.assert_close(gram, torch.eye(min(shape)), rtol=0, atol=1e-5)
