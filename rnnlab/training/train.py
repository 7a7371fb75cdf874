"""Train one variant: its seeded model, the loop, the checkpoint and the per-epoch history.

The variant's config is its task's baseline `model`/`train` sections with the variant's overrides
applied (params.yaml `variants`, or `order.variants` for the order task), as the params stage
resolved it (rnnlab/config/params.py). The history is a DVCLive
directory (rnnlab/training/history.py) that grows by one line per metric as each epoch ends.

The checkpoint and the history are replaced together when training has ended, so a failed or
interrupted run leaves the ones from before it (rnnlab.core.files.outputs_together); one run at a time
writes them (rnnlab.core.locks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rnnlab.config.params import Variant
from rnnlab.core.files import check_writable, outputs_together
from rnnlab.core.locks import exclusive_writer
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
    if outputs.timings is not None:
        check_writable(outputs.timings)  # written last: a read-only folder must not fail the run after training
    # The lock before anything is written; then both outputs aside (the history in place when there is
    # none to keep, so DVC and VS Code follow it), swapped in together once the checkpoint is saved.
    with exclusive_writer(outputs.history, f"training run of {variant.name}"), \
            outputs_together(outputs.model, outputs.history, live=outputs.history) as staged:
        train, valid = load_split(data_dir, "train"), load_split(data_dir, "valid")
        model = initial_model(ModelSpec.from_meta(variant.model, meta), variant.train.seed)
        print(
            f"train {variant.name} ({variant.task}): {variant.model.cell} hidden {variant.model.hidden_size}"
            f"{f' x {variant.model.members} members' if variant.model.members > 1 else ''}, "
            f"{count_parameters(model):,} parameters, {len(train)} train / {len(valid)} valid, device {device}"
        )
        history = EpochLog(staged[outputs.history])
        result = fit(model, train, valid, variant.train, device, on_epoch=history.log_epoch)
        save_checkpoint(
            staged[outputs.model], model, result.best_state,
            {"variant": variant.name, "study": variant.task, "train": variant.train.to_stored_dict(),
             "best_epoch": result.best_epoch, "diverged": result.diverged, "device": str(device),
             "environment": result_environment(device)},
        )
        history.finish(best_record(result))
    if outputs.timings is not None:
        record_training(outputs.timings, variant.name, device.type, result.epoch_seconds, len(train) * train.sequence_length)
