"""nn.RNN / nn.LSTM / nn.GRU forward on CPU through the fused layers of recurrent.h.

`install()` replaces the `forward` of the three classes (state_dict, parameters, checkpoints are
untouched) with one that runs each layer and direction as a single autograd node: forward over
time in C++, backward through time in C++ with one weight-gradient product per weight. Calls it
can't take (packed sequences, unbatched input, LSTM projections, GPU, other dtypes, tracing) run
torch's own forward. Forward results equal torch's (ATen's loop on the same GEMM) bit for bit;
gradients are deterministic but summed in another order than ATen's autograd, so other bits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

CLASSES: tuple[type[nn.RNNBase], ...] = (nn.RNN, nn.LSTM, nn.GRU)
_original: dict[type[nn.RNNBase], Any] = {}


class FusedLayer(torch.autograd.Function):
    """One layer-direction over a time-major sequence: (T, B, I) -> output (T, B, H), h_n, c_n."""

    @staticmethod
    def forward(ctx: Any, cell: str, reverse: bool, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
                w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor | None,
                b_hh: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        output, h_n, c_n, time_major, *saved = torch.ops.rnnlab_gemm.recurrent_forward(cell, x, h0, c0, w_ih, w_hh,
                                                                                       b_ih, b_hh, reverse)
        ctx.cell, ctx.reverse, ctx.has_bias = cell, reverse, b_ih is not None
        # time_major: the forward's contiguous copy of a batch-first x (None when x was contiguous),
        # kept so that backward's weight-gradient product reads it without copying again.
        ctx.save_for_backward(x if time_major is None else time_major, h0, c0, w_ih, w_hh, output, *saved)
        return (output, h_n, c_n) if c0 is not None else (output, h_n)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor, grad_hn: torch.Tensor,
                 grad_cn: torch.Tensor | None = None) -> tuple[torch.Tensor | None, ...]:
        x, h0, c0, w_ih, w_hh, output, *saved = ctx.saved_tensors
        grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, *grad_biases = torch.ops.rnnlab_gemm.recurrent_backward(
            ctx.cell, grad_output, grad_hn, grad_cn, x, h0, c0, w_ih, w_hh, ctx.has_bias, ctx.reverse, output, saved,
            ctx.needs_input_grad[2])  # no input gradient for a one-hot input (the order task)
        biases = grad_biases if ctx.has_bias else [None, None]
        return None, None, grad_x, grad_h0, grad_c0 if c0 is not None else None, grad_w_ih, grad_w_hh, *biases


def fusable(module: nn.RNNBase, input: Any, hx: Any) -> bool:
    """Whether the fused layers can run this call; otherwise torch's own forward does."""
    if not isinstance(input, torch.Tensor) or input.dim() != 3 or input.numel() == 0:
        return False
    if input.device.type != "cpu" or input.dtype not in (torch.float32, torch.float64):
        return False
    if getattr(module, "proj_size", 0) or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    states = hx if isinstance(hx, tuple) else (hx,)
    tensors = [*module.parameters(), *(state for state in states if state is not None)]
    return all(t.device.type == "cpu" and t.dtype == input.dtype for t in tensors)


def fused_forward(self: nn.RNNBase, input: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, Any]:
    """Drop-in nn.RNN/LSTM/GRU.forward: same arguments, same results and state_dict."""
    if not fusable(self, input, hx):
        return _original[_base(self)](self, input, hx)
    lstm = self.mode == "LSTM"
    directions = 2 if self.bidirectional else 1
    if hx is None:
        zeros = input.new_zeros(self.num_layers * directions, input.size(0 if self.batch_first else 1), self.hidden_size)
        hx = (zeros, zeros) if lstm else zeros
    self.check_forward_args(input, hx, None)
    h0, c0 = hx if lstm else (hx, None)
    sequence = input.transpose(0, 1) if self.batch_first else input  # (T, B, F), as torch's own loop reads it
    finals: list[tuple[torch.Tensor, ...]] = []
    for layer in range(self.num_layers):
        outputs = []
        for direction in range(directions):
            index, suffix = layer * directions + direction, f"_l{layer}" + ("_reverse" if direction else "")
            weights = [getattr(self, f"{name}{suffix}") for name in ("weight_ih", "weight_hh")]
            biases = [getattr(self, f"{name}{suffix}") for name in ("bias_ih", "bias_hh")] if self.bias else [None, None]
            output, *final = FusedLayer.apply(self.mode, direction == 1, sequence, h0[index],
                                              c0[index] if lstm else None, *weights, *biases)  # fmt: skip
            outputs.append(output)
            finals.append(tuple(final))
        sequence = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
        if self.dropout and self.training and layer < self.num_layers - 1:
            # Between stacked layers, as torch's own forward, but the mask from torch.rand: F.dropout's
            # bernoulli_ draws with MKL's generator on Intel CPUs and ATen's elsewhere (as the model's Dropout).
            keep = torch.rand(sequence.shape, dtype=sequence.dtype) >= self.dropout
            sequence = sequence * (keep.to(sequence.dtype) / (1.0 - self.dropout))
    output = sequence.transpose(0, 1) if self.batch_first else sequence
    h_n = torch.stack([final[0] for final in finals])
    return output, ((h_n, torch.stack([final[1] for final in finals])) if lstm else h_n)


def _base(module: nn.RNNBase) -> type[nn.RNNBase]:
    """The patched torch class a subclass inherits its forward from."""
    return next(cls for cls in type(module).__mro__ if cls in _original)


def install() -> None:
    """Route nn.RNN/LSTM/GRU.forward through the fused layers; idempotent."""
    for cls in CLASSES:
        if cls not in _original:
            _original[cls] = cls.forward
            cls.forward = fused_forward


def uninstall() -> None:
    """Give the classes their own forward back."""
    for cls, forward in list(_original.items()):
        cls.forward = forward
        del _original[cls]
