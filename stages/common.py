"""Helpers every stage shares: atomic writes, the CLI error contract, interrupt handling."""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

from stages.config import ConfigError


class StageError(RuntimeError):
    """A failure a user can act on (bad archive, missing input, ...); the message says what to do."""


# A full disk (ENOSPC), a file-size limit (EFBIG, e.g. `ulimit -f`) and a full quota (EDQUOT).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class DiskFullError(StageError):
    """An output could not be written for lack of space; nothing was left in its place."""


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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a block that allocates millions of small objects.

    The text stages build millions of token strings and lists and create no reference cycles;
    left on, the collector rescans them over and over (measured: ~40% of tokenizing time).
    Reference counting still frees everything; the collector is restored afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


T = TypeVar("T")


class ForkedCall(Generic[T]):
    """`function(*args)` in a forked child process, so a second core works beside this process.

    Fork shares this process's memory copy-on-write, so large arguments (review texts) are not
    pickled; only the result, or the exception the call raised, comes back through a pipe.
    Use as a context manager: leaving the block early terminates the child (SIGTERM, so its
    atomic writes clean up) instead of leaving it running.
    """

    def __init__(self, function: Callable[..., T], *args: Any) -> None:
        context = multiprocessing.get_context("fork")
        self._receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_call_and_send, args=(sender, function, args))
        # The child starts with SIGTERM's default action and turns it into KeyboardInterrupt only
        # around `function` (which may have temporaries to clean up): a SIGTERM from a parent that
        # leaves early then never raises in multiprocessing's own start-up or exit code, which would
        # print a traceback beside the parent's one-line error.
        previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            self._process.start()
        finally:
            signal.signal(signal.SIGTERM, previous)
        sender.close()

    def result(self) -> T:
        """Wait for the child; return its result or re-raise its exception here."""
        try:
            succeeded, value = self._receiver.recv()
        except EOFError:
            self._process.join()
            raise StageError(f"A worker process died (exit code {self._process.exitcode}); rerun the stage.") from None
        self._process.join()
        if not succeeded:
            raise value
        return value

    def __enter__(self) -> "ForkedCall[T]":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._receiver.close()


def _call_and_send(sender: Any, function: Callable[..., Any], args: tuple) -> None:
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        outcome = (True, function(*args))
    except BaseException as error:  # KeyboardInterrupt too: the parent decides what to do
        outcome = (False, error)
    # The work is over (its atomic writes finished or cleaned up): back to the default action.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(BrokenPipeError):
        try:
            sender.send(outcome)
        except Exception as error:  # an unpicklable result or exception
            sender.send((False, RuntimeError(f"worker failed: {outcome[1]!r} ({error})")))


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
    # A process started as a background job of a non-interactive shell inherits SIGINT ignored, and
    # Python then keeps ignoring it; a stage must still stop cleanly on Ctrl-C (DVC forwards it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main(argv)
    except (ConfigError, StageError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no output was written for the unfinished step; rerun `dvc repro`.", file=sys.stderr)
        sys.exit(130)
