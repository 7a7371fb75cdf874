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

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.model.layers import ACTIVATIONS, Dropout, keep_mask, recurrent_stack, right_align
from rnnlab.model.spec import ModelSpec, readout_size


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


def keras_init(model: "RecurrentClassifier") -> None:
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
    loss (rnnlab/training/loop.py), so the members stay independent models, not one wide network.
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
