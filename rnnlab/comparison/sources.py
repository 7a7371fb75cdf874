"""What the review reads at a revision: metrics, per-example predictions, histories, gradient profiles,
timings and seed bands, each found through that revision's own dvc.yaml `vars`."""

from __future__ import annotations

import functools
import warnings
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
    """One evaluate's per-example test outcomes, in test order.

    From `predictions`/<variant>.csv (actual, predicted, p_<class>...), or, at revisions made before
    per-example predictions existed, from `confusion`/<variant>.csv (actual, predicted only: no
    probabilities, so no ROC-AUC or loss intervals).
    """

    path: str
    actual: np.ndarray                # class names, one per test example
    predicted: np.ndarray
    classes: tuple[str, ...]          # the p_<class> columns' order (the positive class is the second of two)
    probabilities: np.ndarray | None  # examples x classes; None for a confusion CSV

    @property
    def correct(self) -> np.ndarray:
        return self.actual == self.predicted

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @functools.cached_property
    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Actual and predicted class as indexes into `classes`."""
        order = np.argsort(self.classes)
        ranked = np.array(self.classes)[order]
        return order[np.searchsorted(ranked, self.actual)], order[np.searchsorted(ranked, self.predicted)]

    def same_outcomes(self, other: Predictions) -> bool:
        """The same examples (labels in order) and the same predicted class for each."""
        return np.array_equal(self.actual, other.actual) and np.array_equal(self.predicted, other.predicted)


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


class TableError(ValueError):
    """What is wrong with a predictions CSV, said without its path (parse_predictions adds it)."""


@dataclass(frozen=True)
class _Table:
    header: tuple[str, ...]
    actual: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray | None
    labels: frozenset[str]  # every class name in the actual and predicted columns


@functools.lru_cache(maxsize=32)
def _parse_table(text: str) -> _Table:
    # Cached by content: base and head often hold the same file (every unchanged variant). One split of the
    # whole text and one C-level float parse per column: 25,000 rows in 20 ms, 4x faster than row by row.
    header_line, _, body = text.replace("\r\n", "\n").partition("\n")
    header = tuple(header_line.split(","))
    if header[:2] != ("actual", "predicted") or not body.strip():
        raise TableError("does not start with actual,predicted columns and rows")
    lines = body.rstrip("\n").count("\n") + 1
    tokens = body.rstrip("\n").replace("\n", ",").split(",")
    if len(tokens) != lines * len(header):
        raise TableError(f"has rows that are not {len(header)} columns long")
    width = len(header)
    actual, predicted = np.array(tokens[0::width]), np.array(tokens[1::width])
    probabilities = None
    if width > 2:
        columns = []
        for column in range(2, width):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # text numpy cannot read is a warning today, an error tomorrow: both are
                try:
                    values = np.fromstring(",".join(tokens[column::width]), sep=",")
                except (ValueError, DeprecationWarning) as error:
                    raise TableError(f"has a {header[column]} that is not a number") from error
            if values.size != lines:
                raise TableError(f"has a {header[column]} that is not a number")
            columns.append(values)
        probabilities = np.stack(columns, axis=1)
    for array in (actual, predicted, probabilities):
        if array is not None:
            array.flags.writeable = False  # shared between calls
    return _Table(header, actual, predicted, probabilities, frozenset(np.unique(actual).tolist()) | frozenset(np.unique(predicted).tolist()))


def parse_predictions(text: str, path: str, where: str) -> Predictions:
    """Parse an actual,predicted[,p_<class>...] CSV (written by rnnlab/evaluation/metrics.py)."""
    fix = "rerun its evaluate stage (`dvc repro`) and commit it."
    try:
        table = _parse_table(text)
    except TableError as error:
        raise UserError(f"{path} at {where} {error}; {fix}") from error
    classes = tuple(name[2:] for name in table.header[2:] if name.startswith("p_")) or tuple(sorted(table.labels))
    if len(classes) != len(table.header) - 2 and table.probabilities is not None:
        raise UserError(f"{path} at {where} has columns other than p_<class> after actual,predicted; {fix}")
    unknown = table.labels - set(classes)
    if unknown:
        raise UserError(f"{path} at {where} names classes {sorted(unknown)} outside its columns {list(classes)}; {fix}")
    return Predictions(path, table.actual, table.predicted, classes, table.probabilities)


def predictions_path(revision: Revision, variant: str) -> str:
    """Where the variant's per-example outcomes are at this revision: predictions, else the older confusion CSV."""
    paths = paths_of(revision)
    for key in ("predictions", "confusion"):
        if key in paths:
            return f"{paths[key]}/{variant}.csv"
    raise UserError(f"dvc.yaml at {revision.title} has neither a `predictions` nor a `confusion` var: it keeps no "
                     "per-example test outcomes, so nothing can be compared example by example; review a later revision.")


def metrics_path(revision: Revision, variant: str) -> str:
    return f"{path_var(revision, 'metrics')}/{variant}.json"


def read_predictions(revision: Revision, variant: str, metrics: dict[str, Any]) -> Predictions:
    """The variant's per-example outcomes, checked against its metrics: their accuracies must agree."""
    path = predictions_path(revision, variant)
    text = revision.read_text(path)
    if text is None:
        raise UserError(f"variant {variant} has metrics but no predictions at {revision.title}:{path}; rerun its evaluate "
                         f"stage there (`dvc repro`) and commit {PurePosixPath(path).parent}/, then rerun the review.")
    predictions = parse_predictions(text, path, revision.title)
    check_against_metrics(predictions, metrics, metrics_path(revision, variant), revision.title)
    return predictions


def check_against_metrics(predictions: Predictions, metrics: dict[str, Any], metrics_file: str, where: str) -> None:
    """The accuracy the CSV gives must be the one its metrics file states (to one example): else they
    come from different runs, or one was edited, and no verdict can rest on them."""
    stated = metrics.get("accuracy")
    if not isinstance(stated, (int, float)):
        raise UserError(f"{metrics_file} at {where} has no numeric accuracy; rerun its evaluate stage (`dvc repro`).")
    if abs(predictions.accuracy - stated) > 0.5 / len(predictions.actual):
        raise UserError(f"{predictions.path} at {where} gives test accuracy {100 * predictions.accuracy:.2f} % but "
                         f"{metrics_file} says {100 * stated:.2f} %: they are not from the same run (or one was edited); "
                         "rerun the variant's evaluate stage (`dvc repro`) and commit both files.")


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
