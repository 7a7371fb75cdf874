"""git, for the tools that read revisions and DVC experiments (review, studies, seed bands)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from rnnlab.core.errors import UserError


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"`git {' '.join(args)}` failed in {cwd}: {result.stderr.strip()}. Run this from the RNN Lab repository.")
    return result.stdout


def show(repo: Path, commit: str, path: str) -> str:
    return git("show", f"{commit}:{path}", cwd=repo)


def experiment_refs(repo: Path) -> list[tuple[str, str, str]]:
    """(name, baseline commit, experiment commit) for every DVC experiment ref `refs/exps/<xx>/<baseline>/<name>`."""
    refs = []
    for line in git("for-each-ref", "--format=%(refname) %(objectname)", "refs/exps", cwd=repo).splitlines():
        refname, commit = line.split()
        parts = refname.split("/")
        # DVC also keeps bookkeeping refs (refs/exps/exec/..., refs/exps/celery/...): not experiments.
        if len(parts) == 5 and len(parts[2]) == 2 and len(parts[2] + parts[3]) == 40:
            refs.append((parts[4], parts[2] + parts[3], commit))
    return refs
