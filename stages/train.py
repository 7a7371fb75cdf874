"""Stage `train@<variant>`: train one variant, save its best checkpoint and per-epoch history.

The variant's config is the study's baseline `model`/`train` sections with the variant's
overrides applied (params.yaml `variants`, or `order.variants` for the order task). The history
is a DVCLive directory (stages/history.py) that grows by one line per metric as each epoch ends.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from stages.common import run_cli
from stages.config import load_params
from stages.dataset import load_meta, load_split
from stages.engine import EpochRecord, FitResult, fit, setup_runtime
from stages.history import EpochLog
from stages.memory import check_training_fits
from stages.model import ModelSpec, build_model, count_parameters, save_checkpoint
from stages.runtime import result_environment
from stages.timings import record_training


def best_record(result: FitResult) -> EpochRecord | None:
    return next((record for record in result.history if record.epoch == result.best_epoch), None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("--data", type=Path, required=True, help="xy directory (train/, valid/, meta.json)")
    parser.add_argument("--model", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--history", type=Path, required=True, help="DVCLive directory for the per-epoch history")
    parser.add_argument("--timings", type=Path, help="machine-dependent timings JSON to write (not a DVC output)")
    args = parser.parse_args(argv)

    study, variant = load_params().find_variant(args.variant)
    device = setup_runtime(variant.train.seed, variant.train.device, variant.train.threads)
    meta = load_meta(args.data)
    check_training_fits(study, variant, meta, args.data, device)  # before any big allocation
    train, valid = load_split(args.data, "train"), load_split(args.data, "valid")
    model = build_model(ModelSpec.from_meta(variant.model, meta))
    print(
        f"train {variant.name} ({study.name}): {variant.model.cell} hidden {variant.model.hidden_size}"
        f"{f' x {variant.model.members} members' if variant.model.members > 1 else ''}, "
        f"{count_parameters(model):,} parameters, {len(train)} train / {len(valid)} valid, device {device}"
    )
    try:
        history = EpochLog(args.history)
        result = fit(model, train, valid, variant.train, device, on_epoch=history.log_epoch)
        save_checkpoint(
            args.model, model, result.best_state,
            {"variant": variant.name, "study": study.name, "train": variant.train.to_stored_dict(),
             "best_epoch": result.best_epoch, "diverged": result.diverged, "device": str(device),
             "environment": result_environment(device)},
        )
        history.finish(best_record(result))
    except BaseException:
        # The history grows during training: an interrupt or failure anywhere must leave neither it
        # (a partial history DVC would take for a result) nor a checkpoint without its history.
        args.model.unlink(missing_ok=True)
        shutil.rmtree(args.history, ignore_errors=True)
        raise
    if args.timings is not None:
        record_training(args.timings, variant.name, device.type, result.epoch_seconds, len(train) * train.sequence_length)


if __name__ == "__main__":
    run_cli(main)
