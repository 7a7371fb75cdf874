"""What the review reads at a revision (a git revision, a DVC experiment, or the workspace): git-tracked
files only (`git show REV:path`), found through the revision's own dvc.yaml `vars`; and whether its results
are the ones its own params and code give (Freshness)."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from rnnlab.config.params import PARAMS_FILE, lookup, parse_params_yaml
from rnnlab.core.errors import UserError
from rnnlab.core.files import load_yaml, pipeline_vars
from rnnlab.core.git import experiment_refs

WORKSPACE = "workspace"
RERUN = "rerun its evaluate stage (`dvc repro`) and commit it"
GENERATED = ("code", "params")  # in the order they run: the params stage reads the code stage's output
OLDEST = "b5b234b"  # the first commit whose dvc.lock has the code and params stages


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


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
            shown = subprocess.run(["git", "show", f"{self.commit}:{path}"], cwd=self.repo, capture_output=True)
            return shown.stdout if shown.returncode == 0 and not shown.stdout.startswith(b"tree ") else None
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
        paths = pipeline_vars(document)
        if not {"metrics", "predictions", "live"} <= set(paths) or not set(GENERATED) <= set(document.get("stages") or {}):
            raise predates(self)
        return paths


def predates(revision: Revision) -> UserError:
    layout = "the pipeline layout the review reads (code and params stages, per-example predictions)"
    return UserError(f"{revision.title} predates {layout}; compare against {OLDEST} or a later commit.")


def resolve(repo: Path, name: str | None) -> Revision:
    """A git revision (branch, tag, sha, `origin/main`...), a DVC experiment name, or the workspace (None)."""
    if name is None or name == WORKSPACE:
        return Revision(repo, WORKSPACE, None)
    if git(repo, "rev-parse", "--git-dir").returncode != 0:
        raise UserError(f"{repo.resolve()} is not in a git repository; run the review in the RNN Lab repository.")
    found = git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if found.returncode == 0:
        return Revision(repo, name, found.stdout.strip())
    commits = [commit for experiment, _, commit in experiment_refs(repo) if experiment == name]
    if len(commits) > 1:
        raise UserError(f"{len(commits)} DVC experiments are named {name!r}; name one by its commit (`dvc exp show`).")
    if not commits:
        unknown = f"unknown revision {name!r}: neither a git revision nor a DVC experiment name; `git branch -a` and `dvc exp list -A` list them (in CI, fetch with `fetch-depth: 0`)."
        raise UserError(unknown)
    return Revision(repo, name, commits[0])


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

    actual: np.ndarray  # class names, one per test example
    predicted: np.ndarray
    classes: tuple[str, ...]  # the p_<class> columns' order (the positive class is the second of two)
    probabilities: np.ndarray  # examples x classes

    @property
    def correct(self) -> np.ndarray:
        return self.actual == self.predicted


def read_predictions(revision: Revision, variant: str, metrics: dict[str, Any]) -> Predictions:
    """The variant's per-example outcomes; their accuracy must be its metrics' (to one example), or they are
    from different runs (or one was edited) and no verdict can rest on them."""
    path, metrics_file = f"{revision.paths['predictions']}/{variant}.csv", f"{revision.paths['metrics']}/{variant}.json"
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
        mismatch = f"{path} at {revision.title} gives test accuracy {100 * accuracy:.2f} % but {metrics_file} says {100 * stated:.2f} %: they are not from the same run (or one was edited); rerun the variant's evaluate stage (`dvc repro`) and commit both files."
        raise UserError(mismatch)
    return Predictions(actual, predicted, classes, probabilities)


def variant_json(revision: Revision, key: str, variant: str) -> Any:
    """The variant's file in the folder dvc.yaml's var `key` names (gradients, timings...), or None."""
    return revision.read_json(f"{revision.paths[key]}/{variant}.json") if key in revision.paths else None


def md5(data: bytes | None) -> str | None:
    return None if data is None else hashlib.md5(data).hexdigest()


def under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {key: leaf for name, child in value.items() for key, leaf in flatten(child, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): value}


def changes(ran: Any, now: Any) -> str:
    """`: key: old → new, ...` for the leaves that differ (the file names, for a code fingerprint); "" when none do."""
    old, new = flatten(ran), flatten(now)
    keys = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    if all(key.startswith("files.") for key in keys):
        keys = [key.removeprefix("files.") for key in keys]
    else:
        keys = [f"{key}: {old.get(key, '(none)')} → {new.get(key, '(none)')}" for key in keys]
    return f": {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" if keys else ""


def stale_params(stage: dict[str, Any], params: Any) -> str:
    """`changes` from the params.yaml values a dvc.lock stage entry ran with to `params` (params.yaml's mapping)."""
    recorded = (stage.get("params") or {}).get(str(PARAMS_FILE)) or {}
    return changes(recorded, {key: lookup(params, key) for key in recorded})


def rerun_generated(revision: Revision, stages: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    """What the revision's code and params stages write now (their dvc.lock commands, in a temporary copy), by path."""
    outs = [out["path"] for name in GENERATED for out in stages[name].get("outs") or []]
    deps = [dep["path"] for name in GENERATED for dep in stages[name].get("deps") or []]
    inputs = [dep for dep in deps if not any(under(dep, out) for out in outs)]
    with tempfile.TemporaryDirectory(prefix="rnnlab-review-") as temporary:
        root = Path(temporary)
        if revision.commit is not None:  # the stages' inputs as committed
            archive = subprocess.run(["git", "archive", revision.commit, "--", *inputs], cwd=revision.repo, capture_output=True)
            if archive.returncode != 0:
                message = archive.stderr.decode().strip()
                raise UserError(f"`git archive` of {revision.title} failed ({message}); review another revision.")
            with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                tar.extractall(root, filter="data")
        else:  # or as they are on disk
            for path in inputs:
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                if (revision.repo / path).is_dir():
                    shutil.copytree(revision.repo / path, root / path, ignore=shutil.ignore_patterns("__pycache__"))
                elif (revision.repo / path).is_file():
                    shutil.copy(revision.repo / path, root / path)
        for name in GENERATED:
            command = shlex.split(stages[name]["cmd"])
            command[0] = sys.executable if command[0] == "python" else command[0]
            result = subprocess.run(command, cwd=root, capture_output=True, text=True)
            if result.returncode != 0:
                message = (result.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("error: ")
                fix = "fix it there, or review another revision"
                raise UserError(f"the {name} stage fails at {revision.title} ({message}): {fix}.")
        files = [file for out in outs for file in [root / out, *sorted((root / out).rglob("*"))] if file.is_file()]
        return {file.relative_to(root).as_posix(): file.read_bytes() for file in files}


class Freshness:
    """Which variants have results the revision's own params and code would not give, by its dvc.lock (`dvc status`
    answers for the workspace only): the code and params stages rerun on a copy of its files (the other stages depend
    on their outputs), the params.yaml keys each stage lists compared, every other dep as recorded, and the variant's
    files the ones its stage wrote."""

    def __init__(self, revision: Revision) -> None:
        self.revision = revision
        text = revision.read_text("dvc.lock")
        document = load_yaml(text, f"dvc.lock at {revision.title}") if text is not None else None
        self.checked = text is not None
        self.stages: dict[str, dict[str, Any]] = (document.get("stages") or {}) if isinstance(document, dict) else {}
        if self.checked and not all(name in self.stages for name in GENERATED):
            raise predates(revision)
        outs = [(name, out) for name, entry in self.stages.items() for out in entry.get("outs") or []]
        self.outputs = {out["path"]: (name, out.get("md5")) for name, out in outs}
        self.now = rerun_generated(revision, self.stages) if self.checked else {}
        self.params = parse_params_yaml(revision.read_text(str(PARAMS_FILE)) or "{}") if self.checked else {}

    def producer(self, path: str) -> str | None:
        return next((name for out, (name, _) in self.outputs.items() if under(path, out)), None)

    def reasons(self, outputs: list[str]) -> list[str]:
        """Why the variant whose files are `outputs` (metrics first) is not what its stages give; [] when it is."""
        if not self.checked:
            return []
        if outputs[0] not in self.outputs:
            why = "a variant removed from params.yaml leaves its outputs: delete them, or run `dvc repro`"
            return [f"no stage in dvc.lock writes {outputs[0]} ({why})"]
        why = "(dvc.lock records another md5): edited by hand, or written without `dvc repro`/`dvc commit`"
        recorded = {path: self.outputs[path][1] for path in outputs if path in self.outputs}
        edited = [path for path, written in recorded.items() if written != md5(self.revision.read_bytes(path))]
        reasons = [f"{path} is not the file its stage wrote {why}" for path in edited]
        order, pending = [], [self.outputs[outputs[0]][0]]
        while pending:  # the variant's stage and every stage upstream of it, the generated ones aside
            name = pending.pop(0)
            if name not in order and name not in GENERATED:
                order.append(name)
                pending += [producer for dep in self.stages[name].get("deps") or [] if (producer := self.producer(dep["path"]))]
        for name in reversed(order):  # the most upstream first: the cause before its consequences
            if changed := stale_params(self.stages[name], self.params):
                reasons.append(f"`{name}` ran with other params than the revision's{changed}")
            for dep in self.stages[name].get("deps") or []:
                reasons += self.dep_reasons(name, dep["path"], dep.get("md5"))
        return reasons

    def dep_reasons(self, stage: str, path: str, recorded: str | None) -> list[str]:
        if (producer := self.producer(path)) in GENERATED:
            now = self.now.get(path)
            if now is None:
                return [f"`{stage}` depends on {path}, which the params and code stages no longer write"]
            if md5(now) == recorded:
                return []
            ran = self.revision.read_bytes(path)
            readable = ran is not None and md5(ran) == recorded and path.endswith(".json")
            changed = changes(json.loads(ran or "{}"), json.loads(now)) if readable else ""
            return [f"`{stage}` ran with other {producer} than the revision's{changed}"]
        if path in self.outputs:
            producer, written = self.outputs[path]
            return [] if written == recorded else [f"`{stage}` ran on another {path} than `{producer}` last wrote"]
        return []  # inside another stage's output, checked through that stage (the pipeline's other inputs are generated)
