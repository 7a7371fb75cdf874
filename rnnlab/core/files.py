"""Atomic writes: an output is either complete or as it was, never half-written (a crash, an interrupt, a full disk).

A stage writes each output aside, in a temporary folder beside it, and swaps them in together when it
has succeeded (`outputs_together`); `atomic_path` and `atomic_directory` are the one-output cases.
Before any work, every output's location is checked for writability, so a read-only folder ends the
stage with one line before anything is removed; during the swap, Ctrl-C and SIGTERM wait, so the
outputs are all new or all as they were, and the interrupt message says which (`interrupt_message`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from rnnlab.core.errors import DiskFullError, UnwritableError, UserError

# A full disk (ENOSPC), a file-size limit (EFBIG, e.g. `ulimit -f`) and a full quota (EDQUOT).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
# A folder that refuses changes: its permissions (EACCES), `chattr +i` (EPERM), a read-only mount (EROFS).
UNWRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# The outputs this process has replaced, in order, for the interrupt message (rnnlab.core.cli resets it).
REPLACED: list[Path] = []
# The temporary folders outputs are being written in: a file swapped in inside one is not an output yet.
_STAGING: set[str] = set()


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def is_unwritable(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in UNWRITABLE_ERRNOS


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


def _what_changed() -> str:
    if not REPLACED:
        return "no output was changed"
    return f"only {', '.join(map(str, REPLACED))} {'was' if len(REPLACED) == 1 else 'were'} written (in full)"


def unwritable_error(path: Path, folder: Path, reason: str) -> UnwritableError:
    return UnwritableError(
        f"cannot write {path}: {folder} is not writable ({reason}). Make it writable (`chmod u+w {folder}`, or "
        f"`chattr -i {folder}` if it is immutable) and rerun; {_what_changed()}."
    )


def _unwritable_reason(folder: Path) -> str:
    with contextlib.suppress(OSError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "a read-only file system"
    return "no permission to add or remove its entries"


def check_writable(path: Path | str) -> None:
    """Refuse, before any work, an output that could not be written or replaced.

    Its folder (or the nearest one that exists, where folders are still to be made) must take new
    entries, and an existing folder output must let its old files go: so a read-only location ends
    the stage at once, not after the work, and not after part of the old output was removed.
    """
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: {folder} is a file, not a folder. Move it away and rerun; {_what_changed()}.")
    folders = [folder]
    if path.is_dir() and not path.is_symlink():
        folders += [path, *(Path(root) / name for root, names, _files in os.walk(path) for name in names)]
    for candidate in folders:
        if not os.access(candidate, os.W_OK | os.X_OK):
            raise unwritable_error(path, candidate, _unwritable_reason(candidate))


@contextlib.contextmanager
def held_signals() -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM wait until the block ends (outputs being swapped in must not stop half-way).

    Yields the list the signals that arrived are added to; the caller acts on them afterwards. The
    handlers are replaced rather than the signals blocked: torch's threads would still take them.
    """
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield arrived
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number in STOP_SIGNALS:
        signal.signal(number, lambda signum, frame: arrived.append(signum))
    try:
        yield arrived
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def interrupt_message() -> str:
    """What an interrupted stage says, true to what it replaced (REPLACED)."""
    if not REPLACED:
        return "interrupted: no output was replaced, each is as it was before this run (nothing is half-written); rerun `dvc repro`."
    written = ", ".join(map(str, REPLACED))
    return f"interrupted after {written} {'was' if len(REPLACED) == 1 else 'were'} written in full; rerun `dvc repro`."


def _is_staged(path: Path) -> bool:
    return any(str(parent) in _STAGING for parent in Path(os.path.abspath(path)).parents)


def _nothing_to_keep(path: Path) -> bool:
    return not (path.exists() or path.is_symlink()) or (path.is_dir() and not any(path.iterdir()))


class _Staging:
    """The temporary folders of one `outputs_together` block, and the swap that ends it."""

    def __init__(self, outputs: list[Path]) -> None:
        self.outputs = outputs
        self.staged: dict[Path, Path] = {}
        self.folders: list[Path] = []
        self.live: Path | None = None  # the output written in place, if any
        self.live_existed = False
        self.keep_folders = False  # a failed swap that could not be undone keeps the old outputs there

    def prepare(self, live: Path | None) -> None:
        """A temporary folder beside each output (the live one in place when there is nothing to keep)."""
        for path in self.outputs:
            if path == live and _nothing_to_keep(path):
                self.live, self.live_existed = path, path.is_dir()
                self.staged[path] = path
            else:
                folder = self._make_folder(path)
                self.folders.append(folder)
                self.staged[path] = folder / path.name

    def _make_folder(self, path: Path) -> Path:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        except OSError as error:
            if is_disk_full(error):
                raise disk_full_error(path, error) from error
            if is_unwritable(error):
                folder = Path(error.filename).parent if error.filename else path.parent
                raise unwritable_error(path, folder, error.strerror) from error
            raise
        _STAGING.add(os.path.abspath(folder))
        return folder

    def real_names(self, text: str) -> str:
        """`text` with each temporary path replaced by the output it stands for (longest first)."""
        for path, staged in sorted(self.staged.items(), key=lambda item: -len(str(item[1]))):
            text = text.replace(str(staged), str(path))
        return text

    def _writes_here(self, filename: Any) -> bool:
        """Whether `filename` (an OSError's) is one of this block's outputs or inside one."""
        if not filename:
            return False
        target = Path(os.path.abspath(filename))
        return any(Path(os.path.abspath(staged)) in (target, *target.parents) for staged in self.staged.values())

    def translate(self, error: Exception) -> Exception | None:
        """A full disk or a refused write in the block, as the user's one line naming the real output."""
        if isinstance(error, (DiskFullError, UnwritableError)):
            return type(error)(self.real_names(str(error)))
        cause = disk_full_cause(error)
        if cause is not None:
            named = Path(self.real_names(str(cause.filename))) if cause.filename else self.outputs[0]
            return disk_full_error(named, cause)
        # Only a refused write of an output: a file the stage cannot read is not this problem.
        if isinstance(error, OSError) and is_unwritable(error) and self._writes_here(error.filename):
            named = Path(self.real_names(str(error.filename)))
            return unwritable_error(named, named.parent, error.strerror)
        return None

    def swap_in(self) -> list[int]:
        """Move every output written aside onto its path: all of them, or (when one fails) none.

        Returns the stop signals that arrived meanwhile: the caller raises for them once it is done.
        """
        pairs = [(self.staged[path], path) for path in self.outputs if self.staged[path] != path]
        steps: list[tuple[Path, Path, Path | None, bool]] = []  # (new, path, where the old one went, new in place)
        record = not any(_is_staged(path) for path in self.outputs)
        with held_signals() as arrived:
            try:
                for new, path in pairs:
                    old = new.with_name(f"{new.name}.old") if path.exists() or path.is_symlink() else None
                    if old is not None:
                        os.replace(path, old)
                    steps.append((new, path, old, False))
                    os.replace(new, path)
                    steps[-1] = (new, path, old, True)
            except OSError as error:
                failed = pairs[len(steps) - 1 if steps and not steps[-1][3] else len(steps)][1]
                self._undo(steps)
                if is_unwritable(error):
                    raise unwritable_error(failed, failed.parent, error.strerror) from error
                if is_disk_full(error):
                    raise disk_full_error(failed, error) from error
                raise
            if record:
                REPLACED.extend(self.outputs)
        return arrived

    def _undo(self, steps: list[tuple[Path, Path, Path | None, bool]]) -> None:
        """Put the old outputs back after a failed swap; if even that fails, keep them and say where."""
        try:
            for new, path, old, placed in reversed(steps):
                if placed:
                    os.replace(path, new)
                if old is not None:
                    os.replace(old, path)
        except OSError as error:
            self.keep_folders = True
            raise UserError(
                f"could not put the previous outputs back after a failed write ({error}); they are in "
                f"{', '.join(map(str, self.folders))} (named <name>.old): move each back by hand."
            ) from error

    def discard_live(self) -> None:
        """A failed run leaves the in-place output as it found it: absent, or an empty folder."""
        if self.live is None:
            return
        if not self.live_existed:
            shutil.rmtree(self.live, ignore_errors=True)
            return
        for child in list(self.live.iterdir()) if self.live.is_dir() else []:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()

    def remove_folders(self) -> None:
        for folder in self.folders:
            if not self.keep_folders:
                shutil.rmtree(folder, ignore_errors=True)
                if folder.exists():
                    print(f"warning: could not remove the temporary folder {folder}; delete it once its folder is "
                          f"writable", file=sys.stderr)
            _STAGING.discard(os.path.abspath(folder))


@contextlib.contextmanager
def outputs_together(*paths: Path | str, live: Path | str | None = None) -> Iterator[dict[Path, Path]]:
    """Yield where to write each output ({output: temporary path}); when the block succeeds they replace
    the outputs together, and when it fails or is interrupted every output stays as it was.

    Each temporary path is `<folder>/.<name>.XXXX.tmp/<name>` (nothing there yet: the block makes the
    file or folder), so the outputs' folders must take new entries, which is checked first for all of
    them, before any work. `live` (the training history) is written in place when there is nothing
    there to keep (absent, or emptied by DVC before it ran the stage), so `dvc exp show` and the VS Code
    extension follow it as it grows; a failure removes what was written there.
    """
    outputs = [Path(path) for path in paths]
    for path in outputs:
        check_writable(path)
    staging = _Staging(outputs)
    try:
        staging.prepare(Path(live) if live is not None else None)
        try:
            yield staging.staged
        except Exception as error:
            translated = staging.translate(error)
            if translated is not None:
                raise translated from error
            raise
        arrived = staging.swap_in()
    except BaseException:
        staging.discard_live()
        raise
    finally:
        staging.remove_folders()
    if arrived:  # Ctrl-C or SIGTERM during the swap: stop now that the outputs are complete
        raise KeyboardInterrupt(f"signal {arrived[0]}")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path` (no file there yet); it replaces `path` only if the block succeeds.

    A crash, an interrupt or a full disk therefore never leaves a half-written file where DVC or a
    later stage would take it for a good output; a full disk becomes a DiskFullError (exit 2).
    """
    path = Path(path)
    with outputs_together(path) as staged:
        yield staged[path]


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Yield a new empty directory beside `path`; it replaces `path` only if the block succeeds.

    For directory outputs (data/prepared, data/xy): a failure part-way (a full disk on the last
    split, an interrupt) leaves neither a mix of new and old files nor a half-filled directory that
    DVC or a later stage would read as complete; an earlier complete `path` stays as it was.
    """
    path = Path(path)
    with outputs_together(path) as staged:
        staged[path].mkdir()
        yield staged[path]


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


