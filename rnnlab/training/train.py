"""Train one variant, top-down: the memory check, the seeded model, the loop, the checkpoint and the history.

Checkpoint and history are written aside and renamed into place when training has ended, so a failed run leaves
the ones from before it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler
from tqdm import tqdm

from rnnlab.config.params import ORDER_TASK, DataConfig, ModelConfig, TrainConfig, Variant
from rnnlab.core.files import check_writable, exclusive_writer, outputs_together
from rnnlab.core.memory import FLOAT_BYTES, Need, Param, available_memory, check_fits
from rnnlab.data.arrays import Meta, Split, load_meta, load_split
from rnnlab.model.classifier import ModelSpec, count_parameters, initial_model, members_of, parameter_counts, save_checkpoint
from rnnlab.runtime.environment import record_training, result_environment, setup_torch
from rnnlab.training.history import EpochLog, EpochRecord


@dataclass
class FitResult:
    history: list[EpochRecord]
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    diverged: bool
    epoch_seconds: list[float]  # machine-dependent: kept out of the history, a DVC output


def train_variant(variant: Variant, data_dir: Path, checkpoint: Path, history_dir: Path, timings: Path | None = None) -> None:
    """Train `variant` on `data_dir`'s arrays into `checkpoint` and the DVCLive `history_dir`; `timings` (seconds,
    machine-dependent) is no DVC output."""
    device = setup_torch(variant.train.device, variant.train.threads)
    meta = load_meta(data_dir)
    check_training_fits(variant, meta, data_dir, device)  # before any big allocation
    if timings is not None:
        check_writable(timings)  # written last: a read-only folder must not fail the run after training
    # The lock before anything is written; the history written in place when there is none to keep (VS Code follows it).
    with (
        exclusive_writer(history_dir, f"training run of {variant.name}"),
        outputs_together(checkpoint, history_dir, live=history_dir) as staged,
    ):
        train, valid = load_split(data_dir, "train"), load_split(data_dir, "valid")
        spec = ModelSpec(variant.model, meta.input_size, meta.num_classes, meta.sequence_length, meta.class_names, meta.pad)
        model = initial_model(spec, variant.train.seed)
        print(
            f"train {variant.name} ({variant.task}): {variant.model.cell} hidden {variant.model.hidden_size}"
            f"{f' x {variant.model.members} members' if variant.model.members > 1 else ''}, "
            f"{count_parameters(model):,} parameters, {len(train)} train / {len(valid)} valid, device {device}"
        )
        history = EpochLog(staged[history_dir])
        result = fit(model, train, valid, variant.train, device, on_epoch=history.log_epoch)
        save_checkpoint(
            staged[checkpoint],
            model,
            result.best_state,
            {
                "variant": variant.name,
                "study": variant.task,
                "train": variant.train.to_stored_dict(),
                "best_epoch": result.best_epoch,
                "diverged": result.diverged,
                # What evaluate reports of the run besides the weights, so it needs no history files.
                "epochs_trained": len(result.history),
                "best_valid_accuracy": max((record.valid_accuracy for record in result.history), default=None),
                "device": str(device),
                "environment": result_environment(device),
            },
        )
        history.finish(next((record for record in result.history if record.epoch == result.best_epoch), None))
    if timings is not None:
        record_training(timings, variant.name, device.type, result.epoch_seconds, len(train) * train.sequence_length)


def fit(
    model: nn.Module,
    train: Split,
    valid: Split,
    config: TrainConfig,
    device: torch.device,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Train for config.epochs, keeping the best validation-accuracy epoch's weights (`train.keep: last`: the last).

    Ensemble members each have their own optimiser, schedule and batch order (seed + i) and loss, one epoch each
    in turn; validation scores the ensemble. On divergence, stop with the best weights so far.
    """
    model.to(device)
    members = members_of(model)
    optimizers = [make_optimizer(member.parameters(), config) for member in members]
    total_steps = config.epochs * math.ceil(len(train) / config.batch_size)  # cosine reaches 0 at the run's last step
    schedulers = [
        CosineAnnealingLR(optimizer, total_steps) if config.lr_schedule == "cosine" else None for optimizer in optimizers
    ]
    generators = [torch.Generator().manual_seed(config.seed + index) for index in range(len(members))]
    best_state, best_epoch, best_accuracy = _state_copy(model), 0, -1.0
    history: list[EpochRecord] = []
    epoch_seconds: list[float] = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        member_stats = []
        for index, member in enumerate(members):
            label = f"epoch {epoch}/{config.epochs}" + (f" member {index + 1}/{len(members)}" if len(members) > 1 else "")
            stats = train_epoch(member, optimizers[index], train, config, generators[index], device, schedulers[index], label)
            if stats is None:
                print(f"epoch {epoch}: loss or gradient became NaN/inf; stopping (diverged)")
                return FitResult(history, best_state, best_epoch, True, epoch_seconds)
            member_stats.append(stats)
        seconds = time.perf_counter() - started
        combined = {key: sum(member[key] for member in member_stats) / len(member_stats) for key in member_stats[0]}
        combined["grad_norm_max"] = max(member["grad_norm_max"] for member in member_stats)
        probabilities, valid_loss = predict(model, valid, max(config.batch_size, 256), device, description=f"epoch {epoch} valid")
        if not math.isfinite(valid_loss):
            # The epoch's last step can blow the weights up after its finite-loss check.
            print(f"epoch {epoch}: validation loss became NaN/inf; stopping (diverged)")
            return FitResult(history, best_state, best_epoch, True, epoch_seconds)
        valid_accuracy = float((probabilities.argmax(dim=1) == valid.y).float().mean())
        record = EpochRecord(epoch=epoch, valid_loss=valid_loss, valid_accuracy=valid_accuracy, **combined)
        history.append(record)
        epoch_seconds.append(seconds)
        print(
            f"epoch {epoch}/{config.epochs}: train loss {record.train_loss:.4f} acc {record.train_accuracy:.4f} | "
            f"valid loss {valid_loss:.4f} acc {valid_accuracy:.4f} | {seconds:.1f}s, grad norm {record.grad_norm_mean:.3g}"
        )
        if valid_accuracy > best_accuracy or config.keep == "last":
            best_state, best_epoch, best_accuracy = _state_copy(model), epoch, valid_accuracy
        if on_epoch is not None:
            on_epoch(record)
    return FitResult(history, best_state, best_epoch, False, epoch_seconds)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
    scheduler: LRScheduler | None = None,
    description: str = "train",
) -> dict[str, float] | None:
    """One pass over `split`; None when the loss or gradient became NaN/inf (divergence). The bar only reads
    values the step computes anyway: the weights are the same with or without it."""
    model.train()
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    order = torch.randperm(len(split), generator=generator)
    loss_sum, correct, seen, norms = 0.0, 0, 0, []
    with progress_bar(math.ceil(len(split) / config.batch_size), description) as bar:
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
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(dim=1) == y).sum())
            norms.append(norm)
            seen += len(y)
            show_running(bar, seen * x.shape[1], loss_sum / seen, correct / seen)
    clipped = sum(config.grad_clip > 0 and norm > config.grad_clip for norm in norms)
    return {
        "train_loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        "grad_norm_mean": sum(norms) / len(norms),
        "grad_norm_max": max(norms),
        "clip_fraction": clipped / len(norms),
    }


def make_optimizer(parameters: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    # rmsprop with Keras's defaults (rho 0.9, epsilon 1e-7): a Keras write-up used it
    options = {"alpha": 0.9, "eps": 1e-7} if config.optimizer == "rmsprop" else {}
    optimizer = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}[config.optimizer]
    return optimizer(parameters, lr=config.lr, weight_decay=config.weight_decay, **options)


@torch.no_grad()
def predict(
    model: nn.Module, split: Split, batch_size: int, device: torch.device, description: str = "predict"
) -> tuple[torch.Tensor, float]:
    """Class probabilities (N, C) and the mean cross-entropy over the split."""
    model.eval()
    probabilities, total_loss, seen = [], 0.0, 0
    with progress_bar(math.ceil(len(split) / batch_size), description) as bar:
        for x, lengths, y in batches(split, batch_size):
            logits = model(x.to(device), lengths.to(device)).float()
            total_loss += F.cross_entropy(logits, y.to(device), reduction="sum").item()
            probabilities.append(logits.softmax(dim=1).cpu())
            seen += len(y)
            show_running(bar, seen * x.shape[1], total_loss / seen)
    return torch.cat(probabilities), total_loss / len(split)


def batches(split: Split, batch_size: int, order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    indices = order if order is not None else torch.arange(len(split))
    for start in range(0, len(split), batch_size):
        index = indices[start : start + batch_size]
        yield split.x[index], split.lengths[index], split.y[index]


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


# --- progress bars: on a terminal only (`disable=None`); under `dvc queue`, CI or a log they stay silent ---


def progress_bar(total: int, description: str, unit: str = "batch") -> tqdm:
    """A transient bar: cleared when done, so the per-epoch line stays the only record."""
    # sys.stderr looked up at call time: a test can put a fake terminal there.
    return tqdm(total=total, desc=description, unit=unit, leave=False, disable=None, file=sys.stderr, dynamic_ncols=True)


def show_running(bar: tqdm, tokens: int, loss: float, accuracy: float | None = None) -> None:
    """Advance `bar` by one batch and show the running loss, accuracy and `tokens` (so far) per second."""
    if not bar.disable:  # formatting is skipped when nobody sees it
        postfix = {"loss": f"{loss:.4f}"} | ({"acc": f"{accuracy:.4f}"} if accuracy is not None else {})
        bar.set_postfix(postfix | {"tok/s": f"{tokens / max(bar.format_dict['elapsed'], 1e-9):,.0f}"}, refresh=False)
    bar.update(1)


# --- memory: what training needs, refused before anything is allocated if it cannot fit. Not counted: the
# interpreter and torch (a few hundred MB); tests/stages/test_resources.py checks against a measured peak.
DEVICE_WEIGHT_COPIES = 6  # weight, gradient, Adam's two moments and the two temporaries of its step
BEST_STATE_COPIES = 2  # a new best epoch's weights are copied before the old ones are dropped
# Floats per (sample, step, hidden unit, direction, layer), the measured CPU peak: about 4 per gate plus the state.
RECURRENT_FLOATS = {"rnn": 5, "gru": 12, "lstm": 17}
# Per (sample, step, feature): the embedding, its dropout copy and gradient; one-hot is built as int64 first.
INPUT_FLOATS = {"embedding": 3, "one_hot": 5}


def training_needs(variant: Variant, meta: Meta, data_dir: Path | None = None) -> list[Need]:
    """What training `variant` needs, by contributor, each named after the params it grows with."""
    model, train = variant.model, variant.train

    def param(section: str, key: str) -> Param:
        config = {"model": ModelConfig, "train": TrainConfig}[section]
        return Param(variant.params_key(section, key), getattr(getattr(variant, section), key), getattr(config, key))

    length_key = "order.data.max_length" if variant.task == ORDER_TASK else "data.fix_length"
    length = Param(length_key, meta.sequence_length, DataConfig.fix_length)
    vocabulary = Param("data.vocab_size", meta.input_size, DataConfig.vocab_size)
    hidden, members, batch = param("model", "hidden_size"), param("model", "members"), param("train", "batch_size")
    layers, embedding_dim = param("model", "num_layers"), param("model", "embedding_dim")
    # The lower layers' sizes grow what hidden_size grows (judged against its default).
    lower = Param(
        variant.params_key("model", "lower_layer_sizes"), max(model.lower_layer_sizes, default=0), ModelConfig.hidden_size
    )
    counts = parameter_counts(model, meta.input_size, meta.num_classes, meta.sequence_length)
    weights = DEVICE_WEIGHT_COPIES * FLOAT_BYTES * model.members
    one_hot, concat = model.input_encoding == "one_hot", model.readout == "concat"
    steps = train.batch_size * meta.sequence_length
    recurrent_floats = steps * sum(model.layer_sizes) * model.directions * RECURRENT_FLOATS[model.cell]
    if model.readout != "last":  # the masked copy of every step's output
        recurrent_floats += steps * model.hidden_size * model.directions
    adam = "weights with gradients and Adam state"
    needs = [
        Need(f"embedding {adam}", counts["embedding"] * weights, (embedding_dim, vocabulary, members)),
        Need(
            f"recurrent {adam}",
            counts["recurrent"] * weights,
            (hidden, layers, lower, members) + (vocabulary,) * one_hot,
            other_fix=", or set model.bidirectional=false" if model.bidirectional else "",
        ),
        Need(
            f"output head {adam}",
            counts["head"] * weights,
            (hidden, param("model", "head_size"), members) + (length,) * concat,
            other_fix=", or use a readout other than concat" if concat else "",
        ),
        Need(
            "input activations (batch x length x features)",
            steps * (meta.input_size if one_hot else model.embedding_dim) * INPUT_FLOATS[model.input_encoding] * FLOAT_BYTES,
            (batch, length, vocabulary if one_hot else embedding_dim),
            other_fix=", or use model.input_encoding=embedding" if one_hot else "",
        ),
        Need(
            "recurrent activations (batch x length x hidden)",
            recurrent_floats * FLOAT_BYTES,
            (batch, length, hidden, layers, lower),
        ),
        Need(
            "best-epoch copies of the weights",
            sum(counts.values()) * model.members * FLOAT_BYTES * BEST_STATE_COPIES,
            (hidden, members),
            on_device=False,
        ),
    ]
    if data_dir is not None:
        files = [data_dir / split / f"{name}.npy" for split in ("train", "valid") for name in ("X", "lengths", "y")]
        array_bytes = sum(path.stat().st_size for path in files if path.is_file())
        needs.append(Need("train and valid token arrays", array_bytes, (length,), on_device=False))
    return [need for need in needs if need.bytes > 0]


def check_training_fits(variant: Variant, meta: Meta, data_dir: Path, device: torch.device) -> None:
    """Refuse a variant whose weights, optimiser state and activations cannot fit (GPU and RAM on CUDA)."""
    needs, purpose = training_needs(variant, meta, data_dir), f"to train {variant.name}"
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        check_fits([need for need in needs if need.on_device], int(free), f"GPU memory ({device})", purpose)
        needs = [need for need in needs if not need.on_device]
    check_fits(needs, available_memory(), "memory", purpose)
