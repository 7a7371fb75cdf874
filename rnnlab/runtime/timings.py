"""Machine-dependent measurements (seconds, tokens/s) and the machine they were taken on.

They live in their own files (reports/timings/<variant>.json), deliberately *not* declared in
dvc.yaml: DVC records the hash of every declared output in dvc.lock, so a file that changes with
the machine would make every rerun look like a change. Metrics and the history hold only numbers
that reproduce bit for bit; the report reads both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rnnlab.core.files import write_json
from rnnlab.runtime.environment import machine_environment


def read_timings(path: Path) -> dict[str, Any]:
    """The timings recorded so far, or {} (none yet, or a damaged file: timings are never critical)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def record_training(path: Path, variant: str, device: str, epoch_seconds: list[float], tokens_per_epoch: int) -> None:
    """Start a variant's timings afresh: its training just ran on this machine."""
    mean = sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else None
    write_json(path, {
        "variant": variant,
        "device": device,
        "machine": machine_environment(),
        "train_seconds_per_epoch": mean,
        "train_tokens_per_second": tokens_per_epoch / mean if mean else None,
        "epoch_seconds": [round(seconds, 3) for seconds in epoch_seconds],
    })


def record_evaluation(path: Path, variant: str, eval_tokens_per_second: float) -> None:
    """Add the evaluation speed to what training recorded (or start the file if there is none)."""
    timings = read_timings(path) or {"variant": variant, "machine": machine_environment()}
    timings["eval_tokens_per_second"] = eval_tokens_per_second
    write_json(path, timings)
