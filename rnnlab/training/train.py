"""Train one variant: its seeded model, the loop, the checkpoint and the per-epoch history.

The variant's config is its task's baseline `model`/`train` sections with the variant's overrides
applied (params.yaml `variants`, or `order.variants` for the order task), as the params stage
resolved it (rnnlab/config/resolved.py). The history is a DVCLive
directory (rnnlab/training/history.py) that grows by one line per metric as each epoch ends.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from rnnlab.config.params import Variant
from rnnlab.data.arrays import load_meta, load_split
from rnnlab.model.checkpoint import save_checkpoint
from rnnlab.model.classifier import count_parameters, initial_model
from rnnlab.model.spec import ModelSpec
from rnnlab.runtime.environment import result_environment
from rnnlab.runtime.timings import record_training
from rnnlab.runtime.torch_setup import setup_torch
from rnnlab.training.history import EpochLog
from rnnlab.training.loop import EpochRecord, FitResult, fit
from rnnlab.training.memory import check_training_fits


@dataclass(frozen=True)
class TrainingOutputs:
    model: Path  # the checkpoint
    history: Path  # the DVCLive directory
    timings: Path | None = None  # machine-dependent seconds (not a DVC output)


def best_record(result: FitResult) -> EpochRecord | None:
    return next((record for record in result.history if record.epoch == result.best_epoch), None)


def train_variant(variant: Variant, data_dir: Path, outputs: TrainingOutputs) -> None:
    device = setup_torch(variant.train.device, variant.train.threads)
    meta = load_meta(data_dir)
    check_training_fits(variant, meta, data_dir, device)  # before any big allocation
    train, valid = load_split(data_dir, "train"), load_split(data_dir, "valid")
    model = initial_model(ModelSpec.from_meta(variant.model, meta), variant.train.seed)
    print(
        f"train {variant.name} ({variant.task}): {variant.model.cell} hidden {variant.model.hidden_size}"
        f"{f' x {variant.model.members} members' if variant.model.members > 1 else ''}, "
        f"{count_parameters(model):,} parameters, {len(train)} train / {len(valid)} valid, device {device}"
    )
    try:
        history = EpochLog(outputs.history)
        result = fit(model, train, valid, variant.train, device, on_epoch=history.log_epoch)
        save_checkpoint(
            outputs.model, model, result.best_state,
            {"variant": variant.name, "study": variant.task, "train": variant.train.to_stored_dict(),
             "best_epoch": result.best_epoch, "diverged": result.diverged, "device": str(device),
             "environment": result_environment(device)},
        )
        history.finish(best_record(result))
    except BaseException:
        # The history grows during training: an interrupt or failure anywhere must leave neither it
        # (a partial history DVC would take for a result) nor a checkpoint without its history.
        outputs.model.unlink(missing_ok=True)
        shutil.rmtree(outputs.history, ignore_errors=True)
        raise
    if outputs.timings is not None:
        record_training(outputs.timings, variant.name, device.type, result.epoch_seconds, len(train) * train.sequence_length)
