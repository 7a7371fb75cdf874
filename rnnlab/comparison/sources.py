"""What the review reads at a revision: metrics, per-example predictions, histories, gradient profiles,
timings and seed bands, each found through that revision's own dvc.yaml `vars`."""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from rnnlab.comparison.revision import Revision, pipeline_paths
from rnnlab.core.errors import UserError
from rnnlab.training.history import metric_file, parse_metric_tsv

GRADIENT_PATH_KEYS = ("gradients", "order_gradients")


@dataclass(frozen=True)
class Predictions:
    """One evaluate's per-example CSV: actual and predicted class per test example, in test order."""

    text: str
    actual: tuple[str, ...]
    predicted: tuple[str, ...]

    @property
    def correct(self) -> np.ndarray:
        return np.array([a == p for a, p in zip(self.actual, self.predicted)], dtype=bool)


@functools.lru_cache(maxsize=None)
def paths_of(revision: Revision) -> dict[str, str]:
    return pipeline_paths(revision)


def path_var(revision: Revision, key: str) -> str:
    paths = paths_of(revision)
    if key not in paths:
        raise UserError(f"dvc.yaml at {revision.title} has no `{key}` in its vars; compare revisions made after issue 14 "
                         "(per-example predictions), or add the var and rerun `dvc repro` there.")
    return paths[key]


def variant_metrics(revision: Revision) -> dict[str, dict[str, Any]]:
    """variant -> its metrics JSON; an empty or missing metrics folder is an error that says what to run."""
    directory = path_var(revision, "metrics")
    metrics = {}
    for path in revision.list_files(directory, ".json"):
        data = revision.read_json(path)
        if isinstance(data, dict) and "accuracy" in data:  # a variant's metrics, not some other JSON
            metrics[PurePosixPath(path).stem] = data
    if not metrics:
        raise UserError(f"{revision.title} has no metrics ({directory}/*.json): run `dvc repro` there and commit "
                         f"{directory}/, or compare against a revision that has them.")
    return metrics


def read_predictions(revision: Revision, variant: str) -> Predictions:
    path = f"{path_var(revision, 'predictions')}/{variant}.csv"
    text = revision.read_text(path)
    if text is None:
        raise UserError(f"variant {variant} has metrics but no predictions at {revision.title}:{path}; rerun its evaluate "
                         f"stage there (`dvc repro`) and commit {PurePosixPath(path).parent}/, then rerun the review.")
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "actual" not in rows[0] or "predicted" not in rows[0]:
        raise UserError(f"{path} at {revision.title} has no actual/predicted rows; rerun its evaluate stage (`dvc repro`).")
    return Predictions(text, tuple(row["actual"] for row in rows), tuple(row["predicted"] for row in rows))


def epoch_history(revision: Revision, variant: str) -> list[dict[str, Any]]:
    """Per-epoch rows (epoch, valid_accuracy, ...) of a variant's training; [] when there are none.

    The one place that knows where the history lives: the variant's DVCLive directory (dvc.yaml var
    `live`); a revision from before DVCLive kept a JSON list at `history`/<variant>.json.
    """
    paths = paths_of(revision)
    if "live" in paths:
        directory = f"{paths['live']}/{variant}"
        text = revision.read_text(metric_file(directory, "valid_accuracy").as_posix())
        if text is None:
            return []
        source = f"{directory} at {revision.title}"
        return [{"epoch": epoch, "valid_accuracy": value} for epoch, value in parse_metric_tsv(text, "valid_accuracy", source)]
    rows = revision.read_json(f"{path_var(revision, 'history')}/{variant}.json")
    return rows if isinstance(rows, list) else []


def gradient_profile(revision: Revision, variant: str) -> list[dict[str, Any]]:
    """Rows of steps_back, log10_grad_norm_init, log10_grad_norm_trained; [] when there are none."""
    paths = paths_of(revision)
    for key in GRADIENT_PATH_KEYS:
        if key in paths:
            rows = revision.read_json(f"{paths[key]}/{variant}.json")
            if isinstance(rows, list):
                return rows
    return []


def timings(revision: Revision, variant: str) -> dict[str, Any]:
    directory = paths_of(revision).get("timings")
    data = revision.read_json(f"{directory}/{variant}.json") if directory else None
    return data if isinstance(data, dict) else {}


def seed_bands(revision: Revision) -> dict[str, Any] | None:
    """The committed seed bands (python -m tools.seed_bands) at this revision, or None."""
    path = paths_of(revision).get("seed_bands")
    data = revision.read_json(path) if path else None
    return data if isinstance(data, dict) and isinstance(data.get("variants"), dict) else None
