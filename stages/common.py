"""Helpers every stage shares: atomic writes, the CLI error contract, interrupt handling."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from stages.config import ConfigError


class StageError(RuntimeError):
    """A failure a user can act on (bad archive, missing input, ...); the message says what to do."""


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    A crash or an interrupt therefore never leaves a half-written file where DVC or a later stage
    would take it for a good output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    # mkstemp creates 0600 files; give outputs the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary_path, 0o666 & ~umask)
    try:
        yield temporary_path
        os.replace(temporary_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary_path.unlink()


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: Path | str, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path | str, what: str, fix: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{what} not found at {path}. {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise StageError(f"{what} at {path} is not valid JSON ({error}). {fix}") from error


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's main: user errors print one clear line and exit 2; interrupts exit 130.

    SIGTERM is turned into KeyboardInterrupt so `finally` blocks remove temporary files.
    """
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        main(argv)
    except (ConfigError, StageError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no output was written for the unfinished step; rerun `dvc repro`.", file=sys.stderr)
        sys.exit(130)
