"""A throwaway git + DVC repository holding this pipeline with tiny params and a synthetic archive.

Used by the DVC benchmarks and the end-to-end tests: what runs there is the real dvc.yaml and
stages/ of this checkout, only params.yaml is shrunk so every stage takes a moment.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from rnnlab.config.params import read_params_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore")
# The code dvc.yaml runs: the stages, the library they call, the other tools.
PROJECT_DIRS = ("stages", "rnnlab", "tools")
RUNNING_STAGE = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)

TINY_PARAMS: dict[str, Any] = {
    "data": {"vocab_size": 100, "min_freq": 1, "fix_length": 32},
    "model": {"embedding_dim": 8, "hidden_size": 8, "head_size": 8},
    "train": {"epochs": 1, "batch_size": 32},
    "order": {
        "data": {
            "train_size": 64,
            "valid_size": 32,
            "test_size": 32,
            "min_length": 12,
            "max_length": 16,
            "early_window": [2, 4],
            "late_window": [6, 9],
        },
        "train": {"epochs": 1, "batch_size": 32},
    },
}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def dvc_environment(archive: Path) -> dict[str, str]:
    """This interpreter's dvc and python first on PATH (stage commands say `python`); one torch thread
    per stage so parallel runs do not oversubscribe the cores; the synthetic archive instead of a download."""
    environment = dict(os.environ)
    environment["PATH"] = str(Path(sys.executable).parent) + os.pathsep + environment.get("PATH", "")
    environment.update(
        {
            "RNNLAB_THREADS": "1",
            "IMDB_ARCHIVE": str(archive),
            "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@example.invalid",
        }
    )
    environment.pop("PYTHONPATH", None)  # stages must come from the temporary repository
    return environment


class DvcRepo:
    def __init__(self, root: Path, archive: Path) -> None:
        self.root = root
        self.archive = archive
        self.environment = dvc_environment(archive)

    def run(self, *arguments: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`dvc ...` (or `git ...` when the first argument is "git"), output captured as text."""
        command = ["git", *arguments[1:]] if arguments[0] == "git" else [sys.executable, "-m", "dvc", *arguments]
        completed = subprocess.run(command, cwd=cwd or self.root, env=self.environment, capture_output=True, text=True)
        if check and completed.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
        return completed

    def git_identity(self) -> dict[str, str]:
        """Who commits here, for commands run outside `run` (a sweep's driver commits the experiments it pulls)."""
        return {key: value for key, value in self.environment.items() if key.startswith("GIT_")}

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "-m", message)


def stages_run(output: str) -> list[str]:
    """Stage names from DVC's "Running stage '<name>':" lines."""
    return RUNNING_STAGE.findall(output)


def copy_pipeline(root: Path, source: Path = PROJECT_ROOT) -> None:
    """The pipeline's code and definition files from `source` (this checkout) into `root`; no data, no git."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_DIRS:
        if (source / name).is_dir():  # an earlier commit's tree may lack some (bench/dvc_bench.py compares one)
            shutil.copytree(source / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in PROJECT_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, root / name)


def make_pipeline_repo(
    root: Path,
    archive: Path,
    variants: dict[str, Any] | None = None,
    order_variants: dict[str, Any] | None = None,
    source: Path = PROJECT_ROOT,
    sizes: dict[str, Any] = TINY_PARAMS,
) -> DvcRepo:
    """git init + dvc init a copy of the pipeline in `source` (this checkout) at `root` with `sizes`
    (TINY_PARAMS; {} keeps the real ones) and optionally fewer variants."""
    copy_pipeline(root, source)
    params = merge(read_params_file(source / "params.yaml"), sizes)
    if variants is not None:
        params["variants"] = variants
    if order_variants is not None:
        params["order"]["variants"] = order_variants
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    repo = DvcRepo(root, archive)
    repo.run("git", "init", "-q")
    repo.run("init", "-q")
    repo.run("config", "core.analytics", "false")
    repo.commit("pipeline with tiny params")
    return repo


def export_commit(commit: str, destination: Path) -> Path:
    """The files of `commit` of this checkout's git repository, unpacked into `destination`."""
    destination.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=PROJECT_ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive.stdout, check=True)
    return destination


def share(repo: DvcRepo, s3_endpoint: str, bare: Path) -> None:
    """Publish `repo` as a sweep needs it (python -m tools.sweep): an S3 store as its committed default DVC
    remote `storage`, and a bare git repository as `origin`, holding HEAD."""
    repo.run("remote", "add", "--project", "-d", "storage", "s3://rnnlab/storage")
    repo.run("remote", "modify", "--project", "storage", "endpointurl", s3_endpoint)
    repo.commit("the shared DVC remote")
    repo.run("git", "init", "-q", "--bare", str(bare))
    repo.run("git", "remote", "add", "origin", str(bare))
    repo.run("git", "push", "-q", "origin", "HEAD:main")
