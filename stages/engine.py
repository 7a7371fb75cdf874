"""Training and inference loops shared by train, evaluate and the benchmarks.

Nothing here knows the dataset or the cell type: it sees (tokens, lengths, labels) tensors and a
model that maps (tokens, lengths) to logits.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from stages import runtime
from stages.common import StageError
from stages.config import TrainConfig
from stages.dataset import Split
from stages.model import members_of
from stages.progress import Throughput, progress_bar, show_running


def setup_runtime(seed: int, device_name: str, threads: int = 0) -> torch.device:
    """Call first in a stage's main, before any parallel torch op starts the OpenMP workers.

    Flushing denormals matters: vanishing gradients (the subject of this project) underflow into
    denormal floats, which x86 CPUs process ~10x slower; measured here, one vanilla-RNN training
    step took 1.16 s with denormals and 0.12 s without. Worker threads inherit the FP mode at
    creation, hence "first".

    Threads: the RNNLAB_THREADS environment variable wins, then `threads` (the train.threads param),
    then torch's default of one per core, except at the cross_vendor level, where 0 means a fixed
    runtime.REPRODUCIBLE_THREADS: MKL's COMPATIBLE GEMMs give the same bits only for the same thread
    count, so the count must not follow the machine's cores there (and is recorded with the result).
    """
    torch.set_flush_denormal(True)
    threads = int(os.environ.get("RNNLAB_THREADS") or threads)
    if threads == 0 and runtime.mode().cross_vendor:
        threads = runtime.REPRODUCIBLE_THREADS
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    device = resolve_device(device_name)
    for warning in runtime.apply_torch_settings(device.type):
        print(warning, file=sys.stderr)
    return device


def resolve_device(name: str) -> torch.device:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise StageError("train.device=cuda but no CUDA GPU is available to torch here. Set train.device=auto or cpu.")
    if name == "mps" and not mps:
        raise StageError("train.device=mps but no Apple MPS device is available here. Set train.device=auto or cpu.")
    return torch.device(name)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    valid_loss: float
    valid_accuracy: float
    grad_norm_mean: float  # global gradient norm before clipping, averaged over the epoch's steps
    grad_norm_max: float
    clip_fraction: float  # share of steps where clipping fired


@dataclass
class FitResult:
    history: list[EpochRecord]
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    diverged: bool
    # Machine-dependent, so kept apart from the history (a DVC output that must reproduce bit for bit).
    epoch_seconds: list[float]


def batches(split: Split, batch_size: int, order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    indices = order if order is not None else torch.arange(len(split))
    for start in range(0, len(split), batch_size):
        index = indices[start : start + batch_size]
        yield split.x[index], split.lengths[index], split.y[index]


def batch_count(split: Split, batch_size: int) -> int:
    return math.ceil(len(split) / batch_size)


@torch.no_grad()
def predict(
    model: nn.Module, split: Split, batch_size: int, device: torch.device, description: str = "predict",
) -> tuple[torch.Tensor, float]:
    """Class probabilities (N, C) and the mean cross-entropy over the split."""
    model.eval()
    probabilities, total_loss, seen = [], 0.0, 0
    throughput = Throughput()
    with progress_bar(batch_count(split, batch_size), description) as bar:
        for x, lengths, y in batches(split, batch_size):
            logits = model(x.to(device), lengths.to(device)).float()
            total_loss += F.cross_entropy(logits, y.to(device), reduction="sum").item()
            probabilities.append(logits.softmax(dim=1).cpu())
            seen += len(y)
            throughput.add(x.numel())
            show_running(bar, throughput, loss=total_loss / seen)
    return torch.cat(probabilities), total_loss / len(split)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


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


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, split: Split, config: TrainConfig,
    generator: torch.Generator, device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, description: str = "train",
) -> dict[str, float] | None:
    """One pass over `split`; None when the loss or gradient became NaN/inf (divergence).

    On a terminal a bar shows the batches with the running loss, accuracy and tokens/s; it only
    reads values the step computes anyway, so the math (and every bit of the weights) is unchanged.
    """
    with progress_bar(batch_count(split, config.batch_size), description) as bar:
        return _train_epoch(model, optimizer, split, config, generator, device, scheduler, bar)


def _train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, split: Split, config: TrainConfig,
    generator: torch.Generator, device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None, bar: tqdm,
) -> dict[str, float] | None:
    model.train()
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    order = torch.randperm(len(split), generator=generator)
    loss_sum, correct, steps, clipped, norm_sum, norm_max = 0.0, 0, 0, 0, 0.0, 0.0
    seen, throughput = 0, Throughput()
    for x, lengths, y in batches(split, config.batch_size, order):
        x, lengths, y = x.to(device), lengths.to(device), y.to(device)
        logits = model(x, lengths)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None]).item()
        if not (math.isfinite(loss.item()) and math.isfinite(norm)):
            return None
        if config.grad_clip > 0 and norm > config.grad_clip:
            torch.nn.utils.clip_grads_with_norm_(parameters, config.grad_clip, torch.tensor(norm))
            clipped += 1
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(dim=1) == y).sum())
        steps += 1
        norm_sum += norm
        norm_max = max(norm_max, norm)
        seen += len(y)
        throughput.add(x.numel())
        show_running(bar, throughput, loss=loss_sum / seen, accuracy=correct / seen)
    return {
        "train_loss": loss_sum / len(split),
        "train_accuracy": correct / len(split),
        "grad_norm_mean": norm_sum / steps,
        "grad_norm_max": norm_max,
        "clip_fraction": clipped / steps,
    }


def combine_member_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    """One epoch's training stats over ensemble members: means, and the largest gradient norm."""
    combined = {key: sum(member[key] for member in stats) / len(stats) for key in stats[0]}
    combined["grad_norm_max"] = max(member["grad_norm_max"] for member in stats)
    return combined


def fit(
    model: nn.Module, train: Split, valid: Split, config: TrainConfig, device: torch.device, log=print,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Train for config.epochs, keep the weights of the best validation-accuracy epoch (or the last
    epoch's, with `train.keep: last`).

    `on_epoch` gets each finished epoch's record as soon as it exists (the train stage logs it with
    DVCLive, so the history grows while training runs); this module itself writes nothing.

    An ensemble's members each get their own optimiser, schedule and batch order (seed + i) and
    train on their own loss, one epoch each in turn; validation scores the ensemble as a whole.
    On divergence, stop and keep the best weights so far (the initial ones if no epoch finished).
    """
    model.to(device)
    members = members_of(model)
    optimizers = [make_optimizer(member.parameters(), config) for member in members]
    schedulers = [make_scheduler(optimizer, config, len(train)) for optimizer in optimizers]
    generators = [torch.Generator().manual_seed(config.seed + index) for index in range(len(members))]
    best_state, best_epoch, best_accuracy = _state_copy(model), 0, -1.0
    history: list[EpochRecord] = []
    epoch_seconds: list[float] = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        member_stats = []
        for index, (member, optimizer, generator, scheduler) in enumerate(zip(members, optimizers, generators, schedulers)):
            member_label = f" member {index + 1}/{len(members)}" if len(members) > 1 else ""
            stats = train_epoch(member, optimizer, train, config, generator, device, scheduler,
                                description=f"epoch {epoch}/{config.epochs}{member_label}")
            if stats is None:
                log(f"epoch {epoch}: loss or gradient became NaN/inf; stopping (diverged)")
                return FitResult(history, best_state, best_epoch, True, epoch_seconds)
            member_stats.append(stats)
        seconds = time.perf_counter() - started
        stats = combine_member_stats(member_stats)
        probabilities, valid_loss = predict(model, valid, max(config.batch_size, 256), device, description=f"epoch {epoch} valid")
        if not math.isfinite(valid_loss):
            # The epoch's last step can blow the weights up after its finite-loss check; such weights
            # must never become the "best" checkpoint.
            log(f"epoch {epoch}: validation loss became NaN/inf; stopping (diverged)")
            return FitResult(history, best_state, best_epoch, True, epoch_seconds)
        valid_accuracy = float((probabilities.argmax(dim=1) == valid.y).float().mean())
        record = EpochRecord(
            epoch=epoch, valid_loss=valid_loss, valid_accuracy=valid_accuracy, **stats,
        )
        history.append(record)
        epoch_seconds.append(seconds)
        log(
            f"epoch {epoch}/{config.epochs}: train loss {record.train_loss:.4f} acc {record.train_accuracy:.4f} | "
            f"valid loss {valid_loss:.4f} acc {valid_accuracy:.4f} | {seconds:.1f}s, grad norm {record.grad_norm_mean:.3g}"
        )
        if valid_accuracy > best_accuracy or config.keep == "last":
            best_state, best_epoch, best_accuracy = _state_copy(model), epoch, valid_accuracy
        if on_epoch is not None:
            on_epoch(record)
    return FitResult(history, best_state, best_epoch, False, epoch_seconds)
