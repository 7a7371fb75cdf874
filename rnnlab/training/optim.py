"""The optimiser and learning-rate schedule `train.optimizer` and `train.lr_schedule` name."""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from rnnlab.config.params import TrainConfig


def make_optimizer(parameters: Iterator[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """`train.optimizer` with `train.lr` and `train.weight_decay`."""
    if config.optimizer == "rmsprop":
        # Keras's RMSprop defaults (rho 0.9, epsilon 1e-7), not torch's (alpha 0.99, eps 1e-8): the
        # Keras write-up is the one that used it.
        return torch.optim.RMSprop(parameters, lr=config.lr, alpha=0.9, eps=1e-7, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, train_size: int,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-batch learning-rate schedule of `config.lr_schedule`; None for a constant rate."""
    if config.lr_schedule == "constant":
        return None
    steps = config.epochs * math.ceil(train_size / config.batch_size)
    # T_max = every step of the run: the last batch of the last epoch trains at (almost) 0.
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
