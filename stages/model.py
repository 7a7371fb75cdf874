"""One recurrent classifier for every study; the cell is picked by one switch (`model.cell`).

tokens (B, T) -> inputs (B, T, F) -> fused nn.RNN/LSTM/GRU (or a stack of them) -> outputs (B, T, D*H)
               -> readout (B, R) -> head -> logits (B, C)

Cell differences (LSTM's (h, c) state) stay inside `encode`, so training never branches on the
cell type. The readout reads the true last token by gathering at `length - 1` and masks padding
in mean/max pooling; `pack_padded_sequence` would do the same but measured several times slower
on CPU. The head returns logits: CrossEntropyLoss applies the softmax itself.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stages.common import StageError
from stages.config import ConfigError, ModelConfig, model_from_dict
from stages.dataset import Meta

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


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: its config plus what the dataset fixes."""

    model: ModelConfig
    input_size: int
    num_classes: int
    sequence_length: int
    class_names: tuple[str, ...]
    pad: str = "post"  # data.pad of the arrays the model reads (always stored post-padded)

    @classmethod
    def from_meta(cls, model: ModelConfig, meta: Meta) -> "ModelSpec":
        return cls(model, meta.input_size, meta.num_classes, meta.sequence_length, meta.class_names, meta.pad)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_stored_dict(),
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "sequence_length": self.sequence_length,
            "class_names": list(self.class_names),
            "pad": self.pad,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ModelSpec":
        return cls(
            model=model_from_dict(raw["model"]),
            input_size=int(raw["input_size"]),
            num_classes=int(raw["num_classes"]),
            sequence_length=int(raw["sequence_length"]),
            class_names=tuple(raw["class_names"]),
            pad=str(raw.get("pad", "post")),  # checkpoints from before data.pad existed
        )


class RecurrentClassifier(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        config = spec.model
        self.spec = spec
        self.config = config
        if config.input_encoding == "embedding":
            self.embedding: nn.Module | None = nn.Embedding(spec.input_size, config.embedding_dim)
            features = config.embedding_dim
        else:
            self.embedding = None
            features = spec.input_size
        self.embedding_dropout = Dropout(config.embedding_dropout)
        self.rnn = recurrent_stack(config, features)
        self.directions = 2 if config.bidirectional else 1
        state_size = config.hidden_size * self.directions
        readout_size = {"concat": state_size * spec.sequence_length, "mean_max": 2 * state_size}.get(config.readout, state_size)
        if config.head_size > 0:
            self.head = nn.Sequential(
                nn.Linear(readout_size, config.head_size),
                ACTIVATIONS[config.activation](),
                Dropout(config.dropout),  # applied, unlike the write-up whose dropout result was discarded
                nn.Linear(config.head_size, spec.num_classes),
            )
        else:
            self.head = nn.Sequential(Dropout(config.dropout), nn.Linear(readout_size, spec.num_classes))
        if config.init == "keras":
            keras_init(self)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, F) inputs; split out so gradients w.r.t. inputs can be measured."""
        if self.embedding is None:
            return F.one_hot(tokens, self.spec.input_size).float()
        return self.embedding(tokens)

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) post-padded inputs, (B,) lengths -> (B, C) logits."""
        if self.spec.pad == "pre":
            inputs = right_align(inputs, lengths)  # (B, T, F): padding first, as Keras pad_sequences
        outputs, _state = self.rnn(self.embedding_dropout(self.word_dropout(inputs)))  # (B, T, D*H); _state is h or (h, c)
        return self.head(self.readout(outputs, lengths))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encode(self.embed(tokens), lengths)

    def word_dropout(self, inputs: torch.Tensor) -> torch.Tensor:
        """Zero whole time steps of (B, T, F) inputs in training, scaling the kept ones by 1 / (1 - p)."""
        if not self.training or self.config.word_dropout == 0.0:
            return inputs
        return inputs * keep_mask(inputs.shape[:2] + (1,), self.config.word_dropout, inputs)  # mask (B, T, 1)

    def first_step(self, lengths: torch.Tensor, steps: int) -> torch.Tensor:
        """(B,) index of each sequence's first real step: 0 when post-padded, T - length when pre-padded."""
        return steps - lengths if self.spec.pad == "pre" else torch.zeros_like(lengths)

    def readout(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = outputs.shape
        readout = self.config.readout
        if readout == "last":
            return self._last(outputs, lengths)
        positions = torch.arange(steps, device=outputs.device)
        first = self.first_step(lengths, steps)
        valid = (positions.unsqueeze(0) >= first.unsqueeze(1)) & (positions.unsqueeze(0) < (first + lengths).unsqueeze(1))  # (B, T)
        if readout in ("mean", "max"):
            return self._pool(outputs, lengths, valid, readout)
        if readout == "mean_max":  # (B, 2*D*H): both pools side by side, as in ULMFiT's concat pooling
            return torch.cat([self._pool(outputs, lengths, valid, "mean"), self._pool(outputs, lengths, valid, "max")], dim=1)
        # concat: every step's state, padded steps zeroed so padding carries no signal. (B, T*D*H)
        return (outputs * valid.unsqueeze(2)).reshape(batch, -1)

    @staticmethod
    def _pool(outputs: torch.Tensor, lengths: torch.Tensor, valid: torch.Tensor, kind: str) -> torch.Tensor:
        """Mean or max over the real steps only: (B, T, D*H) -> (B, D*H); `valid` is the (B, T) mask."""
        if kind == "mean":
            summed = (outputs * valid.unsqueeze(2)).sum(dim=1)
            return summed / lengths.clamp(min=1).unsqueeze(1).to(outputs.dtype)
        return outputs.masked_fill(~valid.unsqueeze(2), float("-inf")).amax(dim=1)

    def _last(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.config.last_at_padded_end:
            return outputs[:, -1]  # the write-ups' bug: a padding step for every short review
        hidden = self.config.hidden_size
        first = self.first_step(lengths, outputs.shape[1])  # (B,)
        index = (first + lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden)  # (B, 1, H)
        forward_last = outputs[..., :hidden].gather(1, index).squeeze(1)  # (B, H)
        if self.directions == 1:
            return forward_last
        # The backward direction has read the whole sequence when it reaches the first real step.
        first_index = first.view(-1, 1, 1).expand(-1, 1, hidden)  # (B, 1, H)
        return torch.cat([forward_last, outputs[..., hidden:].gather(1, first_index).squeeze(1)], dim=1)


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
        directions = 2 if config.bidirectional else 1
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


def keras_init(model: "RecurrentClassifier") -> None:
    """Keras's default initialisers, for reproducing Keras write-ups in PyTorch.

    Keras: Embedding U(-0.05, 0.05); input kernels glorot-uniform over (input, gates*units);
    recurrent kernels orthogonal over (units, gates*units); Dense glorot-uniform; biases zero; LSTM
    unit_forget_bias (forget-gate bias 1). Torch's weights are Keras's kernels transposed: the same
    fans, and orthogonal_ on (gates*H, H) gives the orthonormal columns Keras's rows have.
    """
    with torch.no_grad():
        if model.embedding is not None:
            nn.init.uniform_(model.embedding.weight, -0.05, 0.05)
        for layers in (module for module in model.rnn.modules() if isinstance(module, nn.RNNBase)):
            hidden = layers.hidden_size
            for name, parameter in layers.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(parameter)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(parameter)
                else:
                    nn.init.zeros_(parameter)
                    if model.config.cell == "lstm" and name.startswith("bias_ih"):
                        parameter[hidden : 2 * hidden] = 1.0  # torch's gate order: input, forget, cell, output
        for module in model.head.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)


class EnsembleClassifier(nn.Module):
    """`model.members` RecurrentClassifiers; the output is the log of their mean class probabilities.

    Softmax of that output is the members' averaged probabilities, so CrossEntropyLoss, `predict`
    and the metrics treat the ensemble like one classifier. Training updates every member on its own
    loss (stages/engine.py), so the members stay independent models, not one wide network.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.config = spec.model
        # Built in order from the current random state: member 0 gets the weights a single network
        # seeded the same way would get.
        self.members = nn.ModuleList(RecurrentClassifier(spec) for _ in range(spec.model.members))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        log_probabilities = torch.stack([member(tokens, lengths).log_softmax(dim=1) for member in self.members])  # (M, B, C)
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(self.members))  # (B, C)


Classifier = RecurrentClassifier | EnsembleClassifier


def build_model(spec: ModelSpec) -> Classifier:
    return EnsembleClassifier(spec) if spec.model.members > 1 else RecurrentClassifier(spec)


def members_of(model: nn.Module) -> list[nn.Module]:
    """The independently trained networks inside `model`: its ensemble members, or itself."""
    return list(model.members) if isinstance(model, EnsembleClassifier) else [model]


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def save_checkpoint(path: Path, model: Classifier, state_dict: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
    from stages.common import atomic_path

    # Save through a handle: given a path, torch names the zip's inner folder after the (random)
    # temporary file name, so identical weights would give different bytes and a new md5 in dvc.lock.
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
        torch.save({"state_dict": state_dict, "config": model.spec.to_dict(), **extra}, handle)


def load_checkpoint(path: Path, expected: ModelConfig | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model from the checkpoint's own config; refuse one that differs from `expected`."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"Checkpoint {path} not found; train it first (`dvc repro`).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        spec = ModelSpec.from_dict(checkpoint["config"])
    except pickle.UnpicklingError as error:
        # weights_only=True refused an object beyond tensors and plain data, before running any of it.
        raise StageError(
            f"{path} holds Python objects besides tensors and plain data, so it was refused unread "
            f"(checkpoints load with weights_only=True). Use a checkpoint written by the train stage: `dvc repro`."
        ) from error
    # Non-archive files fail in the unpickler too; truncated zip archives fail with OSError when read.
    except (KeyError, TypeError, ConfigError, RuntimeError, EOFError, OSError) as error:
        raise StageError(f"{path} is not an RNN Lab checkpoint or is damaged ({error}); retrain with `dvc repro`.") from error
    if expected is not None and expected != spec.model:
        stored, wanted = spec.model.to_dict(), expected.to_dict()
        changes = ", ".join(f"{key}: checkpoint {stored[key]!r} vs params {wanted[key]!r}" for key in stored if stored[key] != wanted[key])
        raise StageError(f"{path} was trained with a different model config ({changes}). Retrain it with `dvc repro`.")
    model = build_model(spec)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise StageError(f"{path}: weights do not fit the stored config ({error}); retrain with `dvc repro`.") from error
    return model, checkpoint
