"""The encoder's building blocks: vendor-neutral dropout, fused recurrent layers and stacks of them."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.config.params import ModelConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


class Dropout(nn.Module):
    """Inverted dropout whose mask comes from torch.rand, so every CPU draws the same mask.

    nn.Dropout draws its mask with `bernoulli_`, which on Intel CPUs uses MKL's VSL generator and
    elsewhere ATen's: the same seed gives other masks on Intel and AMD machines. `torch.rand` runs
    the same serial generator everywhere. Same behaviour as nn.Dropout otherwise (identity in eval).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return inputs
        return inputs * keep_mask(inputs.shape, self.p, inputs)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """0 with probability p, else 1 / (1 - p): multiply to drop and rescale in one step."""
    keep = torch.rand(shape, device=like.device) >= p
    return keep.to(like.dtype) / (1.0 - p)


def recurrent_layers(config: ModelConfig, input_size: int, hidden_size: int, num_layers: int) -> nn.RNNBase:
    """One fused nn.RNN / nn.LSTM / nn.GRU of `num_layers` equal layers (the cell picked by name)."""
    cell_options = {"nonlinearity": config.nonlinearity} if config.cell == "rnn" else {}
    return getattr(nn, config.cell.upper())(
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        # nn.RNN applies dropout between stacked layers only; with one layer it would warn.
        dropout=config.dropout if num_layers > 1 else 0.0,
        bidirectional=config.bidirectional,
        **cell_options,
    )


def recurrent_stack(config: ModelConfig, features: int) -> nn.Module:
    """The encoder: one fused module, or `StackedRecurrent` when `lower_layer_sizes` adds layers of other sizes."""
    if not config.lower_layer_sizes:
        return recurrent_layers(config, features, config.hidden_size, config.num_layers)
    return StackedRecurrent(config, features)


class StackedRecurrent(nn.Module):
    """Layers of different hidden sizes, bottom first; called like nn.RNN: (B, T, F) -> ((B, T, D*H), None).

    A fused nn.RNN needs one hidden size for all its layers, so each lower layer is its own module
    and the top `num_layers` stay one fused module. Between layers the model's own Dropout (same
    masks on every CPU) plays the part of nn.RNN's inter-layer dropout.
    """

    def __init__(self, config: ModelConfig, features: int) -> None:
        super().__init__()
        directions = config.directions
        inputs = [features] + [size * directions for size in config.lower_layer_sizes]
        self.layers = nn.ModuleList(
            [recurrent_layers(config, size_in, size, 1) for size_in, size in zip(inputs, config.lower_layer_sizes)]
            + [recurrent_layers(config, inputs[-1], config.hidden_size, config.num_layers)]
        )
        self.between = Dropout(config.dropout)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        outputs = inputs
        for index, layer in enumerate(self.layers):
            if index > 0:
                outputs = self.between(outputs)
            outputs, _state = layer(outputs)  # (B, T, D*H_layer)
        return outputs, None


def right_align(inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) post-padded -> pre-padded: each sequence's real steps moved to the end, padding first.

    A per-row rotation by T - length (a gather, so gradients flow back to the post-padded inputs).
    """
    batch, steps, features = inputs.shape
    shift = (steps - lengths).unsqueeze(1)  # (B, 1)
    source = (torch.arange(steps, device=inputs.device).unsqueeze(0) - shift) % steps  # (B, T)
    return inputs.gather(1, source.unsqueeze(2).expand(batch, steps, features))
