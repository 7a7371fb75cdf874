"""One recurrent classifier for every study; the cell is picked by one switch (`model.cell`), by name from torch.nn.

tokens (B, T) -> inputs (B, T, F) -> fused nn.RNN/LSTM/GRU (or a stack of them) -> outputs (B, T, D*H)
               -> readout (B, R) -> head -> logits (B, C)

Cell differences (LSTM's (h, c) state) stay inside `encode`, so training never branches on the
cell type. The readout reads the true last token by gathering at `length - 1` and masks padding
in mean/max pooling; `pack_padded_sequence` would do the same but measured several times slower
on CPU. The head returns logits: CrossEntropyLoss applies the softmax itself.

A checkpoint stores `{state_dict, config, ...}`; the model is rebuilt from the stored config on load.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.config.params import ModelConfig
from rnnlab.core.errors import ConfigError, UserError
from rnnlab.core.files import atomic_path
from rnnlab.data.arrays import Meta

GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # weight blocks per recurrent layer


def readout_size(config: ModelConfig, sequence_length: int) -> int:
    """Width of the readout the head sees: every step's state for concat, two pools for mean_max."""
    state = config.hidden_size * config.directions
    return {"concat": state * sequence_length, "mean_max": 2 * state}.get(config.readout, state)


def parameter_counts(model: ModelConfig, input_size: int, num_classes: int, sequence_length: int) -> dict[str, int]:
    """Parameters of one network (RecurrentClassifier) by part: embedding, recurrent, head."""
    features = model.embedding_dim if model.input_encoding == "embedding" else input_size
    recurrent, layer_input = 0, features
    for size in model.layer_sizes:
        # weight_ih, weight_hh and two bias vectors per direction
        recurrent += model.directions * GATES[model.cell] * size * (layer_input + size + 2)
        layer_input = size * model.directions
    readout = readout_size(model, sequence_length)
    if model.head_size > 0:
        head = readout * model.head_size + model.head_size + model.head_size * num_classes + num_classes
    else:
        head = readout * num_classes + num_classes
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

    @classmethod
    def from_meta(cls, model: ModelConfig, meta: Meta) -> ModelSpec:
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
    def from_dict(cls, raw: dict[str, Any]) -> ModelSpec:
        """The stored spec, checked: whole sizes >= 1 and one string name per class (ValueError if not)."""
        sizes = {key: raw[key] for key in ("input_size", "num_classes", "sequence_length")}
        names = raw["class_names"]
        if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 1 for value in sizes.values()):
            raise ValueError(f"sizes {sizes} are not whole numbers >= 1")
        if not isinstance(names, list) or len(names) != sizes["num_classes"] or not all(isinstance(name, str) for name in names):
            raise ValueError(f"class_names {names!r} are not {sizes['num_classes']} strings")
        model = ModelConfig.from_dict(raw["model"], "checkpoint.config.model")  # a LATER key it lacks takes its default
        return cls(model, class_names=tuple(names), pad=str(raw.get("pad", "post")), **sizes)


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
            [recurrent_layers(config, size_in, size, 1) for size_in, size in zip(inputs, config.lower_layer_sizes, strict=False)]
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


class RecurrentClassifier(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        config = spec.model
        self.spec = spec
        self.config = config
        if config.input_encoding == "embedding":
            self.embedding: nn.Embedding | None = nn.Embedding(spec.input_size, config.embedding_dim)
            features = config.embedding_dim
        else:
            self.embedding = None
            features = spec.input_size
        self.embedding_dropout = Dropout(config.embedding_dropout)
        self.rnn = recurrent_stack(config, features)
        self.directions = config.directions
        readout_width = readout_size(config, spec.sequence_length)
        if config.head_size > 0:
            self.head = nn.Sequential(
                nn.Linear(readout_width, config.head_size),
                ACTIVATIONS[config.activation](),
                Dropout(config.dropout),  # applied, unlike the write-up whose dropout result was discarded
                nn.Linear(config.head_size, spec.num_classes),
            )
        else:
            self.head = nn.Sequential(Dropout(config.dropout), nn.Linear(readout_width, spec.num_classes))
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
        valid = (positions.unsqueeze(0) >= first.unsqueeze(1)) & (
            positions.unsqueeze(0) < (first + lengths).unsqueeze(1)
        )  # (B, T)
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


def orthogonal_(tensor: torch.Tensor) -> torch.Tensor:
    """nn.init.orthogonal_ (gain 1) without LAPACK, whose QR runs MKL's per-CPU code (other bits on Intel).

    The same draws (normal_ on the (rows, cols) matrix) and the same result in exact arithmetic: Q of
    the QR factorisation with a positive diagonal in R, i.e. Gram-Schmidt on the columns, here in
    float64 with a second pass against rounding ("twice is enough"). Products run on the GEMM of the
    reproducible mode; norms of at most a few thousand elements are one serial sum.
    """
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
    """Keras's default initialisers, for reproducing Keras write-ups in PyTorch.

    Keras: Embedding U(-0.05, 0.05); input kernels glorot-uniform over (input, gates*units);
    recurrent kernels orthogonal over (units, gates*units); Dense glorot-uniform; biases zero; LSTM
    unit_forget_bias (forget-gate bias 1). Torch's weights are Keras's kernels transposed: the same
    fans, and orthogonal_ on (gates*H, H) gives the orthonormal columns Keras's rows have (this
    module's orthogonal_: torch's without LAPACK).
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
    """`model.members` RecurrentClassifiers; the output is the log of their mean class probabilities.

    Softmax of that output is the members' averaged probabilities, so CrossEntropyLoss, `predict`
    and the metrics treat the ensemble like one classifier. Training updates every member on its own
    loss (rnnlab/training/train.py), so the members stay independent models, not one wide network.
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


def initial_model(spec: ModelSpec, seed: int) -> Classifier:
    """The untrained model of `seed`: seeds torch's global generator, then builds (its weights are the
    first draws). Training keeps drawing from the same generator (dropout masks); the gradient
    diagnostics call it inside `torch.random.fork_rng` to rebuild the same initial weights."""
    torch.manual_seed(seed)
    return build_model(spec)


def members_of(model: nn.Module) -> list[nn.Module]:
    """The independently trained networks inside `model`: its ensemble members, or itself."""
    return list(model.members) if isinstance(model, EnsembleClassifier) else [model]


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def save_checkpoint(path: Path, model: Classifier, state_dict: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
    # The plain data goes through its JSON text first: pickle stores one string object once and then
    # refers to it, so equal dicts whose strings came from different places (an interned literal,
    # YAML, JSON) would give other bytes, and another md5 in dvc.lock, for the same checkpoint.
    metadata = json.loads(json.dumps({"config": model.spec.to_dict(), **extra}))
    # Save through a handle: given a path, torch names the zip's inner folder after the (random)
    # temporary file name, so identical weights would give different bytes and a new md5 in dvc.lock.
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
        torch.save({"state_dict": state_dict, **metadata}, handle)


def load_checkpoint(path: Path, expected: ModelConfig | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model from the checkpoint's own config; refuse one that differs from `expected`.

    Everything is checked before the model is built: the stored sizes must imply exactly the weights
    the file holds (so a config of absurd sizes allocates nothing), the class names must be strings,
    one per class, and every weight must be finite.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint {path} not found; train it first (`dvc repro`).")
    damaged = f"{path} is not an RNN Lab checkpoint or is damaged"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        spec = ModelSpec.from_dict(checkpoint["config"])
        state_dict = checkpoint["state_dict"]
    except pickle.UnpicklingError as error:
        # weights_only=True refused an object beyond tensors and plain data, before running any of it.
        raise UserError(
            f"{path} holds Python objects besides tensors and plain data, so it was refused unread "
            f"(checkpoints load with weights_only=True). Use a checkpoint written by the train stage: `dvc repro`."
        ) from error
    # Non-archive files fail in the unpickler too; truncated zip archives fail with OSError when read.
    except (KeyError, TypeError, ValueError, ConfigError, RuntimeError, EOFError, OSError) as error:
        missing = f"no {error} entry" if isinstance(error, KeyError) else str(error)
        raise UserError(f"{damaged} ({missing}); retrain with `dvc repro`.") from error
    if expected is not None and expected != spec.model:
        stored, wanted = spec.model.to_dict(), expected.to_dict()
        changes = ", ".join(
            f"{key}: checkpoint {stored[key]!r} vs params {wanted[key]!r}" for key in stored if stored[key] != wanted[key]
        )
        raise UserError(f"{path} was trained with a different model config ({changes}). Retrain it with `dvc repro`.")
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise UserError(f"{damaged} (its state_dict is not a dict of tensors); retrain with `dvc repro`.")
    stored_count = sum(value.numel() for value in state_dict.values())
    implied = (
        sum(parameter_counts(spec.model, spec.input_size, spec.num_classes, spec.sequence_length).values()) * spec.model.members
    )
    if stored_count != implied:
        raise UserError(
            f"{path}: its config implies {implied:,} weights but it holds {stored_count:,} (a damaged checkpoint); retrain with `dvc repro`."
        )
    if not all(torch.isfinite(value).all() for value in state_dict.values() if value.is_floating_point()):
        raise UserError(f"{path} holds NaN or infinite weights (a diverged or damaged model); retrain with `dvc repro`.")
    model = build_model(spec)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise UserError(f"{path}: weights do not fit the stored config ({error}); retrain with `dvc repro`.") from error
    return model, checkpoint
