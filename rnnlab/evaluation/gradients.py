"""Gradient flow through time: ||dL/dx_t|| per time step, at initialisation and after training.

The gradient of the loss with respect to the input x_t (embedding or one-hot vector) carries the whole
backpropagation-through-time path from the readout back to t, so it shows vanishing or exploding gradients
while the fused nn.RNN/LSTM/GRU kernels stay in use. Steps are aligned by steps_back = length - 1 - t and
averaged only over the sequences that have them, so padding never blurs the profile. The loss is summed over
the batch: in eval mode the examples are independent, so each sequence's gradient is that of its own loss.
"""

from __future__ import annotations

import copy
import math
from typing import Any, cast

import torch
import torch.nn.functional as F

from rnnlab.data.arrays import Split
from rnnlab.model.classifier import Classifier, RecurrentClassifier, initial_model, members_of
from rnnlab.training.train import progress_bar

GRADIENT_SEQUENCES = 100  # first N validation sequences; one forward/backward pass per model
DECADE_DEPTHS = (50, 150)  # steps back at which the fall from the last step is reported
# An exactly-zero gradient (e.g. dead relu units) has log10 = -inf, which JSON cannot hold.
NORM_FLOOR = 1e-300


def input_gradient_norms(
    model: RecurrentClassifier, tokens: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """(B, T) tokens -> (B, T) ||dL_b/dx_{b,t}||, in eval mode (dropout off), without touching .grad."""
    model.eval()
    # A leaf copy of the inputs: the gradient stops here instead of flowing into the embedding.
    # One-hot inputs come out float32 whatever the model's dtype, hence the cast.
    dtype = next(model.parameters()).dtype
    inputs = model.embed(tokens).detach().to(dtype).requires_grad_(True)  # (B, T, F)
    logits = model.encode(inputs, lengths)  # (B, C)
    loss = F.cross_entropy(logits, labels, reduction="sum")  # per-sequence gradients, see the module doc
    (gradient,) = torch.autograd.grad(loss, inputs)  # (B, T, F)
    return gradient.norm(dim=2)  # (B, T)


def align_by_steps_back(norms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) per-step norms -> (S,) float64 means by steps_back = length - 1 - t over the sequences that have
    the step, and (S,) how many do; S = the longest length."""
    steps_back = torch.arange(norms.shape[1], device=norms.device)  # (T,)
    positions = (lengths.to(norms.device) - 1).unsqueeze(1) - steps_back.unsqueeze(0)  # (B, T): t of each steps_back
    present = positions >= 0  # (B, T); False past the sequence start
    gathered = norms.gather(1, positions.clamp(min=0)) * present  # (B, T)
    counts = present.sum(dim=0)  # (T,)
    means = gathered.sum(dim=0) / counts.clamp(min=1)  # (T,)
    deepest = int(lengths.max())
    return means[:deepest].double().cpu(), counts[:deepest].cpu()


def measure_profile(model: RecurrentClassifier, batch: Split) -> tuple[list[float], list[int]]:
    """log10 mean norm and sequence count by steps_back, on CPU in float64 so 200-step decay cannot underflow."""
    # A copy: the caller's model keeps its device and dtype. float64 keeps the fused kernels.
    probe = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    with torch.enable_grad():
        norms = input_gradient_norms(probe, batch.x, batch.lengths, batch.y)  # (B, T)
    means, counts = align_by_steps_back(norms, batch.lengths)
    return [math.log10(max(float(norm), NORM_FLOOR)) for norm in means], counts.tolist()


def profile_summary(log10_norms: list[float]) -> dict[str, float]:
    """Orders of magnitude lost from the last step to each depth (or the deepest step), and the last step's."""
    last = log10_norms[0]
    summary = {f"decades_{depth}": round(last - log10_norms[min(depth, len(log10_norms) - 1)], 4) for depth in DECADE_DEPTHS}
    summary["log10_norm_last"] = round(last, 4)  # absolute scale: exploding shows here
    return summary


def gradient_report(trained_model: Classifier, seed: int, valid: Split) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics entry {init, trained, steps_back_max, sequences} and the plot rows. An ensemble is profiled through
    its first member (each member has its own embedding: no single input to differentiate)."""
    member = cast(RecurrentClassifier, members_of(trained_model)[0])
    batch = Split(x=valid.x[:GRADIENT_SEQUENCES], lengths=valid.lengths[:GRADIENT_SEQUENCES], y=valid.y[:GRADIENT_SEQUENCES])
    # Two float64 forward/backward passes through every step: seconds for an LSTM, so a bar shows them.
    with progress_bar(2, "gradient diagnostics", unit="model") as bar:
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
            untrained = cast(RecurrentClassifier, members_of(initial_model(member.spec, seed))[0])
        initial, _counts = measure_profile(untrained, batch)
        bar.update(1)
        trained, counts = measure_profile(member, batch)
        bar.update(1)
    metrics = {
        "init": profile_summary(initial),
        "trained": profile_summary(trained),
        # Depths beyond this are read at this step instead (shorter sequences than the depth).
        "steps_back_max": len(trained) - 1,
        "sequences": len(batch),
    }
    rows = zip(initial, trained, counts, strict=True)
    return metrics, [
        {
            "steps_back": steps_back,
            "log10_grad_norm_init": round(init_log, 4),
            "log10_grad_norm_trained": round(trained_log, 4),
            "sequences": count,
        }
        for steps_back, (init_log, trained_log, count) in enumerate(rows)
    ]
