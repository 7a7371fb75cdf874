"""rnnlab.comparison.revision's reader: one `git cat-file --batch` per process, shared by threads, never by a fork."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rnnlab.comparison.revision import reader_for
from rnnlab.core.parallel import ForkedCall


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def commit(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "plots").mkdir()
    for number in range(20):
        (tmp_path / "plots" / f"{number}.csv").write_bytes(f"actual,predicted\n{'pos,neg' * number}\n".encode() + bytes([number]))
    (tmp_path / "empty.txt").write_bytes(b"")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "files")
    return tmp_path, git(tmp_path, "rev-parse", "HEAD")


def test_blobs_missing_paths_and_folders(commit: tuple[Path, str]) -> None:
    repo, sha = commit
    reader = reader_for(repo)
    assert reader.read(sha, "plots/3.csv") == (repo / "plots" / "3.csv").read_bytes()
    assert reader.read(sha, "empty.txt") == b""
    assert reader.read(sha, "plots/missing.csv") is None
    assert reader.read(sha, "plots") is None  # a folder is not a file
    assert reader.read(sha, "plots/10.csv") == (repo / "plots" / "10.csv").read_bytes()  # still in step after those


def test_threads_share_the_reader_and_each_gets_its_own_file(commit: tuple[Path, str]) -> None:
    repo, sha = commit
    with ThreadPoolExecutor(max_workers=8) as pool:
        read = list(pool.map(lambda number: reader_for(repo).read(sha, f"plots/{number % 20}.csv"), range(400)))
    assert read == [(repo / "plots" / f"{number % 20}.csv").read_bytes() for number in range(400)]


def read_in_child(repo: Path, sha: str) -> tuple[int, bytes | None]:
    reader = reader_for(repo)
    return reader.process.pid, reader.read(sha, "plots/5.csv")


def test_a_forked_child_starts_its_own_reader(commit: tuple[Path, str]) -> None:
    repo, sha = commit
    parent = reader_for(repo)
    assert parent.read(sha, "plots/1.csv") is not None  # the parent's reader is up before the fork
    with ForkedCall(read_in_child, repo, sha) as child:
        pid, data = child.result()
    assert pid != parent.process.pid and data == (repo / "plots" / "5.csv").read_bytes()
    assert parent.read(sha, "plots/2.csv") == (repo / "plots" / "2.csv").read_bytes()  # the parent's pipes untouched
