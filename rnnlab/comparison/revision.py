"""Read the pipeline's git-tracked results at a revision: a git revision, a DVC experiment, or the workspace.

Every file the review compares (metrics, predictions, history, gradient profiles, timings, seed
bands) is kept in git (`cache: false` or not a DVC output at all), so `git show REV:path` reads it
and no DVC cache is needed. A DVC experiment lives in a git ref `refs/exps/<xx>/<baseline>/<name>`,
so its name resolves to a commit like any other revision.
"""

from __future__ import annotations

import json
import subprocess
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
        return "workspace" if self.commit is None else f"`{self.label}` ({self.commit[:7]})"

    def read_text(self, path: str) -> str | None:
        """The file's text at this revision, or None when it does not exist there."""
        if self.commit is None:
            file = self.repo / path
            return file.read_text(encoding="utf-8") if file.is_file() else None
        result = subprocess.run(["git", "show", f"{self.commit}:{path}"], cwd=self.repo, capture_output=True)
        return result.stdout.decode("utf-8") if result.returncode == 0 else None

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
