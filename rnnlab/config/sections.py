"""The params sections and their defaults: the one visible block of defaults that params.yaml overrides.

Each key's annotation is its type (a `Literal` lists the choices) and `setting(...)` its range; the
generic check in rnnlab/config/fields.py enforces both, so a section only adds the rules that tie
several of its keys together (`check`). Field order is kept: checkpoints store these dicts in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from rnnlab.config.fields import Section, require, setting

FRACTION = {"low": 0.0, "high": 1.0, "high_open": True}  # [0, 1): a dropout probability
POSITIVE = {"low": 1}
NON_NEGATIVE = {"low": 0}


@dataclass(frozen=True)
class DownloadConfig(Section):
    url: str = setting("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                       pattern=r"https?://\S+", pattern_text="an http(s) URL")
    md5: str = setting("7c2ac02c03563afcf9b574c7e56c153a", pattern=r"[0-9a-f]{32}", pattern_text="32 lowercase hex digits")


@dataclass(frozen=True)
class DataConfig(Section):
    valid_ratio: float = setting(0.2, low=0.0, high=1.0, low_open=True, high_open=True)
    split_seed: int = setting(0, **NON_NEGATIVE)
    vocab_size: int = setting(10000, **POSITIVE)
    min_freq: int = setting(10, **POSITIVE)
    fix_length: int = setting(200, **POSITIVE)
    # Which fix_length tokens a longer review keeps: the first (torchtext-legacy), the last, or the
    # first and last halves (the end of a review often states the verdict).
    truncate: Literal["head", "tail", "head_tail"] = "head"
    # Where a shorter review's padding goes: after it (torchtext) or before it (Keras pad_sequences),
    # which puts every review's last token in the last step.
    pad: Literal["post", "pre"] = "post"


@dataclass(frozen=True)
class OrderDataConfig(Section):
    """The temporal-order task (Hochreiter & Schmidhuber 1997, experiment 6a)."""

    train_size: int = setting(10000, low=4, note="(one per class)")
    valid_size: int = setting(2000, low=4, note="(one per class)")
    test_size: int = setting(2000, low=4, note="(one per class)")
    min_length: int = setting(70, **POSITIVE)
    max_length: int = 80
    early_window: tuple[int, int] = (10, 20)
    late_window: tuple[int, int] = (50, 60)
    seed: int = setting(0, **NON_NEGATIVE)

    def check(self, where: str) -> None:
        require(self.min_length <= self.max_length,
                f"{where}.min_length must be >= 1 and <= max_length, got {self.min_length} and {self.max_length}.")
        for name in ("early_window", "late_window"):
            first, last = getattr(self, name)
            # Position 0 holds E and the last position holds B, so windows live in 1 .. min_length - 2.
            require(1 <= first <= last <= self.min_length - 2,
                    f"{where}.{name} must satisfy 1 <= first <= last <= min_length - 2 ({self.min_length - 2}), "
                    f"got [{first}, {last}].")
        require(self.early_window[1] < self.late_window[0],
                f"{where}.early_window must end before late_window starts, got {list(self.early_window)} "
                f"and {list(self.late_window)}.")


@dataclass(frozen=True)
class ModelConfig(Section):
    cell: Literal["rnn", "lstm", "gru"] = "rnn"
    nonlinearity: Literal["tanh", "relu"] = "tanh"  # only used by cell=rnn
    input_encoding: Literal["embedding", "one_hot"] = "embedding"
    embedding_dim: int = setting(128, **POSITIVE)  # ignored for input_encoding=one_hot
    embedding_dropout: float = setting(0.0, **FRACTION)
    # Share of time steps whose whole input vector is zeroed in training (word dropout): the model
    # cannot lean on any single word. embedding_dropout zeroes single features instead.
    word_dropout: float = setting(0.0, **FRACTION)
    hidden_size: int = setting(256, **POSITIVE)
    num_layers: int = setting(1, **POSITIVE)
    # Recurrent layers of their own sizes below the num_layers x hidden_size stack, bottom first:
    # [64] with hidden_size 32 is the Keras write-up's SimpleRNN(64) -> SimpleRNN(32).
    lower_layer_sizes: tuple[int, ...] = setting((), later=True, **POSITIVE)
    bidirectional: bool = False
    dropout: float = setting(0.5, **FRACTION)
    readout: Literal["last", "mean", "max", "mean_max", "concat"] = "last"
    # The write-ups read output[:, -1]: for a review shorter than fix_length that is a padding step.
    # True reproduces that bug on purpose; False reads the true last token.
    last_at_padded_end: bool = False
    activation: Literal["relu", "sigmoid", "tanh", "leaky_relu"] = "relu"
    head_size: int = setting(256, **NON_NEGATIVE, note="(0 = no hidden head layer)")  # 0: readout -> output layer
    # Independently initialised copies trained side by side (own optimiser, batch order seed + i);
    # the prediction averages their class probabilities. 1: a single network.
    members: int = setting(1, **POSITIVE)
    # Initial weights: torch's defaults, or Keras's (glorot-uniform input and dense weights,
    # orthogonal recurrent weights, zero biases, LSTM forget-gate bias 1, embedding U(-0.05, 0.05)).
    init: Literal["torch", "keras"] = "torch"

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Hidden size of every recurrent layer, bottom to top; the last one is what the readout sees."""
        return (*self.lower_layer_sizes, *(self.hidden_size,) * self.num_layers)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1


@dataclass(frozen=True)
class TrainConfig(Section):
    epochs: int = setting(5, **POSITIVE)
    batch_size: int = setting(100, **POSITIVE)
    lr: float = setting(1e-4, low=0.0, low_open=True)
    # adam (torch defaults), rmsprop (Keras's defaults: rho 0.9, epsilon 1e-7, as the Keras write-up
    # ran it) or sgd (plain, no momentum).
    optimizer: Literal["adam", "rmsprop", "sgd"] = "adam"
    # cosine: the learning rate falls from `lr` to 0 along a half cosine, stepped after every batch,
    # so the last epochs take small steps instead of bouncing around at the peak rate.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = setting(0.0, **NON_NEGATIVE)
    grad_clip: float = setting(0.0, **NON_NEGATIVE, note="(0 disables clipping)")  # max global gradient norm
    # The weights the checkpoint keeps: the epoch with the best validation accuracy, or the last
    # epoch's (Keras's fit returns those; the Keras write-up's figure is after its last epoch).
    keep: Literal["best", "last"] = setting("best", later=True)
    seed: int = setting(0, **NON_NEGATIVE)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # torch intra-op CPU threads for training; 0 = torch's default (one per core). It changes no bit in
    # reproducible mode. Tiny models (the order task's hidden 4) run several times slower with >1 thread.
    threads: int = setting(0, **NON_NEGATIVE, note="(0 = torch's default)")


@dataclass(frozen=True)
class BaselineConfig(Section):
    """TF-IDF + logistic regression on the same token-id inputs as the recurrent models."""

    ngram_max: int = setting(1, **POSITIVE)
    c_grid: tuple[int, int] = (-2, 2)  # log10 range of C values tried on validation
    max_iter: int = setting(1000, **POSITIVE)

    def check(self, where: str) -> None:
        require(self.c_grid[0] <= self.c_grid[1], f"{where}.c_grid must be [low, high] with low <= high.")


@dataclass(frozen=True)
class RuntimeConfig(Section):
    """How the math libraries run; read before torch loads (rnnlab/runtime/environment.py)."""

    RETIRED: ClassVar[dict[str, str]] = {
        "cross_vendor": "was removed: reproducible mode now gives the same bits on Intel and AMD CPUs. Delete the line.",
    }

    # rnnlab's deterministic kernels, ATen pinned to AVX2, oneDNN off, vendor-neutral dropout: the same
    # bits on any x86-64 CPU with AVX2+FMA, Intel or AMD, any thread count (rnnlab/runtime/environment.py).
    reproducible: bool = True
