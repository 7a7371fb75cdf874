"""Shared setup for the model benchmarks: sizes, synthetic batches, the pipeline model."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from rnnlab.config.params import IMDB_TASK, ModelConfig, TrainConfig, load_params
from rnnlab.data.arrays import Split
from rnnlab.model.classifier import ModelSpec, RecurrentClassifier

CELLS = ("rnn", "lstm", "gru")
READOUTS = ("last", "mean", "max", "concat")


@dataclass(frozen=True)
class Sizes:
    """The pipeline's defaults (params.yaml) unless --quick shrinks them."""

    batch_size: int
    eval_batch_size: int
    sequence_length: int
    vocab_size: int
    model: ModelConfig
    train: TrainConfig

    def describe(self) -> str:
        return (
            f"B={self.batch_size}, T={self.sequence_length}, E={self.model.embedding_dim}, "
            f"H={self.model.hidden_size}, head={self.model.head_size}, vocab={self.vocab_size}"
        )


def default_sizes(quick: bool) -> Sizes:
    params = load_params()
    study, data = params.task(IMDB_TASK), params.data
    model, train = study.model, study.train
    vocab_size = data.vocab_size + 2  # <unk> and <pad>
    if quick:
        model = replace(model, embedding_dim=16, hidden_size=32, head_size=16)
        train = replace(train, batch_size=16)
        return Sizes(16, 32, 24, 500, model, train)
    # Evaluation batches as engine.fit's validation pass uses them.
    return Sizes(train.batch_size, max(train.batch_size, 256), data.fix_length, vocab_size, model, train)


def synthetic_split(count: int, sizes: Sizes, seed: int = 0) -> Split:
    """Random token ids; lengths like IMDB's at fix_length=200 (about half the reviews fill every step)."""
    generator = torch.Generator().manual_seed(seed)
    steps = sizes.sequence_length
    x = torch.randint(2, sizes.vocab_size, (count, steps), generator=generator)
    lengths = torch.randint(steps // 4, 2 * steps, (count,), generator=generator).clamp(max=steps)
    x[torch.arange(steps).unsqueeze(0) >= lengths.unsqueeze(1)] = 1  # <pad>
    y = torch.randint(0, 2, (count,), generator=generator)
    return Split(x=x, lengths=lengths, y=y)


def pipeline_model(sizes: Sizes, **overrides: Any) -> RecurrentClassifier:
    config = replace(sizes.model, **overrides)
    spec = ModelSpec(config, sizes.vocab_size, 2, sizes.sequence_length, ("neg", "pos"))
    torch.manual_seed(0)
    return RecurrentClassifier(spec)
