"""What the review reads at a revision (a git revision, a DVC experiment, or the workspace): git-tracked
files only (`git show REV:path`), found through the revision's own dvc.yaml `vars`."""

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
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from rnnlab.core.errors import UserError

WORKSPACE = "workspace"
RERUN = "rerun its evaluate stage (`dvc repro`) and commit it"
OLDEST = "b5b234b"  # the first commit whose dvc.lock has the code and params stages
LAYOUT_VARS = ("metrics", "predictions", "live")


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


@functools.lru_cache(maxsize=512)
def show(repo: Path, commit: str, path: str) -> bytes | None:
    """The file at commit:path, or None (a commit's files never change: kept)."""
    shown = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True)
    return shown.stdout if shown.returncode == 0 and not shown.stdout.startswith(b"tree ") else None


def load_yaml(text: str, where: str) -> Any:
    try:
        return YAML(typ="safe").load(text)
    except YAMLError as error:
        raise UserError(f"{where} is not valid YAML ({error}); fix it there (or restore it from git).") from error


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
        return f"`{self.commit[:7]}`" if self.commit.startswith(self.label) else f"`{self.label}` ({self.commit[:7]})"

    def read_bytes(self, path: str) -> bytes | None:
        if self.commit is not None:
            return show(self.repo, self.commit, path)
        return (self.repo / path).read_bytes() if (self.repo / path).is_file() else None

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8")

    def read_json(self, path: str) -> Any:
        text = self.read_text(path)
        try:
            return None if text is None else json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path} at {self.title} is not valid JSON ({error}); rerun the stage that writes it.") from error

    def list_files(self, directory: str, suffix: str) -> list[str]:
        if self.commit is None:
            folder = self.repo / directory
            names = [path.name for path in folder.iterdir() if path.is_file()] if folder.is_dir() else []
        else:
            names = git(self.repo, "ls-tree", "--name-only", f"{self.commit}:{directory}").stdout.split()
        return [f"{directory}/{name}" for name in sorted(names) if name.endswith(suffix)]

    @functools.cached_property
    def paths(self) -> dict[str, str]:
        """dvc.yaml's `vars` (where its stages wrote metrics, predictions...), once the layout is one the review reads."""
        text = self.read_text("dvc.yaml")
        if text is None:
            raise UserError(f"{self.title} has no dvc.yaml: it is not an RNN Lab pipeline revision.")
        document = load_yaml(text, f"dvc.yaml at {self.title}") or {}
        entries = document.get("vars") or []
        paths = {
            key: value for entry in entries if isinstance(entry, dict) for key, value in entry.items() if isinstance(value, str)
        }
        if not set(LAYOUT_VARS) <= set(paths) or not {"code", "params"} <= set(document.get("stages") or {}):
            raise predates(self)
        return paths


def predates(revision: Revision) -> UserError:
    return UserError(
        f"{revision.title} predates the pipeline layout the review reads (code and params stages, per-example "
        f"predictions); compare against {OLDEST} or a later commit."
    )


def resolve(repo: Path, name: str | None) -> Revision:
    """A git revision (branch, tag, sha, `origin/main`...), a DVC experiment name, or the workspace (None)."""
    if name is None or name == WORKSPACE:
        return Revision(repo, WORKSPACE, None)
    if git(repo, "rev-parse", "--git-dir").returncode != 0:
        raise UserError(f"{repo.resolve()} is not in a git repository; run the review in the RNN Lab repository.")
    found = git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if found.returncode == 0:
        return Revision(repo, name, found.stdout.strip())
    # A DVC experiment is the git ref refs/exps/<xx>/<rest of its baseline's sha>/<name>.
    refs = [
        line.split() for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps").stdout.splitlines()
    ]
    commits = [commit for ref, commit in refs if len(ref.split("/")) == 5 and ref.endswith(f"/{name}")]
    if len(commits) > 1:
        raise UserError(f"{len(commits)} DVC experiments are named {name!r}; name one by its commit (`dvc exp show`).")
    if not commits:
        raise UserError(
            f"unknown revision {name!r}: neither a git revision nor a DVC experiment name; "
            "`git branch -a` and `dvc exp list -A` list them (in CI, fetch with `fetch-depth: 0`)."
        )
    return Revision(repo, name, commits[0])


def metrics_path(revision: Revision, variant: str) -> str:
    return f"{revision.paths['metrics']}/{variant}.json"


def variant_metrics(revision: Revision) -> dict[str, dict[str, Any]]:
    """variant -> its declared metrics over its details (no details file: revisions before that split)."""
    folder, details = revision.paths["metrics"], revision.paths.get("details")
    metrics = {}
    for path in revision.list_files(folder, ".json"):
        data, variant = revision.read_json(path), PurePosixPath(path).stem
        if isinstance(data, dict) and "accuracy" in data:
            extra = revision.read_json(f"{details}/{variant}.json") if details else None
            metrics[variant] = {**(extra if isinstance(extra, dict) else {}), **data}
    if not metrics:
        raise UserError(f"{revision.title} has no metrics ({folder}/*.json): run `dvc repro` there and commit {folder}/.")
    return metrics


@dataclass(frozen=True)
class Predictions:
    """One evaluate's per-example test outcomes, in test order."""

    path: str
    actual: np.ndarray  # class names, one per test example
    predicted: np.ndarray
    classes: tuple[str, ...]  # the p_<class> columns' order (the positive class is the second of two)
    probabilities: np.ndarray  # examples x classes

    @property
    def correct(self) -> np.ndarray:
        return self.actual == self.predicted

    @property
    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Actual and predicted class as indexes into `classes`."""
        index = {name: position for position, name in enumerate(self.classes)}
        return np.array([index[name] for name in self.actual]), np.array([index[name] for name in self.predicted])


def predictions_path(revision: Revision, variant: str) -> str:
    return f"{revision.paths['predictions']}/{variant}.csv"


def read_predictions(revision: Revision, variant: str, metrics: dict[str, Any]) -> Predictions:
    """The variant's per-example outcomes; their accuracy must be its metrics' (to one example), or they are
    from different runs (or one was edited) and no verdict can rest on them."""
    path = predictions_path(revision, variant)
    text = revision.read_text(path)
    if text is None:
        raise UserError(f"variant {variant} has metrics but no predictions at {revision.title}:{path}; {RERUN}.")
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    try:  # a header, then rows of actual, predicted (class names) and a probability per class
        header, table = rows[0], np.array(rows[1:])
        classes = tuple(name.removeprefix("p_") for name in header[2:])
        if header[:2] != ["actual", "predicted"] or table.shape[1] != len(header) or not np.isin(table[:, :2], classes).all():
            raise ValueError(header)
        probabilities = table[:, 2:].astype(float)
    except (ValueError, IndexError) as error:
        raise UserError(f"{path} at {revision.title} is not an actual,predicted,p_<class>... CSV; {RERUN}.") from error
    actual, predicted = table[:, 0], table[:, 1]
    accuracy, stated = float(np.mean(actual == predicted)), metrics.get("accuracy")
    stated = stated if isinstance(stated, (int, float)) else float("nan")
    if not abs(accuracy - stated) <= 0.5 / len(actual):
        raise UserError(
            f"{path} at {revision.title} gives test accuracy {100 * accuracy:.2f} % but {metrics_path(revision, variant)} says "
            f"{100 * stated:.2f} %: they are not from the same run "
            "(or one was edited); rerun the variant's evaluate stage (`dvc repro`) and commit both files."
        )
    return Predictions(path, actual, predicted, classes, probabilities)


def epoch_history(revision: Revision, variant: str) -> list[tuple[int, float]]:
    """(epoch, validation accuracy) per epoch, from DVCLive's TSV."""
    text = revision.read_text(f"{revision.paths['live']}/{variant}/plots/metrics/valid_accuracy.tsv") or ""
    return [(int(row["step"]), float(row["valid_accuracy"])) for row in csv.DictReader(io.StringIO(text), delimiter="\t")]


def variant_json(revision: Revision, key: str, variant: str) -> Any:
    """The variant's file in the folder dvc.yaml's var `key` names (gradients, timings...), or None."""
    return revision.read_json(f"{revision.paths[key]}/{variant}.json") if key in revision.paths else None


def seed_bands(revision: Revision) -> dict[str, Any] | None:
    """The committed seed bands (python -m tools.seed_bands), or None."""
    data = revision.read_json(revision.paths["seed_bands"]) if "seed_bands" in revision.paths else None
    return data if isinstance(data, dict) and isinstance(data.get("variants"), dict) else None
