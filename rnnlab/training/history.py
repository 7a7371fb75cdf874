"""The per-epoch training history, logged with DVCLive while training runs.

One variant's directory (dvc.yaml `live` var): `plots/metrics/<metric>.tsv` (`step<TAB><metric>`, a line per
finished epoch, no timestamps so reruns give the same bytes) and `metrics.json` (the latest epoch while training,
then the epoch whose weights the checkpoint holds, `step` = that epoch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rnnlab.core.errors import UserError

STEP = "step"


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
