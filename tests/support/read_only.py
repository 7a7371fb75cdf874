"""Folders that refuse changes, for the unwritable-output tests: `chattr +i` as root (whom permissions
do not stop), `chmod a-w` for anyone else; undone when the test ends, whatever happened."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _chattr(flag: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)


class ReadOnly:
    """Call with a folder to make it read-only; `undo` makes every one writable again."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.as_root = os.geteuid() == 0

    def __call__(self, path: Path) -> None:
        if self.as_root:
            result = _chattr("+i", path)
            assert result.returncode == 0, result.stderr
        else:
            path.chmod(path.stat().st_mode & ~0o222)
        self.paths.append(path)

    def undo(self) -> None:
        for path in reversed(self.paths):
            if self.as_root:
                _chattr("-i", path)
            else:
                path.chmod(path.stat().st_mode | 0o200)
        self.paths.clear()


@pytest.fixture
def read_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadOnly]:
    """Skips where a folder cannot be made read-only (root without a working `chattr`)."""
    marker = ReadOnly()
    if marker.as_root:
        probe = tmp_path_factory.mktemp("probe")
        if shutil.which("chattr") is None or _chattr("+i", probe).returncode != 0:
            pytest.skip("running as root without `chattr +i` (e.g. tmpfs): no folder is read-only to root")
        _chattr("-i", probe)
    try:
        yield marker
    finally:
        marker.undo()
