"""Read the pipeline's git-tracked results at a revision: a git revision, a DVC experiment, or the workspace.

Every file the review compares (metrics, predictions, history, gradient profiles, timings, seed
bands) is kept in git (`cache: false` or not a DVC output at all), so `git cat-file` reads it at REV
and no DVC cache is needed. A DVC experiment lives in a git ref `refs/exps/<xx>/<baseline>/<name>`,
so its name resolves to a commit like any other revision.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rnnlab.core.errors import UserError
from rnnlab.core.git import experiment_refs, git
from rnnlab.core.pipeline import pipeline_vars

WORKSPACE = "workspace"


@dataclass(frozen=True)
class Revision:
    """What the user named (`label`) and the commit it stands for (None: the workspace's files)."""

    repo: Path
    label: str
    commit: str | None

    @property
    def title(self) -> str:
        if self.commit is None:
            return "workspace"
        if self.commit.startswith(self.label):  # named by its sha: once is enough
            return f"`{self.commit[:7]}`"
        return f"`{self.label}` ({self.commit[:7]})"

    def read_bytes(self, path: str) -> bytes | None:
        """The file's bytes at this revision, or None when it does not exist there."""
        if self.commit is None:  # the workspace can change between two reviews in one process: never cached
            file = self.repo / path
            return file.read_bytes() if file.is_file() else None
        return _read_at_commit(self.repo, self.commit, path)

    def read_text(self, path: str) -> str | None:
        """The file's text at this revision, or None when it does not exist there."""
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8")

    def md5(self, path: str) -> str | None:
        """md5 of the file's bytes (what DVC 3 records in dvc.lock), or None when it does not exist."""
        data = self.read_bytes(path)
        return None if data is None else hashlib.md5(data).hexdigest()

    def read_json(self, path: str) -> Any:
        text = self.read_text(path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path} at {self.title} is not valid JSON ({error}); rerun the stage that writes it and commit it.") from error

    def list_files(self, directory: str, suffix: str) -> list[str]:
        """Paths (relative to the repository) of the files directly in `directory` ending in `suffix`."""
        if self.commit is None:
            folder = self.repo / directory
            names = sorted(path.name for path in folder.iterdir() if path.is_file()) if folder.is_dir() else []
        else:
            listed = subprocess.run(["git", "ls-tree", "--name-only", f"{self.commit}:{directory}"],
                                    cwd=self.repo, capture_output=True, text=True)
            names = sorted(listed.stdout.split()) if listed.returncode == 0 else []
        return [str(PurePosixPath(directory) / name) for name in names if name.endswith(suffix)]


class BlobReader:
    """One `git cat-file --batch` for every file the review reads from a repository's commits.

    A `git show` per file was a process start each (about 70 in a review of two commits); this is one
    process, asked through its pipes. The review reads from threads (the trust checks) and from a forked
    chart worker: a lock serialises the threads, and each process starts its own reader (reader_for).
    """

    def __init__(self, repo: Path) -> None:
        self.process = subprocess.Popen(["git", "cat-file", "--batch"], cwd=repo, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lock = threading.Lock()

    def read(self, commit: str, path: str) -> bytes | None:
        """The blob at commit:path, or None when there is none (a missing path, or a folder)."""
        with self.lock:
            self.process.stdin.write(f"{commit}:{path}\n".encode())
            self.process.stdin.flush()
            header = self.process.stdout.readline()  # "<id> <type> <size>\n", or "<name> missing\n"
            if not header:
                raise UserError(f"`git cat-file` stopped while reading {commit[:7]}:{path}; rerun the review.")
            fields = header.split()
            if len(fields) != 3 or fields[2] in (b"missing", b"ambiguous"):
                return None
            data = self.process.stdout.read(int(fields[2]) + 1)[:-1]  # the content, then a newline
            return data if fields[1] == b"blob" else None

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


_READERS: dict[tuple[int, Path], BlobReader] = {}
_READERS_LOCK = threading.Lock()


def reader_for(repo: Path) -> BlobReader:
    """This process's reader for `repo` (a forked child must not talk through its parent's pipes)."""
    key = (os.getpid(), repo.resolve())
    with _READERS_LOCK:
        if key not in _READERS:
            _READERS[key] = BlobReader(repo)
        return _READERS[key]


@atexit.register
def _close_readers() -> None:
    for (pid, _), reader in list(_READERS.items()):
        if pid == os.getpid():
            reader.close()


@functools.lru_cache(maxsize=256)
def _read_at_commit(repo: Path, commit: str, path: str) -> bytes | None:
    # A commit's files never change, base and head are often the same commit, and several checks
    # read the same file.
    return reader_for(repo).read(commit, path)


def resolve(repo: Path, name: str | None) -> Revision:
    """A git revision (branch, tag, sha, `origin/main`...), a DVC experiment name, or the workspace (None)."""
    if name is None or name == WORKSPACE:
        return Revision(repo, WORKSPACE, None)
    git("rev-parse", "--git-dir", cwd=repo)  # outside a repository: the clear error of rnnlab.core.git
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], cwd=repo, capture_output=True, text=True)
    if found.returncode == 0:
        return Revision(repo, name, found.stdout.strip())
    experiments = [commit for experiment, _baseline, commit in experiment_refs(repo) if experiment == name]
    if len(experiments) == 1:
        return Revision(repo, name, experiments[0])
    if len(experiments) > 1:
        raise UserError(f"{len(experiments)} DVC experiments are named {name!r} (on different baselines); "
                         "name one by its commit (`dvc exp show` lists them).")
    raise UserError(f"unknown revision {name!r}: neither a git revision nor a DVC experiment name; "
                     "`git branch -a` and `dvc exp list -A` list them (in CI, fetch with `fetch-depth: 0`).")


def pipeline_paths(revision: Revision) -> dict[str, str]:
    """dvc.yaml's `vars` at this revision: where its stages wrote metrics, predictions, history..."""
    text = revision.read_text("dvc.yaml")
    if text is None:
        raise UserError(f"{revision.title} has no dvc.yaml: it is not an RNN Lab pipeline revision; compare two revisions of this repository.")
    return pipeline_vars(text, f"dvc.yaml at {revision.title}")
