"""What the review reads at a revision (a git revision, a DVC experiment, or the workspace).

Everything it compares (metrics, per-example predictions, histories, gradient profiles, timings, seed
bands) is kept in git, so `git show REV:path` reads it and no DVC cache is needed. Paths come from the
revision's own dvc.yaml `vars`.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

from rnnlab.core.errors import UserError

WORKSPACE = "workspace"


@functools.lru_cache(maxsize=512)
def show(repo: Path, commit: str, path: str) -> bytes | None:
    """The file at commit:path, or None when there is none (a commit's files never change: kept)."""
    result = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True)
    return result.stdout if result.returncode == 0 and not result.stdout.startswith(b"tree ") else None


@dataclass(frozen=True)
class Revision:
    """What the user named (`label`) and the commit it stands for (None: the workspace's files)."""

    repo: Path
    label: str
    commit: str | None

    @property
    def title(self) -> str:
        if self.commit is None:
            return WORKSPACE
        if self.commit.startswith(self.label):
            return f"`{self.commit[:7]}`"
        return f"`{self.label}` ({self.commit[:7]})"

    def read_bytes(self, path: str) -> bytes | None:
        if self.commit is None:
            file = self.repo / path
            return file.read_bytes() if file.is_file() else None
        return show(self.repo, self.commit, path)

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8")

    def read_json(self, path: str) -> Any:
        text = self.read_text(path)
        try:
            return None if text is None else json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path} at {self.title} is not valid JSON ({error}); rerun the stage that writes it and commit it.") from error

    def list_files(self, directory: str, suffix: str) -> list[str]:
        """The files directly in `directory` whose names end in `suffix`."""
        if self.commit is None:
            folder = self.repo / directory
            names = [path.name for path in folder.iterdir() if path.is_file()] if folder.is_dir() else []
        else:
            listed = subprocess.run(["git", "ls-tree", "--name-only", f"{self.commit}:{directory}"], cwd=self.repo,
                                    capture_output=True, text=True)
            names = listed.stdout.split() if listed.returncode == 0 else []
        return [f"{directory}/{name}" for name in sorted(names) if name.endswith(suffix)]

    @functools.cached_property
    def paths(self) -> dict[str, str]:
        """dvc.yaml's `vars`: where its stages wrote metrics, predictions, history..."""
        text = self.read_text("dvc.yaml")
        if text is None:
            raise UserError(f"{self.title} has no dvc.yaml: it is not an RNN Lab pipeline revision; compare two revisions of this repository.")
        try:
            document = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise UserError(f"dvc.yaml at {self.title} is not valid YAML ({error}); fix it and commit.") from error
        return {key: value for entry in document.get("vars") or [] if isinstance(entry, dict)
                for key, value in entry.items() if isinstance(value, str)}


def git_output(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def resolve(repo: Path, name: str | None) -> Revision:
    """A git revision (branch, tag, sha, `origin/main`...), a DVC experiment name, or the workspace (None)."""
    if name is None or name == WORKSPACE:
        return Revision(repo, WORKSPACE, None)
    if git_output(repo, "rev-parse", "--git-dir").returncode != 0:
        raise UserError(f"{repo.resolve()} is not in a git repository; run the review in the RNN Lab repository.")
    found = git_output(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if found.returncode == 0:
        return Revision(repo, name, found.stdout.strip())
    # A DVC experiment is the git ref refs/exps/<xx>/<rest of its baseline's sha>/<name>.
    refs = git_output(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps").stdout.splitlines()
    experiments = [commit for ref, commit in (line.split() for line in refs) if len(ref.split("/")) == 5 and ref.split("/")[4] == name]
    if len(experiments) == 1:
        return Revision(repo, name, experiments[0])
    if len(experiments) > 1:
        raise UserError(f"{len(experiments)} DVC experiments are named {name!r} (on different baselines); "
                        "name one by its commit (`dvc exp show` lists them).")
    raise UserError(f"unknown revision {name!r}: neither a git revision nor a DVC experiment name; "
                    "`git branch -a` and `dvc exp list -A` list them (in CI, fetch with `fetch-depth: 0`).")


def path_var(revision: Revision, key: str) -> str:
    if key not in revision.paths:
        raise UserError(f"dvc.yaml at {revision.title} has no `{key}` in its vars; add the var and rerun `dvc repro` there.")
    return revision.paths[key]


def variant_metrics(revision: Revision) -> dict[str, dict[str, Any]]:
    """variant -> its declared metrics over its details (metrics/details/<variant>.json; revisions from before
    that split kept everything in the metrics file)."""
    directory = path_var(revision, "metrics")
    details = revision.paths.get("details", f"{directory}/details")
    metrics = {}
    for path in revision.list_files(directory, ".json"):
        data = revision.read_json(path)
        if isinstance(data, dict) and "accuracy" in data:
            variant = PurePosixPath(path).stem
            extra = revision.read_json(f"{details}/{variant}.json")
            metrics[variant] = {**(extra if isinstance(extra, dict) else {}), **data}
    if not metrics:
        raise UserError(f"{revision.title} has no metrics ({directory}/*.json): run `dvc repro` there and commit "
                        f"{directory}/, or compare against a revision that has them.")
    return metrics


@dataclass(frozen=True)
class Predictions:
    """One evaluate's per-example test outcomes, in test order: from `predictions`/<variant>.csv (actual, predicted,
    p_<class>...), or from the older `confusion`/<variant>.csv (actual, predicted: no probabilities)."""

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
        index = {name: position for position, name in enumerate(self.classes)}
        return (np.array([index[name] for name in self.actual]), np.array([index[name] for name in self.predicted]))

    def same_outcomes(self, other: Predictions) -> bool:
        return np.array_equal(self.actual, other.actual) and np.array_equal(self.predicted, other.predicted)


def parse_predictions(text: str, path: str, where: str) -> Predictions:
    """An actual,predicted[,p_<class>...] CSV."""
    def broken(what: str) -> UserError:
        return UserError(f"{path} at {where} {what}; rerun its evaluate stage (`dvc repro`) and commit it.")

    rows = list(csv.reader(io.StringIO(text)))
    header, body = (rows[0], [row for row in rows[1:] if row]) if rows else ([], [])
    if header[:2] != ["actual", "predicted"] or not body:
        raise broken("does not start with actual,predicted columns and rows")
    if any(len(row) != len(header) for row in body):
        raise broken(f"has rows that are not {len(header)} columns long")
    if any(not name.startswith("p_") for name in header[2:]):
        raise broken("has columns other than p_<class> after actual,predicted")
    table = np.array(body)
    actual, predicted = table[:, 0], table[:, 1]
    labels = set(actual) | set(predicted)
    classes = tuple(name[2:] for name in header[2:]) or tuple(sorted(labels))
    if labels - set(classes):
        raise broken(f"names classes {sorted(labels - set(classes))} outside its columns {list(classes)}")
    try:
        probabilities = table[:, 2:].astype(float) if len(header) > 2 else None
    except ValueError as error:
        raise broken("has a probability that is not a number") from error
    return Predictions(path, actual, predicted, classes, probabilities)


def read_predictions(revision: Revision, variant: str, metrics: dict[str, Any]) -> Predictions:
    """The variant's per-example outcomes; their accuracy must be its metrics' (to one example), else they come
    from different runs, or one was edited, and no verdict can rest on them."""
    path = predictions_path(revision, variant)
    text = revision.read_text(path)
    if text is None:
        raise UserError(f"variant {variant} has metrics but no predictions at {revision.title}:{path}; rerun its evaluate "
                        f"stage there (`dvc repro`) and commit {PurePosixPath(path).parent}/, then rerun the review.")
    predictions = parse_predictions(text, path, revision.title)
    stated, metrics_file = metrics.get("accuracy"), metrics_path(revision, variant)
    if not isinstance(stated, (int, float)):
        raise UserError(f"{metrics_file} at {revision.title} has no numeric accuracy; rerun its evaluate stage (`dvc repro`).")
    if abs(predictions.accuracy - stated) > 0.5 / len(predictions.actual):
        raise UserError(f"{path} at {revision.title} gives test accuracy {100 * predictions.accuracy:.2f} % but "
                        f"{metrics_file} says {100 * stated:.2f} %: they are not from the same run (or one was edited); "
                        "rerun the variant's evaluate stage (`dvc repro`) and commit both files.")
    return predictions


def predictions_path(revision: Revision, variant: str) -> str:
    for key in ("predictions", "confusion"):
        if key in revision.paths:
            return f"{revision.paths[key]}/{variant}.csv"
    raise UserError(f"dvc.yaml at {revision.title} has neither a `predictions` nor a `confusion` var: it keeps no "
                    "per-example test outcomes, so nothing can be compared example by example; review a later revision.")


def metrics_path(revision: Revision, variant: str) -> str:
    return f"{path_var(revision, 'metrics')}/{variant}.json"


def epoch_history(revision: Revision, variant: str) -> list[dict[str, Any]]:
    """Per-epoch {epoch, valid_accuracy}: DVCLive's TSV under `live`, or an older revision's JSON list under `history`."""
    if "live" in revision.paths:
        text = revision.read_text(f"{revision.paths['live']}/{variant}/plots/metrics/valid_accuracy.tsv")
        rows = list(csv.DictReader(io.StringIO(text or ""), delimiter="\t"))
        return [{"epoch": int(row["step"]), "valid_accuracy": float(row["valid_accuracy"])} for row in rows]
    rows = revision.read_json(f"{revision.paths['history']}/{variant}.json") if "history" in revision.paths else None
    return rows if isinstance(rows, list) else []


def gradient_profile(revision: Revision, variant: str) -> list[dict[str, Any]]:
    """Rows of steps_back, log10_grad_norm_init, log10_grad_norm_trained; [] when there are none."""
    for key in ("gradients", "order_gradients"):
        rows = revision.read_json(f"{revision.paths[key]}/{variant}.json") if key in revision.paths else None
        if isinstance(rows, list):
            return rows
    return []


def timings(revision: Revision, variant: str) -> dict[str, Any]:
    directory = revision.paths.get("timings")
    data = revision.read_json(f"{directory}/{variant}.json") if directory else None
    return data if isinstance(data, dict) else {}


def seed_bands(revision: Revision) -> dict[str, Any] | None:
    """The committed seed bands (python -m tools.seed_bands), or None."""
    path = revision.paths.get("seed_bands")
    data = revision.read_json(path) if path else None
    return data if isinstance(data, dict) and isinstance(data.get("variants"), dict) else None
