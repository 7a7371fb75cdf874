"""One writer per output: an exclusive lock on a file beside it, which names the process holding it.

DVC's own lock keeps two `dvc repro` in one workspace apart, but not a stage left running after its
`dvc` died (or one started by hand) from the next run of the same stage; the two would write the same
checkpoint and DVCLive files. The lock is `fcntl.flock`: the kernel drops it when its holder exits,
however it exits, so a stale lock file never blocks anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from rnnlab.core.errors import UserError
from rnnlab.core.files import check_writable, is_unwritable, unwritable_error


def lock_file(path: Path) -> Path:
    """Where the lock for `path` lives: `.<name>.lock` beside it (outside the output, so DVC never sees it)."""
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def exclusive_writer(path: Path | str, what: str) -> Iterator[None]:
    """Hold the lock for `path` while the block runs; a second process asking for it gets a UserError
    naming the first one's PID. Taken before anything of the output is written or removed."""
    path = Path(path)
    lock = lock_file(path)
    check_writable(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = _acquire(lock, path, what)
    try:
        yield
    finally:
        # Removed while still held: a process that opened it meanwhile finds it gone and opens anew.
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(handle)


def _acquire(lock: Path, path: Path, what: str) -> int:
    while True:
        try:
            handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            if is_unwritable(error):
                raise unwritable_error(path, lock.parent, error.strerror) from error
            raise
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            os.close(handle)
            raise UserError(
                f"another {what} (PID {holder}) is writing {path}; wait for it to end, or stop it (`kill {holder}`), "
                f"then rerun. Nothing was changed. (Lock: {lock}.)"
            ) from None
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(handle).st_ino:
            break
        os.close(handle)  # the previous holder removed the file after we opened it: lock the new one
    os.ftruncate(handle, 0)
    os.write(handle, f"{os.getpid()}\n".encode())
    return handle


def _holder(handle: int) -> str:
    """The PID the holder wrote, or "unknown" in the moment between its lock and its write."""
    text = os.pread(handle, 32, 0).decode("ascii", errors="replace").strip()
    return text if text.isdigit() else "unknown"
