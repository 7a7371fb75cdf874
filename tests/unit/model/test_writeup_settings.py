"""The settings that reproduce the write-ups (issue 16): front padding (data.pad: pre), Keras's
initialisation (model.init: keras), the optimiser switch (train.optimizer) and layers of their own
sizes (model.lower_layer_sizes)."""

from __future__ import annotations

import pytest
import torch

from rnnlab.config.params import ModelConfig, TrainConfig, parse_params
from rnnlab.core.errors import ConfigError
from rnnlab.model.classifier import ModelSpec, RecurrentClassifier, StackedRecurrent, right_align
from rnnlab.training.train import make_optimizer, parameter_counts
from tests.unit.model.test_classifier import BATCH, CLASSES, STEPS, VOCAB_SIZE, batch, tiny_config


def build_padded(config: ModelConfig, pad: str, seed: int = 0) -> RecurrentClassifier:
    torch.manual_seed(seed)
    spec = ModelSpec(config, VOCAB_SIZE, CLASSES, STEPS, ("c0", "c1"), pad=pad)
    return RecurrentClassifier(spec).eval()


def front_padded(tokens: torch.Tensor, lengths: torch.Tensor, pad_token: int = 1) -> torch.Tensor:
    """What Keras's pad_sequences(padding='pre') makes of post-padded rows, built by hand."""
    result = torch.full_like(tokens, pad_token)
    for row, length in enumerate(lengths.tolist()):
        result[row, STEPS - length :] = tokens[row, :length]
    return result


def test_right_align_moves_real_steps_to_the_end() -> None:
    tokens, lengths = batch()
    aligned = right_align(tokens.unsqueeze(2).float(), lengths).squeeze(2).long()
    assert torch.equal(aligned, front_padded(tokens, lengths))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_pre_padding_runs_the_rnn_over_front_padded_sequences(cell: str) -> None:
    # The model stores post-padded arrays and right-aligns inside: the recurrent layer must see
    # exactly what Keras feeds it, and `last` must read the final step, the true last token.
    model = build_padded(tiny_config(cell=cell, readout="last", head_size=0), pad="pre")
    tokens, lengths = batch()
    with torch.no_grad():
        logits = model(tokens, lengths)
        outputs, _ = model.rnn(model.embed(front_padded(tokens, lengths)))
        expected = model.head(outputs[:, -1])
    assert torch.allclose(logits, expected, atol=1e-6)
    # Under front padding the write-ups' output[:, -1] is the true last token: no bug to reproduce.
    buggy = build_padded(tiny_config(cell=cell, readout="last", head_size=0, last_at_padded_end=True), pad="pre")
    with torch.no_grad():
        assert torch.allclose(buggy(tokens, lengths), logits, atol=1e-6)


@pytest.mark.parametrize("readout", ["mean", "max"])
def test_pre_padded_pooling_reads_only_the_real_steps(readout: str) -> None:
    # The padding steps run through the RNN first (as in Keras); the pools read only the last `length`.
    model = build_padded(tiny_config(readout=readout, head_size=0), pad="pre")
    tokens, lengths = batch()
    with torch.no_grad():
        outputs, _ = model.rnn(model.embed(front_padded(tokens, lengths)))
        pooled = model.readout(outputs, lengths)
    for row, length in enumerate(lengths.tolist()):
        real = outputs[row, STEPS - length :]
        expected = real.mean(dim=0) if readout == "mean" else real.amax(dim=0)
        assert torch.allclose(pooled[row], expected, atol=1e-6)


def test_concat_under_front_padding_puts_the_last_token_in_the_last_slot() -> None:
    model = build_padded(tiny_config(readout="concat", head_size=0), pad="pre")
    tokens, lengths = batch()
    with torch.no_grad():
        outputs, _ = model.rnn(model.embed(front_padded(tokens, lengths)))
        features = model.readout(outputs, lengths).view(BATCH, STEPS, -1)
    assert torch.equal(features[:, -1], outputs[:, -1])  # every review's last state in one slot
    assert torch.all(features[1, : STEPS - 1] == 0)  # row 1 (length 1): every padding step zeroed


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_keras_init(cell: str) -> None:
    model = build_padded(tiny_config(cell=cell, init="keras"), pad="post")
    assert model.embedding.weight.abs().max() <= 0.05
    hidden = model.config.hidden_size
    recurrent = model.rnn.weight_hh_l0  # (gates*H, H): orthonormal columns, as Keras's rows
    assert torch.allclose(recurrent.T @ recurrent, torch.eye(hidden), atol=1e-5)
    bias_ih, bias_hh = model.rnn.bias_ih_l0, model.rnn.bias_hh_l0
    assert torch.all(bias_hh == 0)
    if cell == "lstm":
        assert torch.all(bias_ih[hidden : 2 * hidden] == 1) and torch.all(bias_ih[:hidden] == 0)
    else:
        assert torch.all(bias_ih == 0)
    fan_in, fan_out = model.rnn.weight_ih_l0.shape[1], model.rnn.weight_ih_l0.shape[0]
    assert model.rnn.weight_ih_l0.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5  # glorot-uniform bound
    for layer in (module for module in model.head if isinstance(module, torch.nn.Linear)):
        assert torch.all(layer.bias == 0)


def test_torch_init_is_untouched_by_default() -> None:
    default, explicit = build_padded(tiny_config(), "post"), build_padded(tiny_config(init="torch"), "post")
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), explicit.state_dict().values()))


def test_optimizer_switch() -> None:
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    assert isinstance(make_optimizer(parameters, TrainConfig(optimizer="adam")), torch.optim.Adam)
    assert isinstance(make_optimizer(parameters, TrainConfig(optimizer="sgd", lr=0.1)), torch.optim.SGD)
    rmsprop = make_optimizer(parameters, TrainConfig(optimizer="rmsprop", lr=1e-3))
    assert isinstance(rmsprop, torch.optim.RMSprop)
    group = rmsprop.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"]) == (1e-3, 0.9, 1e-7)  # Keras's defaults


@pytest.mark.parametrize("section, key, value, hint", [
    ("train", "optimizer", "rmsprob", "Did you mean 'rmsprop'?"),
    ("data", "pad", "pree", "Did you mean 'pre'?"),
    ("model", "init", "kears", "Did you mean 'keras'?"),
    ("model", "lower_layer_sizes", 64, "must be a list of integers such as \\[64\\]"),
    ("model", "lower_layer_sizes", [64, 0], "must hold integers >= 1"),
    ("model", "lower_layer_size", [64], "Did you mean 'lower_layer_sizes'?"),
    ("train", "keep", "lats", "Did you mean 'last'?"),
])
def test_new_params_are_validated(section: str, key: str, value: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=hint):
        parse_params({section: {key: value}})


def test_checkpoint_spec_round_trips_the_padding_side() -> None:
    spec = ModelSpec(tiny_config(), VOCAB_SIZE, CLASSES, STEPS, ("c0", "c1"), pad="pre")
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    legacy = spec.to_dict()
    del legacy["pad"]
    assert ModelSpec.from_dict(legacy).pad == "post"  # checkpoints from before data.pad


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_lower_layers_stack_under_the_top_layer(cell: str) -> None:
    # Keras's SimpleRNN(64) -> SimpleRNN(32), scaled down: a lower layer of 7 under the top layer of 4.
    config = tiny_config(cell=cell, lower_layer_sizes=(7,), readout="last", head_size=0)
    model = build_padded(config, pad="post")
    assert isinstance(model.rnn, StackedRecurrent) and config.layer_sizes == (7, config.hidden_size)
    lower, top = model.rnn.layers
    assert (lower.hidden_size, top.input_size, top.hidden_size) == (7, 7, config.hidden_size)
    tokens, lengths = batch()
    with torch.no_grad():
        outputs, _ = top(lower(model.embed(tokens))[0])
        expected = model.head(outputs[torch.arange(BATCH), lengths - 1])  # the true last token's state
        assert torch.allclose(model(tokens, lengths), expected, atol=1e-6)
    counted = sum(parameter_counts(config, VOCAB_SIZE, CLASSES, STEPS).values())
    assert counted == sum(parameter.numel() for parameter in model.parameters())  # the memory check's count


def test_lower_layers_get_keras_init_per_layer() -> None:
    model = build_padded(tiny_config(cell="lstm", lower_layer_sizes=(7,), init="keras"), pad="post")
    for layer in model.rnn.layers:
        hidden = layer.hidden_size
        assert torch.all(layer.bias_ih_l0[hidden : 2 * hidden] == 1)  # each layer's own forget gate
        assert torch.allclose(layer.weight_hh_l0.T @ layer.weight_hh_l0, torch.eye(hidden), atol=1e-5)


def test_no_lower_layers_keeps_the_fused_module_and_checkpoint_bytes() -> None:
    # Default: the one fused module as before, and a checkpoint config without the new key, so
    # retraining the committed variants gives the same checkpoint bytes (dvc.lock hashes them).
    model = build_padded(tiny_config(), pad="post")
    assert isinstance(model.rnn, torch.nn.RNN)
    assert "lower_layer_sizes" not in model.spec.to_dict()["model"]
    stacked = ModelSpec(tiny_config(lower_layer_sizes=(7, 5)), VOCAB_SIZE, CLASSES, STEPS, ("c0", "c1"))
    assert ModelSpec.from_dict(stacked.to_dict()) == stacked


def test_keep_last_returns_the_last_epochs_weights() -> None:
    from rnnlab.data.arrays import Split
    from rnnlab.training.train import fit

    tokens, lengths = batch()
    split = Split(tokens, lengths, torch.arange(BATCH) % CLASSES)
    results = {}
    for keep in ("best", "last"):
        model = build_padded(tiny_config(), pad="post").train()
        config = TrainConfig(epochs=4, batch_size=2, lr=0.05, keep=keep)
        results[keep] = fit(model, split, split, config, torch.device("cpu"))
        final = model.state_dict()
        if keep == "last":
            assert results[keep].best_epoch == 4
            assert all(torch.equal(final[key], value) for key, value in results[keep].best_state.items())
    history = [record.valid_accuracy for record in results["best"].history]
    assert results["best"].best_epoch == 1 + history.index(max(history))  # the first best epoch
    # Same seed, same steps: keep changes which weights are kept, never the training itself.
    assert history == [record.valid_accuracy for record in results["last"].history]


def test_later_keys_are_stored_only_when_set() -> None:
    assert "keep" not in TrainConfig().to_stored_dict()
    assert TrainConfig(keep="last").to_stored_dict()["keep"] == "last"
    assert TrainConfig.from_dict(TrainConfig().to_stored_dict(), "train") == TrainConfig()
