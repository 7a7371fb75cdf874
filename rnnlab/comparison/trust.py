"""Are a revision's results the ones its own params and code give? Its dvc.lock says, read at that revision:
the `code` and `params` stages are rerun by their own commands on a copy of the revision's files (every
other stage depends on their small outputs, by md5), every other recorded dep must still be what it was,
and the variant's metrics and predictions must be the files its stage wrote. (`dvc status` answers for the
workspace only.)"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from rnnlab.comparison.revision import Revision, load_yaml, predates
from rnnlab.core.errors import UserError

GENERATED = ("code", "params")  # in the order they run: the params stage reads the code stage's output


def md5(data: bytes | None) -> str | None:
    return None if data is None else hashlib.md5(data).hexdigest()


def under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {key: leaf for name, child in value.items() for key, leaf in flatten(child, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): value}


def changed_keys(ran: bytes, now: bytes) -> list[str]:
    """`key: old → new` for each leaf that differs between two JSON files (the file names, for a code fingerprint)."""
    try:
        old, new = flatten(json.loads(ran)), flatten(json.loads(now))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return []
    keys = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    if all(key.startswith("files.") for key in keys):
        return [key.removeprefix("files.") for key in keys]
    return [f"{key}: {old.get(key, '(none)')} → {new.get(key, '(none)')}" for key in keys]


def copy_inputs(revision: Revision, paths: list[str], root: Path) -> None:
    if revision.commit is not None:
        archive = subprocess.run(["git", "archive", revision.commit, "--", *paths], cwd=revision.repo, capture_output=True)
        if archive.returncode != 0:
            raise UserError(
                f"`git archive` of {revision.title} failed ({archive.stderr.decode().strip()}); review another revision."
            )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(root, filter="data")
        return
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if (revision.repo / path).is_dir():
            shutil.copytree(revision.repo / path, root / path, ignore=shutil.ignore_patterns("__pycache__"))
        elif (revision.repo / path).is_file():
            shutil.copy(revision.repo / path, root / path)


def rerun_generated(revision: Revision, stages: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    """What the revision's code and params stages write now (their dvc.lock commands, in a temporary copy), by path."""
    outs = [out["path"] for name in GENERATED for out in stages[name].get("outs") or []]
    inputs = [
        dep["path"]
        for name in GENERATED
        for dep in stages[name].get("deps") or []
        if not any(under(dep["path"], out) for out in outs)
    ]
    with tempfile.TemporaryDirectory(prefix="rnnlab-review-") as temporary:
        root = Path(temporary)
        copy_inputs(revision, inputs, root)
        for name in GENERATED:
            command = shlex.split(stages[name]["cmd"])
            command[0] = sys.executable if command[0] == "python" else command[0]
            result = subprocess.run(
                command, cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
            )
            if result.returncode != 0:
                message = (result.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("error: ")
                raise UserError(
                    f"the {name} stage fails at {revision.title} ({message}): fix it there, or review another revision."
                )
        return {
            file.relative_to(root).as_posix(): file.read_bytes()
            for out in outs
            for file in sorted((root / out).rglob("*"))
            if file.is_file()
        }


class Freshness:
    """Which of a revision's variants have results its own params and code would not give (unchecked without dvc.lock)."""

    def __init__(self, revision: Revision) -> None:
        self.revision = revision
        text = revision.read_text("dvc.lock")
        document = load_yaml(text, f"dvc.lock at {revision.title}") if text is not None else None
        self.checked = text is not None
        self.stages: dict[str, dict[str, Any]] = (document.get("stages") or {}) if isinstance(document, dict) else {}
        if self.checked and not all(name in self.stages for name in GENERATED):
            raise predates(revision)
        self.outputs = {
            out["path"]: (name, out.get("md5")) for name, entry in self.stages.items() for out in entry.get("outs") or []
        }
        self.generated_folders = [out for out, (name, _) in self.outputs.items() if name in GENERATED]
        self.now = rerun_generated(revision, self.stages) if self.checked else {}

    def producer(self, path: str) -> str | None:
        """The stage whose output is `path` or a folder holding it."""
        return next((name for out, (name, _) in self.outputs.items() if under(path, out)), None)

    def reasons(self, outputs: list[str]) -> list[str]:
        """Why the variant whose files are `outputs` (metrics first) is not what its stages give; [] when it is."""
        if not self.checked:
            return []
        if outputs[0] not in self.outputs:
            return [
                f"no stage in dvc.lock writes {outputs[0]} (a variant removed from params.yaml leaves its outputs: "
                "delete them, or run `dvc repro`)"
            ]
        reasons = [
            f"{path} is not the file its stage wrote (dvc.lock records another md5): edited by hand, or written "
            "without `dvc repro`/`dvc commit`"
            for path in outputs
            if path in self.outputs and md5(self.revision.read_bytes(path)) != self.outputs[path][1]
        ]
        order, pending = [], [self.outputs[outputs[0]][0]]
        while pending:  # the variant's stage and every stage upstream of it, the generated ones aside
            name = pending.pop(0)
            if name not in order and name not in GENERATED and name in self.stages:
                order.append(name)
                pending += [producer for dep in self.stages[name].get("deps") or [] if (producer := self.producer(dep["path"]))]
        for name in reversed(order):  # the most upstream first: the cause before its consequences
            reasons += [
                reason
                for dep in self.stages[name].get("deps") or []
                for reason in self.dep_reasons(name, dep["path"], dep.get("md5"))
            ]
        return reasons

    def dep_reasons(self, stage: str, path: str, recorded: str | None) -> list[str]:
        if any(under(path, folder) for folder in self.generated_folders):
            now = self.now.get(path)
            if now is None:
                return [f"`{stage}` depends on {path}, which the params and code stages no longer write"]
            if md5(now) == recorded:
                return []
            ran = self.revision.read_bytes(path)
            changed = changed_keys(ran, now) if ran is not None and md5(ran) == recorded else []
            kind = "code" if self.producer(path) == "code" else "params"
            detail = f": {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}" if changed else ""
            return [f"`{stage}` ran with other {kind} than the revision's{detail}"]
        if path in self.outputs:
            producer, written = self.outputs[path]
            return [] if written == recorded else [f"`{stage}` ran on another {path} than `{producer}` last wrote"]
        if recorded is None or recorded.endswith(".dir") or self.producer(path) is not None:
            return []  # a folder, or inside another stage's output (checked through that stage)
        current = md5(self.revision.read_bytes(path))
        if current is None:
            return [f"{path}, which `{stage}` ran with, no longer exists"]
        return [] if current == recorded else [f"{path} changed since `{stage}` ran"]
