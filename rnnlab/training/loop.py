"""Training and inference loops shared by train, evaluate and the benchmarks.

Nothing here knows the dataset or the cell type: it sees (tokens, lengths, labels) tensors and a
model that maps (tokens, lengths) to logits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rnnlab.config.params import TrainConfig
from rnnlab.core.progress import Throughput, progress_bar, show_running
from rnnlab.data.arrays import Split
from rnnlab.model.classifier import members_of
from rnnlab.training.optim import make_optimizer, make_scheduler


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
