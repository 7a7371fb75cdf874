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
        """The files directly in `directory` whose names end in `suffix`."""
        if self.commit is None:
            folder = self.repo / directory
            names = [path.name for path in folder.iterdir() if path.is_file()] if folder.is_dir() else []
        else:
            names = git(self.repo, "ls-tree", "--name-only", f"{self.commit}:{directory}").stdout.split()
        return [f"{directory}/{name}" for name in sorted(names) if name.endswith(suffix)]

    @functools.cached_property
    def paths(self) -> dict[str, str]:
        """dvc.yaml's `vars`: where its stages wrote metrics, predictions, history..."""
        text = self.read_text("dvc.yaml")
        if text is None:
            raise UserError(f"{self.title} has no dvc.yaml: it is not an RNN Lab pipeline revision.")
        entries = (load_yaml(text, f"dvc.yaml at {self.title}") or {}).get("vars") or []
        return {key: value for entry in entries if isinstance(entry, dict) for key, value in entry.items() if isinstance(value, str)}


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
    refs = [line.split() for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps").stdout.splitlines()]
    commits = [commit for ref, commit in refs if len(ref.split("/")) == 5 and ref.endswith(f"/{name}")]
    if len(commits) > 1:
        raise UserError(f"{len(commits)} DVC experiments are named {name!r}; name one by its commit (`dvc exp show`).")
    if not commits:
        raise UserError(
            f"unknown revision {name!r}: neither a git revision nor a DVC experiment name; "
            "`git branch -a` and `dvc exp list -A` list them (in CI, fetch with `fetch-depth: 0`)."
        )
    return Revision(repo, name, commits[0])


def metrics_folder(revision: Revision) -> str:
    if "metrics" not in revision.paths:
        raise UserError(f"dvc.yaml at {revision.title} has no `metrics` in its vars.")
    return revision.paths["metrics"]


def metrics_path(revision: Revision, variant: str) -> str:
    return f"{metrics_folder(revision)}/{variant}.json"


def variant_metrics(revision: Revision) -> dict[str, dict[str, Any]]:
    """variant -> its declared metrics over its details (metrics/details/<variant>.json; before that split,
    the metrics file held everything)."""
    directory = metrics_folder(revision)
    details = revision.paths.get("details", f"{directory}/details")
    metrics = {}
    for path in revision.list_files(directory, ".json"):
        data, variant = revision.read_json(path), PurePosixPath(path).stem
        if isinstance(data, dict) and "accuracy" in data:
            extra = revision.read_json(f"{details}/{variant}.json")
            metrics[variant] = {**(extra if isinstance(extra, dict) else {}), **data}
    if not metrics:
        raise UserError(f"{revision.title} has no metrics ({directory}/*.json): run `dvc repro` there and commit {directory}/.")
    return metrics


@dataclass(frozen=True)
class Predictions:
    """One evaluate's per-example test outcomes in test order: `predictions`/<variant>.csv (actual, predicted,
    p_<class>...), or an older revision's `confusion`/<variant>.csv (actual, predicted: no probabilities)."""

    path: str
    actual: np.ndarray  # class names, one per test example
    predicted: np.ndarray
    classes: tuple[str, ...]  # the p_<class> columns' order (the positive class is the second of two)
    probabilities: np.ndarray | None  # examples x classes

    @property
    def correct(self) -> np.ndarray:
        return self.actual == self.predicted

    @property
    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Actual and predicted class as indexes into `classes`."""
        index = {name: position for position, name in enumerate(self.classes)}
        return np.array([index[name] for name in self.actual]), np.array([index[name] for name in self.predicted])


def predictions_path(revision: Revision, variant: str) -> str:
    folder = revision.paths.get("predictions", revision.paths.get("confusion"))
    if folder is None:
        raise UserError(f"dvc.yaml at {revision.title} has neither a `predictions` nor a `confusion` var; review a later revision.")
    return f"{folder}/{variant}.csv"


def read_predictions(revision: Revision, variant: str, metrics: dict[str, Any]) -> Predictions:
    """The variant's per-example outcomes; their accuracy must be its metrics' (to one example), or they are
    from different runs (or one was edited) and no verdict can rest on them."""
    path, metrics_file = predictions_path(revision, variant), metrics_path(revision, variant)
    text = revision.read_text(path)
    if text is None:
        raise UserError(f"variant {variant} has metrics but no predictions at {revision.title}:{path}; {RERUN}.")
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    try:  # a header, then rows of one class name each (actual, predicted) and a probability per class
        header, table = rows[0], np.array(rows[1:])
        classes = tuple(name.removeprefix("p_") for name in header[2:]) or tuple(sorted({*table[:, 0], *table[:, 1]}))
        if header[:2] != ["actual", "predicted"] or table.shape[1] != len(header) or not np.isin(table[:, :2], classes).all():
            raise ValueError(header)
        probabilities = table[:, 2:].astype(float) if len(header) > 2 else None
    except (ValueError, IndexError) as error:
        raise UserError(f"{path} at {revision.title} is not an actual,predicted[,p_<class>...] CSV; {RERUN}.") from error
    actual, predicted = table[:, 0], table[:, 1]
    accuracy, stated = float(np.mean(actual == predicted)), metrics.get("accuracy")
    stated = stated if isinstance(stated, (int, float)) else float("nan")
    if not abs(accuracy - stated) <= 0.5 / len(actual):
        raise UserError(
            f"{path} at {revision.title} gives test accuracy {100 * accuracy:.2f} % but {metrics_file} says "
            f"{100 * stated:.2f} %: they are not from the same run "
            "(or one was edited); rerun the variant's evaluate stage (`dvc repro`) and commit both files."
        )
    return Predictions(path, actual, predicted, classes, probabilities)


def epoch_history(revision: Revision, variant: str) -> list[dict[str, Any]]:
    """{epoch, valid_accuracy} per epoch: DVCLive's TSV under `live`, or an older revision's JSON under `history`."""
    if "live" not in revision.paths:
        rows = revision.read_json(f"{revision.paths.get('history')}/{variant}.json")
        return rows if isinstance(rows, list) else []
    text = revision.read_text(f"{revision.paths['live']}/{variant}/plots/metrics/valid_accuracy.tsv") or ""
    return [{"epoch": int(row["step"]), "valid_accuracy": float(row["valid_accuracy"])} for row in csv.DictReader(io.StringIO(text), delimiter="\t")]


def gradient_profile(revision: Revision, variant: str) -> list[dict[str, Any]]:
    """Rows of steps_back, log10_grad_norm_init, log10_grad_norm_trained; [] when there are none."""
    profiles = [revision.read_json(f"{revision.paths[key]}/{variant}.json") for key in ("gradients", "order_gradients") if key in revision.paths]
    return next((rows for rows in profiles if isinstance(rows, list)), [])


def seed_bands(revision: Revision) -> dict[str, Any] | None:
    """The committed seed bands (python -m tools.seed_bands), or None."""
    data = revision.read_json(revision.paths["seed_bands"]) if "seed_bands" in revision.paths else None
    return data if isinstance(data, dict) and isinstance(data.get("variants"), dict) else None
