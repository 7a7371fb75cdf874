"""One recurrent classifier for every study, the cell picked by name from torch.nn (`model.cell`).

tokens (B, T) -> inputs (B, T, F) -> nn.RNN/LSTM/GRU -> outputs (B, T, D*H) -> readout (B, R) -> head -> logits (B, C)

LSTM's (h, c) state stays inside `encode`, so training never branches on the cell. The readout gathers at
`length - 1` and masks padding: `pack_padded_sequence` does the same but measured several times slower on CPU.
A checkpoint is `{state_dict, config, ...}`; the model is rebuilt from the stored config on load.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.config.params import ModelConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import atomic_path

GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # weight blocks per recurrent layer


def readout_size(config: ModelConfig, sequence_length: int) -> int:
    state = config.hidden_size * config.directions
    return {"concat": state * sequence_length, "mean_max": 2 * state}.get(config.readout, state)


def parameter_counts(model: ModelConfig, input_size: int, num_classes: int, sequence_length: int) -> dict[str, int]:
    """Parameters of one network by part (embedding, recurrent, head), known before anything is allocated."""
    features = model.embedding_dim if model.input_encoding == "embedding" else input_size
    recurrent, layer_input = 0, features
    for size in model.layer_sizes:
        # weight_ih, weight_hh and two bias vectors per direction
        recurrent += model.directions * GATES[model.cell] * size * (layer_input + size + 2)
        layer_input = size * model.directions
    widths = [readout_size(model, sequence_length)] + ([model.head_size] if model.head_size > 0 else []) + [num_classes]
    head = sum((fan_in + 1) * fan_out for fan_in, fan_out in pairwise(widths))
    embedding = input_size * model.embedding_dim if model.input_encoding == "embedding" else 0
    return {"embedding": embedding, "recurrent": recurrent, "head": head}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: its config plus what the dataset fixes."""

    model: ModelConfig
    input_size: int
    num_classes: int
    sequence_length: int
    class_names: tuple[str, ...]
    pad: str = "post"  # data.pad of the arrays the model reads (always stored post-padded)

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "model": self.model.to_stored_dict(), "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelSpec:
        """The stored spec, checked (ValueError): whole sizes >= 1 and one string name per class."""
        sizes = {key: raw[key] for key in ("input_size", "num_classes", "sequence_length")}
        names = raw["class_names"]
        if not all(type(value) is int and value >= 1 for value in sizes.values()):
            raise ValueError(f"sizes {sizes} are not whole numbers >= 1")
        if not isinstance(names, list) or len(names) != sizes["num_classes"] or not all(isinstance(name, str) for name in names):
            raise ValueError(f"class_names {names!r} are not {sizes['num_classes']} strings")
        model = ModelConfig.from_dict(raw["model"], "checkpoint.config.model")  # a LATER key it lacks takes its default
        return cls(model, class_names=tuple(names), pad=str(raw.get("pad", "post")), **sizes)


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}


class Dropout(nn.Module):
    """nn.Dropout with masks from torch.rand: nn.Dropout's `bernoulli_` uses MKL's generator on Intel CPUs
    and ATen's elsewhere (other masks for one seed); torch.rand is the same serial generator everywhere.
    `whole_steps` drops whole time steps of (B, T, F) inputs (word dropout: mask (B, T, 1))."""

    def __init__(self, p: float, whole_steps: bool = False) -> None:
        super().__init__()
        self.p = p
        self.whole_steps = whole_steps

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return inputs
        return inputs * keep_mask(inputs.shape[:2] + (1,) if self.whole_steps else inputs.shape, self.p, inputs)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """0 with probability p, else 1 / (1 - p): multiply to drop and rescale in one step."""
    keep = torch.rand(shape, device=like.device) >= p
    return keep.to(like.dtype) / (1.0 - p)


def recurrent_layers(config: ModelConfig, input_size: int, hidden_size: int, num_layers: int) -> nn.RNNBase:
    """One fused nn.RNN / nn.LSTM / nn.GRU of `num_layers` equal layers (the cell picked by name)."""
    options = {"nonlinearity": config.nonlinearity} if config.cell == "rnn" else {}
    dropout = config.dropout if num_layers > 1 else 0.0  # between stacked layers only: with one layer it would warn
    cell = getattr(nn, config.cell.upper())
    return cell(
        input_size, hidden_size, num_layers, batch_first=True, dropout=dropout, bidirectional=config.bidirectional, **options
    )


class StackedRecurrent(nn.Module):
    """`lower_layer_sizes` (one module each, bottom first) under the fused top `num_layers`, which need one
    hidden size; called like nn.RNN: (B, T, F) -> ((B, T, D*H), None). Dropout between them as nn.RNN's."""

    def __init__(self, config: ModelConfig, features: int) -> None:
        super().__init__()
        inputs = [features] + [size * config.directions for size in config.lower_layer_sizes]
        sizes = [*config.lower_layer_sizes, config.hidden_size]
        counts = [1] * len(config.lower_layer_sizes) + [config.num_layers]  # only the top module stacks layers
        self.layers = nn.ModuleList(recurrent_layers(config, *shape) for shape in zip(inputs, sizes, counts, strict=True))
        self.between = Dropout(config.dropout)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        outputs, _state = self.layers[0](inputs)  # (B, T, D*H_layer)
        for layer in self.layers[1:]:
            outputs, _state = layer(self.between(outputs))
        return outputs, None


def right_align(inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) post-padded -> pre-padded: a per-row rotation by T - length (a gather: gradients flow back)."""
    batch, steps, features = inputs.shape
    shift = (steps - lengths).unsqueeze(1)  # (B, 1)
    source = (torch.arange(steps, device=inputs.device).unsqueeze(0) - shift) % steps  # (B, T)
    return inputs.gather(1, source.unsqueeze(2).expand(batch, steps, features))


class RecurrentClassifier(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        config = spec.model
        self.spec = spec
        self.config = config
        embedded = config.input_encoding == "embedding"
        self.embedding = nn.Embedding(spec.input_size, config.embedding_dim) if embedded else None
        features = config.embedding_dim if embedded else spec.input_size
        self.word_dropout = Dropout(config.word_dropout, whole_steps=True)
        self.embedding_dropout = Dropout(config.embedding_dropout)
        self.rnn: nn.Module = (
            StackedRecurrent(config, features)
            if config.lower_layer_sizes
            else recurrent_layers(config, features, config.hidden_size, config.num_layers)
        )
        width = readout_size(config, spec.sequence_length)
        hidden = [nn.Linear(width, config.head_size), ACTIVATIONS[config.activation]()] if config.head_size > 0 else []
        # The dropout is applied, unlike in the write-up whose dropout result was discarded.
        self.head = nn.Sequential(*hidden, Dropout(config.dropout), nn.Linear(config.head_size or width, spec.num_classes))
        if config.init == "keras":
            keras_init(self)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, F) inputs; apart from `encode` so gradients w.r.t. inputs can be measured."""
        if self.embedding is None:
            return F.one_hot(tokens, self.spec.input_size).float()
        return self.embedding(tokens)

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.spec.pad == "pre":
            inputs = right_align(inputs, lengths)  # (B, T, F): padding first, as Keras pad_sequences
        outputs, _state = self.rnn(self.embedding_dropout(self.word_dropout(inputs)))  # (B, T, D*H); _state is h or (h, c)
        return self.head(self.readout(outputs, lengths))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encode(self.embed(tokens), lengths)

    def readout(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D*H) -> (B, R), reading the real steps only (padding is masked out)."""
        batch, steps, _ = outputs.shape
        config = self.config
        if config.readout == "last" and config.last_at_padded_end:
            return outputs[:, -1]  # the write-ups' bug: a padding step for every short review
        first = steps - lengths if self.spec.pad == "pre" else torch.zeros_like(lengths)  # (B,) first real step
        if config.readout == "last":
            hidden = config.hidden_size
            index = (first + lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden)  # (B, 1, H)
            forward_last = outputs[..., :hidden].gather(1, index).squeeze(1)  # (B, H)
            if config.directions == 1:
                return forward_last
            # The backward direction has read the whole sequence when it reaches the first real step.
            first_index = first.view(-1, 1, 1).expand(-1, 1, hidden)  # (B, 1, H)
            return torch.cat([forward_last, outputs[..., hidden:].gather(1, first_index).squeeze(1)], dim=1)
        positions = torch.arange(steps, device=outputs.device)
        valid = ((positions >= first[:, None]) & (positions < (first + lengths)[:, None])).unsqueeze(2)  # (B, T, 1)
        if config.readout == "concat":  # every step's state, padding zeroed so it carries no signal: (B, T*D*H)
            return (outputs * valid).reshape(batch, -1)
        pools = []  # mean_max: ULMFiT's concat pooling
        if config.readout in ("mean", "mean_max"):
            pools.append((outputs * valid).sum(dim=1) / lengths.clamp(min=1).unsqueeze(1).to(outputs.dtype))
        if config.readout in ("max", "mean_max"):
            pools.append(outputs.masked_fill(~valid, float("-inf")).amax(dim=1))
        return torch.cat(pools, dim=1)


def orthogonal_(tensor: torch.Tensor) -> torch.Tensor:
    """nn.init.orthogonal_ without LAPACK, whose QR runs MKL's per-CPU code (other bits on Intel): the same
    draws and, in exact arithmetic, the same Q, by Gram-Schmidt in float64 twice over ("twice is enough")."""
    rows, cols = tensor.shape[0], tensor.numel() // tensor.shape[0]
    draws = tensor.new_empty((rows, cols)).normal_(0, 1).double()
    columns = draws.t() if rows < cols else draws  # (n, k), n >= k: orthonormal columns
    q = torch.zeros_like(columns)
    for j in range(columns.shape[1]):
        v = columns[:, j].clone()
        for _ in range(2):
            v -= q[:, :j] @ (q[:, :j].t() @ v)
        q[:, j] = v / torch.linalg.vector_norm(v)
    with torch.no_grad():
        tensor.view(rows, cols).copy_(q.t() if rows < cols else q)
    return tensor


def keras_init(model: RecurrentClassifier) -> None:
    """Keras's default initialisers, to reproduce Keras write-ups: embedding U(-0.05, 0.05), glorot-uniform input
    and dense kernels, orthogonal recurrent kernels, zero biases, LSTM forget-gate bias 1. Torch's weights are
    Keras's kernels transposed: the same fans, and orthogonal (gates*H, H) columns as Keras's rows."""
    with torch.no_grad():
        if model.embedding is not None:
            nn.init.uniform_(model.embedding.weight, -0.05, 0.05)
        for layers in (module for module in model.rnn.modules() if isinstance(module, nn.RNNBase)):
            hidden = layers.hidden_size
            for name, parameter in layers.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(parameter)
                elif name.startswith("weight_hh"):
                    orthogonal_(parameter)
                else:
                    nn.init.zeros_(parameter)
                    if model.config.cell == "lstm" and name.startswith("bias_ih"):
                        parameter[hidden : 2 * hidden] = 1.0  # torch's gate order: input, forget, cell, output
        for module in model.head.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)


class EnsembleClassifier(nn.Module):
    """`model.members` RecurrentClassifiers, each trained on its own loss; the output is the log of their mean
    class probabilities, so the loss, `predict` and the metrics treat the ensemble like one classifier."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.config = spec.model
        # Member 0 gets the weights a single network seeded the same way would get.
        self.members = nn.ModuleList(RecurrentClassifier(spec) for _ in range(spec.model.members))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        log_probabilities = torch.stack([member(tokens, lengths).log_softmax(dim=1) for member in self.members])  # (M, B, C)
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(self.members))  # (B, C)


Classifier = RecurrentClassifier | EnsembleClassifier


def build_model(spec: ModelSpec) -> Classifier:
    return EnsembleClassifier(spec) if spec.model.members > 1 else RecurrentClassifier(spec)


def initial_model(spec: ModelSpec, seed: int) -> Classifier:
    """The untrained model of `seed`, its weights the first draws of torch's global generator (training goes on
    drawing dropout masks from it)."""
    torch.manual_seed(seed)
    return build_model(spec)


def members_of(model: nn.Module) -> list[nn.Module]:
    return list(model.members) if isinstance(model, EnsembleClassifier) else [model]


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def save_checkpoint(path: Path, model: Classifier, state_dict: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
    # Through JSON text: pickle memoizes string objects, so equal dicts built from other sources gave other bytes.
    metadata = json.loads(json.dumps({"config": model.spec.to_dict(), **extra}))
    # Through a handle: given a path, torch names the zip's inner folder after the random temporary name.
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
        torch.save({"state_dict": state_dict, **metadata}, handle)


def load_checkpoint(path: Path, expected: ModelConfig | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model from the checkpoint's own config, refusing one that differs from `expected`. Checked
    before the model is built: the sizes imply exactly the weights held (absurd sizes allocate nothing)."""
    if not path.is_file():
        raise UserError(f"Checkpoint {path} not found; train it first (`dvc repro`).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        spec = ModelSpec.from_dict(checkpoint["config"])
        state_dict = checkpoint["state_dict"]
        if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
            raise ValueError("its state_dict is not a dict of tensors")
        counts = parameter_counts(spec.model, spec.input_size, spec.num_classes, spec.sequence_length)
        implied, held = sum(counts.values()) * spec.model.members, sum(value.numel() for value in state_dict.values())
        if held != implied:
            raise ValueError(f"its config implies {implied:,} weights but it holds {held:,}")
        if not all(torch.isfinite(value).all() for value in state_dict.values() if value.is_floating_point()):
            raise ValueError("it holds NaN or infinite weights: a diverged or damaged model")
    except pickle.UnpicklingError as error:
        raise UserError(
            f"{path} holds Python objects besides tensors and plain data, so it was refused unread "
            f"(checkpoints load with weights_only=True). Use a checkpoint written by the train stage: `dvc repro`."
        ) from error
    except (KeyError, TypeError, ValueError, RuntimeError, EOFError, OSError) as error:  # OSError: a truncated zip
        problem = f"no {error} entry" if isinstance(error, KeyError) else str(error)
        raise UserError(f"{path} is not an RNN Lab checkpoint or is damaged ({problem}); retrain with `dvc repro`.") from error
    if expected is not None and expected != spec.model:
        stored, wanted = spec.model.to_dict(), expected.to_dict()
        changes = ", ".join(
            f"{key}: checkpoint {stored[key]!r} vs params {wanted[key]!r}" for key in stored if stored[key] != wanted[key]
        )
        raise UserError(f"{path} was trained with a different model config ({changes}). Retrain it with `dvc repro`.")
    model = build_model(spec)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise UserError(f"{path}: weights do not fit the stored config ({error}); retrain with `dvc repro`.") from error
    return model, checkpoint
