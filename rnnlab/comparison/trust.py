"""Are a revision's results the ones its own params and code give? dvc.lock, checked without running DVC.

A result that was never rerun after a change must not pass as "no change". `dvc status` answers this
for the workspace only, and also counts data that is merely absent (a CI checkout without the DVC
cache). Here every revision (git commit, experiment, workspace) is checked the same way, from files
git keeps:

- the `params` and `code` stages are rerun into a temporary folder, on that revision's own
  params.yaml and code (`python -m stages.params`, `python -m stages.code`, in a copy git writes of
  the revision): what they write is what `dvc repro` would give the other stages, and the md5 each
  stage's dvc.lock entry records for its `data/params/...` and `data/code/...` deps must match it
  (else the stage ran with other params or other code);
  a commit's reruns are kept by the git ids of what they read (its packages' trees, its params.yaml):
  the code stage runs once for base and head with the same code (a pull request that changes only
  params, a DVC experiment), the params stage once per params.yaml;
- every other dep recorded in dvc.lock must still be what it was: a stage's output by the md5 its
  producing stage recorded (upstream stages are checked the same way, so a data change is caught),
  a source file by its md5 at the revision, and (revisions from before the params stage) each
  `params:` value by params.yaml's;
- the variant's metrics and per-example predictions must be the files its stage wrote (their md5).

Not compared: the stage commands (a changed `cmd` comes with a dvc.yaml change that also changes deps).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rnnlab.comparison.revision import Revision
from rnnlab.comparison.sources import paths_of
from rnnlab.core.errors import UserError

LOCK_FILE = "dvc.lock"
GENERATED_STAGES = ("params", "code")  # dvc.yaml stages whose outputs every other stage depends on
# Runs some of the revision's own params and code stages: argv holds module, out folder, module, out folder...
REGENERATE = """
import runpy, sys
jobs = sys.argv[1:]
for module, out in zip(jobs[0::2], jobs[1::2]):
    sys.argv = [module, "--out", out]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
STAGE_MODULES = {"params": "stages.params", "code": "stages.code"}
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader reads a 50 kB dvc.lock 10x faster


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def under(path: str, folder: str) -> bool:
    """`path` is inside `folder` (repository-relative POSIX paths, as dvc.lock writes them)."""
    return path.startswith(folder.rstrip("/") + "/")


@dataclass(frozen=True)
class Lock:
    """dvc.lock's stages, and which stage wrote each recorded output."""

    stages: dict[str, dict[str, Any]]
    producers: dict[str, str] = field(default_factory=dict)  # output path -> stage name

    def output_md5(self, path: str) -> str | None:
        stage = self.producers.get(path)
        return None if stage is None else next((out.get("md5") for out in self.stages[stage].get("outs") or []
                                                if out.get("path") == path), None)

    def producer_of(self, path: str) -> str | None:
        """The stage whose output is `path` or a folder holding it."""
        if path in self.producers:
            return self.producers[path]
        return next((stage for out, stage in self.producers.items() if under(path, out)), None)


def parse_lock(text: str, where: str) -> Lock:
    try:
        document = yaml.load(text, Loader=YAML_LOADER) or {}
    except yaml.YAMLError as error:
        raise UserError(f"dvc.lock at {where} is not valid YAML ({error}); restore it from git or rerun `dvc repro`.") from error
    stages = document.get("stages") if isinstance(document, dict) else None
    if not isinstance(stages, dict):
        raise UserError(f"dvc.lock at {where} has no stages; restore it from git or rerun `dvc repro`.")
    producers = {out["path"]: name for name, entry in stages.items() for out in entry.get("outs") or [] if "path" in out}
    return Lock(stages, producers)


def tree_ids(revision: Revision) -> dict[str, str]:
    """Every path of a commit, folders included, with its git id (one `git ls-tree`: the packages and their keys)."""
    listed = subprocess.run(["git", "ls-tree", "-r", "-t", "-z", revision.commit], cwd=revision.repo,
                            capture_output=True, text=True, check=True).stdout
    entries = (entry.split("\t", 1) for entry in listed.split("\0") if entry)  # "<mode> <type> <id>\t<path>"
    return {path: meta.split()[2] for meta, path in entries}


def package_folders(ids: dict[str, str]) -> list[str]:
    """The commit's top-level Python packages (what its stage modules can import)."""
    return sorted({path.split("/")[0] for path in ids if path.count("/") == 1 and path.endswith("/__init__.py")})


def extract(revision: Revision, folder: Path, packages: list[str]) -> None:
    """params.yaml and the Python `packages` of a commit, into the new folder `folder`: git writes them (through a
    throw-away index beside it, so the repository's own index and work tree are untouched, and with hooks off: a
    post-checkout hook such as `dvc install`'s must not run). A third of `git archive` plus tarfile's time, none of
    it in this process, whose main thread is reading predictions meanwhile."""
    folder.mkdir()
    result = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", f"--work-tree={folder}", "checkout", revision.commit, "--",
                             "params.yaml", *packages], cwd=revision.repo, capture_output=True, text=True,
                            env={**os.environ, "GIT_INDEX_FILE": str(folder.parent / f"{folder.name}.index")})
    if result.returncode != 0:
        raise UserError(f"`git checkout` of {revision.title}'s params.yaml and packages failed ({result.stderr.strip()}); "
                         "run the review in the RNN Lab repository.")


def run_stages(revision: Revision, root: Path, stages: list[str]) -> dict[str, dict[str, bytes]]:
    """Run the revision's `stages` (names in STAGE_MODULES) in `root`: per stage, its files by path inside its out folder."""
    with tempfile.TemporaryDirectory(prefix="rnnlab-review-out-") as temporary:
        outs = {stage: Path(temporary) / stage for stage in stages}
        jobs = [str(part) for stage in stages for part in (STAGE_MODULES[stage], outs[stage])]
        result = subprocess.run([sys.executable, "-c", REGENERATE, *jobs], cwd=root, capture_output=True,
                                text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        if result.returncode != 0:
            message = (result.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("error: ")
            raise UserError(f"the params or code stage fails at {revision.title} ({message}), so its results cannot be "
                             "checked against its params.yaml and code; fix it there, or review another revision.")
        return {stage: {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}
                for stage, out in outs.items()}


def input_keys(ids: dict[str, str], packages: list[str]) -> dict[str, tuple[str, ...]]:
    """Per generated stage, the git ids of everything it reads at a commit: the code stage reads the packages, the
    params stage params.yaml and the packages (its schema). Equal keys, equal outputs (same interpreter)."""
    code = (sys.version, *(f"{name}={ids.get(name)}" for name in packages))
    return {"code": code, "params": (*code, f"params.yaml={ids.get('params.yaml')}")}


class StageMemo:
    """The generated stages' outputs by input key, shared by the review's two trust-check threads: the first
    thread to need a key runs it, one that needs it meanwhile waits for that run instead of repeating it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[tuple[str, ...], Future[dict[str, bytes]]] = {}

    def claim(self, key: tuple[str, ...]) -> tuple[Future[dict[str, bytes]], bool]:
        """The key's future, and whether the caller must compute it (set_result or set_exception)."""
        with self._lock:
            if key in self._results:
                return self._results[key], False
            self._results[key] = Future()
            return self._results[key], True


_STAGE_MEMO = StageMemo()


def regenerate(revision: Revision, params_folder: str, code_folder: str) -> dict[str, bytes]:
    """What the revision's params and code stages write now, by repository path."""
    folders = {"params": params_folder, "code": code_folder}
    if revision.commit is None:  # the workspace can change between two reviews in one process: never kept
        outputs = run_stages(revision, revision.repo, list(folders))
    else:
        ids = tree_ids(revision)
        packages = package_folders(ids)
        claims = {stage: _STAGE_MEMO.claim((stage, *key)) for stage, key in input_keys(ids, packages).items()}
        mine = [stage for stage, (_, owned) in claims.items() if owned]
        if mine:
            try:
                with tempfile.TemporaryDirectory(prefix="rnnlab-review-") as temporary:
                    extract(revision, Path(temporary) / "tree", packages)
                    ran = run_stages(revision, Path(temporary) / "tree", mine)
            except BaseException as error:  # a waiting thread gets the same error, not a hang
                for stage in mine:
                    claims[stage][0].set_exception(error)
                raise
            for stage in mine:
                claims[stage][0].set_result(ran[stage])
        outputs = {stage: future.result() for stage, (future, _) in claims.items()}
    return {f"{folders[stage]}/{path}": data for stage in folders for path, data in outputs[stage].items()}


def lookup(document: Any, dotted: str) -> tuple[bool, Any]:
    """DVC's dotted params key in a parsed params file: (found, value)."""
    node = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {key: leaf for name, child in value.items() for key, leaf in flatten(child, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): value}


def changed_keys(ran: bytes, now: bytes) -> list[str]:
    """`key: old → new` for each leaf that differs between two JSON files (the files' names for code)."""
    try:
        old, new = flatten(json.loads(ran)), flatten(json.loads(now))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return []
    keys = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    if all(key.startswith("files.") for key in keys):  # a code fingerprint: name the files
        return [key.removeprefix("files.") for key in keys]
    return [f"{key}: {old.get(key, '(none)')} → {new.get(key, '(none)')}" for key in keys]


class Freshness:
    """Which of a revision's variants have results that its own params and code would not give."""

    def __init__(self, revision: Revision) -> None:
        self.revision = revision
        self.paths = paths_of(revision)
        text = revision.read_text(LOCK_FILE)
        self.lock = parse_lock(text, revision.title) if text is not None else None
        pipeline = yaml.load(revision.read_text("dvc.yaml") or "", Loader=YAML_LOADER) or {}
        self.generated = {name: self.paths[name] for name in GENERATED_STAGES
                          if name in (pipeline.get("stages") or {}) and name in self.paths}
        self.regenerated = (regenerate(revision, self.generated["params"], self.generated["code"])
                            if self.lock is not None and len(self.generated) == len(GENERATED_STAGES) else None)
        self._stage_reasons: dict[str, list[str]] = {}
        self._params_files: dict[str, Any] = {}

    @property
    def checked(self) -> bool:
        return self.lock is not None

    def reasons(self, outputs: list[str]) -> list[str]:
        """Why the variant whose files are `outputs` (metrics first) is not what its stages give; [] when it is."""
        if self.lock is None:
            return []
        stage = self.lock.producers.get(outputs[0])
        if stage is None:
            return [f"no stage in dvc.lock writes {outputs[0]} (a variant removed from params.yaml leaves its outputs: "
                    "delete them, or run `dvc repro`)"]
        reasons = []
        for path in outputs:
            recorded = self.lock.output_md5(path)
            if recorded is not None and self.revision.md5(path) != recorded:
                reasons.append(f"{path} is not the file its stage wrote (dvc.lock records another md5): edited by hand, "
                               "or written without `dvc repro`/`dvc commit`")
        for name in reversed(self.upstream(stage)):  # the most upstream first: the cause before its consequences
            reasons += self.stage_reasons(name)
        return reasons

    def upstream(self, stage: str) -> list[str]:
        """`stage` and every stage whose outputs it depends on, through dvc.lock (the params and code stages aside)."""
        order, pending = [], [stage]
        while pending:
            name = pending.pop(0)
            if name in order or name in self.generated or name not in self.lock.stages:
                continue
            order.append(name)
            pending += [producer for dep in self.lock.stages[name].get("deps") or []
                        if (producer := self.lock.producer_of(dep.get("path", ""))) is not None]
        return order

    def stage_reasons(self, name: str) -> list[str]:
        if name not in self._stage_reasons:
            self._stage_reasons[name] = self._check_stage(name)
        return self._stage_reasons[name]

    def _check_stage(self, name: str) -> list[str]:
        entry = self.lock.stages[name]
        deps = [dep for dep in entry.get("deps") or [] if isinstance(dep.get("path"), str)]
        reasons = []
        if self.regenerated is not None and not any(under(dep["path"], folder) for dep in deps for folder in self.generated.values()):
            reasons.append(f"dvc.lock's `{name}` predates the params and code stages of dvc.yaml: it has not run since")
        for dep in deps:
            reasons += self._check_dep(name, dep["path"], dep.get("md5"))
        for file, values in (entry.get("params") or {}).items():
            reasons += self._check_params(name, file, values or {})
        return reasons

    def _check_dep(self, stage: str, path: str, recorded: str | None) -> list[str]:
        if self.regenerated is not None and any(under(path, folder) for folder in self.generated.values()):
            now = self.regenerated.get(path)
            if now is None:
                return [f"`{stage}` depends on {path}, which the params and code stages no longer write"]
            if md5(now) == recorded:
                return []
            ran = self.revision.read_bytes(path)
            what = changed_keys(ran, now) if ran is not None and md5(ran) == recorded else []
            kind = "code" if under(path, self.generated["code"]) else "params"
            detail = f": {', '.join(what[:3])}{' ...' if len(what) > 3 else ''}" if what else ""
            return [f"`{stage}` ran with other {kind} than the revision's{detail}"]
        producer = self.lock.producers.get(path)
        if producer is not None:
            return [] if self.lock.output_md5(path) == recorded else [f"`{stage}` ran on another {path} than `{producer}` last wrote"]
        if recorded is None or recorded.endswith(".dir") or self.lock.producer_of(path) is not None:
            return []  # a folder (no per-file record here), or inside another stage's output (checked through it)
        current = self.revision.md5(path)
        if current is None:
            return [f"{path}, which `{stage}` ran with, no longer exists"]
        return [] if current == recorded else [f"{path} changed since `{stage}` ran"]

    def _check_params(self, stage: str, file: str, values: dict[str, Any]) -> list[str]:
        if file not in self._params_files:
            text = self.revision.read_text(file)
            self._params_files[file] = yaml.load(text, Loader=YAML_LOADER) if text is not None else None
        document = self._params_files[file]
        reasons = []
        for key, ran_with in values.items():
            found, now = lookup(document, key)
            if not found:
                reasons.append(f"{file} no longer has `{key}`, which `{stage}` ran with")
            elif now != ran_with:
                reasons.append(f"`{stage}` ran with other params than the revision's: {key} changed in {file}")
        return reasons


_CHECKED_COMMITS: dict[tuple[Path, str], Freshness] = {}


def freshness(revision: Revision) -> Freshness:
    """The check for a revision; a commit's is made once per process (base and head are often the same commit)."""
    if revision.commit is None:  # the workspace can change between two reviews in one process
        return Freshness(revision)
    key = (revision.repo.resolve(), revision.commit)
    if key not in _CHECKED_COMMITS:
        _CHECKED_COMMITS[key] = Freshness(revision)
    return _CHECKED_COMMITS[key]
