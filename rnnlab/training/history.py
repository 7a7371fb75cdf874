"""The per-epoch training history, logged with DVCLive while training runs and read back from its files.

One variant's directory (dvc.yaml `live` var): `plots/metrics/<metric>.tsv` (`step<TAB><metric>`, a line per
finished epoch, no timestamps so reruns give the same bytes) and `metrics.json` (the latest epoch while training,
then the epoch whose weights the checkpoint holds, `step` = that epoch).
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rnnlab.core.errors import UserError

STEP = "step"
RERUN = "Rerun the train stage (`dvc repro`)."


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


HISTORY_METRICS = tuple(field.name for field in fields(EpochRecord) if field.name != "epoch")  # logged in this order


def metric_file(directory: Path | str, metric: str) -> Path:
    return Path(directory) / "plots" / "metrics" / f"{metric}.tsv"


class EpochLog:
    """DVCLive logger of one training run into an absent or empty directory (no earlier run's files linger)."""

    def __init__(self, directory: Path) -> None:
        from dvclive import Live  # imports DVC: only the train stage pays for it

        # dvc.yaml declares these files itself; nothing but the metric files is written, nothing touches git.
        try:
            self.live = Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None, monitor_system=False)
        except Exception as error:  # DVCLive reads the git HEAD, and fails in a repository without commits
            if type(error).__name__ != "SCMError":
                raise
            raise UserError(
                f"DVCLive could not read this git repository ({error}): commit once "
                "(`git add -A && git commit -m start`), then rerun `dvc repro`."
            ) from error

    def log_epoch(self, record: EpochRecord) -> None:
        self.live.step = record.epoch
        for name in HISTORY_METRICS:
            self.live.log_metric(name, getattr(record, name), timestamp=False)  # timestamps would break reruns
        self.live.next_step()  # writes metrics.json and tells VS Code a step finished

    def finish(self, best: EpochRecord | None) -> None:
        """Make metrics.json the best epoch's values (none if no epoch finished) and close the run."""
        values = asdict(best) if best is not None else {}
        self.live.summary = {STEP: values.pop("epoch"), **values} if values else {}
        self.live.end()  # end() takes the step from the summary, so it stays the best epoch


def read_history(directory: Path) -> list[dict[str, Any]]:
    """One row per finished epoch, {"epoch": n, <metric>: value, ...}; none when the first epoch diverged."""
    if not directory.is_dir():
        raise UserError(f"training history not found at {directory}. {RERUN}")
    rows: dict[int, dict[str, Any]] = {}
    for metric in HISTORY_METRICS:
        path = metric_file(directory, metric)
        if not path.is_file():
            continue
        reader = csv.DictReader(path.read_text(encoding="utf-8").splitlines(), delimiter="\t")
        if reader.fieldnames is None or STEP not in reader.fieldnames or metric not in reader.fieldnames:
            raise UserError(f"{path} is not a DVCLive history of {metric} (header {reader.fieldnames}). {RERUN}")
        for line, row in enumerate(reader, start=2):
            try:
                epoch, value = int(row[STEP]), float(row[metric])
            except (TypeError, ValueError) as error:
                raise UserError(f"{path} line {line} is not `step<TAB>value`: {error}. {RERUN}") from error
            rows.setdefault(epoch, {"epoch": epoch})[metric] = value
    return [rows[epoch] for epoch in sorted(rows)]


def best_valid_accuracy(history: list[dict[str, Any]]) -> float | None:
    values = [row["valid_accuracy"] for row in history if "valid_accuracy" in row and math.isfinite(row["valid_accuracy"])]
    return max(values, default=None)
