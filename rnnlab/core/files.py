"""Atomic writes: an output is either complete or absent, never half-written (a crash, an interrupt, a full disk)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from rnnlab.core.errors import DiskFullError, UserError

# A full disk (ENOSPC), a file-size limit (EFBIG, e.g. `ulimit -f`) and a full quota (EDQUOT).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def disk_full_cause(error: BaseException) -> OSError | None:
    """The full-disk OSError behind `error`, if any: torch.save reports a failed write as a bare
    RuntimeError ("enforce fail at inline_container.cc"), with the OSError only as its context."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if is_disk_full(current):
            return current  # type: ignore[return-value]
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def disk_full_error(path: Path, error: OSError, left: str = "no partial output was left behind") -> DiskFullError:
    reason = {errno.ENOSPC: "no space left on device", errno.EFBIG: "file size limit reached",
              errno.EDQUOT: "disk quota exceeded"}[error.errno]
    return DiskFullError(
        f"{reason} while writing {path} ({errno.errorcode[error.errno]}: {error.strerror}). Free disk space (or "
        f"move the DVC cache to a bigger disk: `dvc cache dir <path>`) and rerun; {left}."
    )


def _permissions_as_open(path: Path, mode: int) -> None:
    # mkstemp/mkdtemp create 0600/0700 entries; give outputs the permissions a plain open()/mkdir() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    A crash, an interrupt or a full disk therefore never leaves a half-written file where DVC or a
    later stage would take it for a good output; a full disk becomes a DiskFullError (exit 2).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(path, error) from error
        raise
    os.close(handle)
    temporary_path = Path(temporary)
    _permissions_as_open(temporary_path, 0o666)
    try:
        yield temporary_path
        os.replace(temporary_path, path)
    except DiskFullError:
        raise
    except Exception as error:
        cause = disk_full_cause(error)  # from a write, or from the close that flushes the last buffer
        if cause is not None:
            raise disk_full_error(path, cause) from error
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary_path.unlink()


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds.

    For directory outputs (data/prepared, data/xy): a failure part-way (a full disk on the last
    split, an interrupt) leaves neither a mix of new and old files nor a half-filled directory that
    DVC or a later stage would read as complete; an earlier complete `path` stays as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(path, error) from error
        raise
    _permissions_as_open(temporary, 0o777)
    try:
        try:
            yield temporary
        except DiskFullError as error:
            # Name the file as the user knows it, not by its place in the temporary directory.
            raise DiskFullError(str(error).replace(str(temporary), str(path))) from error
        except Exception as error:
            cause = disk_full_cause(error)
            if cause is not None:
                raise disk_full_error(path, cause) from error
            raise
        _replace_directory(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _replace_directory(new: Path, path: Path) -> None:
    """Move `new` to `path`; an existing `path` is moved aside first and deleted after."""
    if not (path.exists() or path.is_symlink()):
        os.replace(new, path)
        return
    if path.is_dir() and not path.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / path.name)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        path.unlink()
        os.replace(new, path)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: Path | str, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path | str, what: str, fix: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found at {path}. {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{what} at {path} is not valid JSON ({error}). {fix}") from error


