"""Outputs written whole or not at all (a temporary beside each, renamed onto it with os.replace when the stage's work
succeeded: DVC keeps every cached output, so nothing else needs undoing), and one writer per output."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeGuard

import yaml
from filelock import FileLock, Timeout

from rnnlab.core.errors import DiskFullError, UnwritableError, UserError

# A full disk, a file-size limit (`ulimit -f`), a full quota.
DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EFBIG: "file size limit reached", errno.EDQUOT: "disk quota exceeded"}
# A folder that refuses changes: its permissions, `chattr +i`, a read-only mount.
UNWRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def is_disk_full(error: BaseException) -> TypeGuard[OSError]:
    return isinstance(error, OSError) and error.errno in DISK_FULL


def disk_full_error(path: Path, error: OSError, left: str = "no partial output was left behind") -> DiskFullError:
    code = error.errno if error.errno in DISK_FULL else errno.ENOSPC
    return DiskFullError(
        f"{DISK_FULL[code]} while writing {path} ({errno.errorcode[code]}: {error.strerror}). Free disk space (or "
        f"move the DVC cache to a bigger disk: `dvc cache dir <path>`) and rerun; {left}."
    )


def unwritable_error(path: Path, folder: Path, reason: str) -> UnwritableError:
    return UnwritableError(
        f"cannot write {path}: {folder} is not writable ({reason}). Make it writable (`chmod u+w {folder}`, or "
        f"`chattr -i {folder}` if it is immutable) and rerun; no output was changed."
    )


def check_writable(path: Path | str) -> None:
    """Refuse an output whose folder (or the nearest one that exists) takes no new entries, or an existing
    folder output whose old files cannot go."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: {folder} is a file, not a folder. Move it away and rerun; no output was changed.")
    folders = [folder]
    if path.is_dir() and not path.is_symlink():
        folders += [path, *(Path(root) / name for root, names, _files in os.walk(path) for name in names)]
    for candidate in folders:
        if not os.access(candidate, os.W_OK | os.X_OK):
            read_only = False
            with contextlib.suppress(OSError):
                read_only = bool(os.statvfs(candidate).f_flag & os.ST_RDONLY)
            reason = "a read-only file system" if read_only else "no permission to add or remove its entries"
            raise unwritable_error(path, candidate, reason)


def _in_user_terms(error: Exception, staged: dict[Path, Path]) -> Exception | None:
    """A full disk or a refused write of an output as the user's one line, naming the output, not its temporary."""

    def real_names(text: str) -> str:
        for path, temporary in sorted(staged.items(), key=lambda item: -len(str(item[1]))):
            text = text.replace(str(temporary), str(path))
        return text

    if isinstance(error, (DiskFullError, UnwritableError)):
        return type(error)(real_names(str(error)))
    # torch.save reports a failed write as a bare RuntimeError, with the OSError only as its context.
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if is_disk_full(cause):
            return disk_full_error(Path(real_names(str(cause.filename))) if cause.filename else next(iter(staged)), cause)
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    # Only a refused write of an output: a file the stage cannot read is not this problem.
    if isinstance(error, OSError) and error.errno in UNWRITABLE_ERRNOS and error.filename:
        target = Path(os.path.abspath(error.filename))
        if any(target.is_relative_to(os.path.abspath(temporary)) for temporary in staged.values()):
            named = Path(real_names(str(error.filename)))
            return unwritable_error(named, named.parent, error.strerror or str(error))
    return None


@contextlib.contextmanager
def outputs_together(*paths: Path | str, live: Path | str | None = None) -> Iterator[dict[Path, Path]]:
    """Yield where to write each output ({output: temporary path, nothing there yet}); when the block
    succeeds each temporary replaces its output, and when it fails every output stays as it was.

    `live` (the training history) is written in place when there is nothing there to keep (absent, or emptied
    by DVC), so `dvc exp show` and the VS Code extension follow it as it grows; a failure removes what it wrote.
    """
    outputs = [Path(path) for path in paths]
    for path in outputs:
        check_writable(path)
    empty = live is not None and Path(live).is_dir() and not Path(live).is_symlink() and not any(Path(live).iterdir())
    in_place = Path(live) if live is not None and (empty or not os.path.lexists(live)) else None
    staged: dict[Path, Path] = {}
    folders: list[Path] = []
    try:
        for path in outputs:
            if path == in_place:
                staged[path] = path
                continue
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                folders.append(Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)))
            except OSError as error:
                if error.errno in UNWRITABLE_ERRNOS:
                    raise unwritable_error(path, path.parent, error.strerror or str(error)) from error
                raise
            staged[path] = folders[-1] / path.name
        yield staged
        for path in outputs:
            check_writable(path)  # before any output is replaced
        for path in outputs:
            if staged[path] != path:
                if path.is_dir() and not path.is_symlink():  # the old folder goes into the temporary one, removed below
                    os.replace(path, staged[path].parent / f"{path.name}.old")
                os.replace(staged[path], path)
    except BaseException as error:
        if in_place is not None:
            shutil.rmtree(in_place, ignore_errors=True)
            if empty:
                in_place.mkdir()
        translated = _in_user_terms(error, staged) if isinstance(error, Exception) else None
        if translated is not None:
            raise translated from error
        raise
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():  # its folder became read-only while the stage ran
                print(
                    f"warning: could not remove the temporary folder {folder}; delete it once its folder is writable",
                    file=sys.stderr,
                )


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside `path` (no file there yet) that replaces `path` only if the block succeeds."""
    with outputs_together(path) as staged:
        yield staged[Path(path)]


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """A new empty folder beside `path` that replaces `path` only if the block succeeds."""
    with atomic_path(path) as folder:
        folder.mkdir()
        yield folder


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: Path | str, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")


def read_json(path: Path | str, what: str, fix: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found at {path}. {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{what} at {path} is not valid JSON ({error}). {fix}") from error


@contextlib.contextmanager
def exclusive_writer(path: Path | str, what: str) -> Iterator[None]:
    """Hold `.<name>.lock` beside `path` while the block runs; a second process gets a UserError naming the
    first one's PID. DVC's own lock does not cover a stage run by hand."""
    path = Path(path)
    lock_path = path.parent / f".{path.name}.lock"
    check_writable(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = ""
        with contextlib.suppress(OSError):
            holder = lock_path.read_text(encoding="ascii").strip()
        holder = holder if holder.isdigit() else "unknown"  # between the holder's lock and its write
        raise UserError(
            f"another {what} (PID {holder}) is writing {path}; wait for it to end, or stop it (`kill {holder}`), "
            f"then rerun. Nothing was changed. (Lock: {lock_path}.)"
        ) from None
    try:
        lock_path.write_text(f"{os.getpid()}\n", encoding="ascii")
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()  # not an output: DVC must never see it
        lock.release()


# The pipeline's paths: dvc.yaml's `vars`, the single place they are written.
PIPELINE_FILE = Path("dvc.yaml")


def load_yaml(text: str, where: str) -> Any:
    """libyaml's loader where PyYAML has it: a 12 kB dvc.yaml in 5 ms instead of 60 (a review of a sweep reads
    one dvc.lock per experiment)."""
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as error:
        raise UserError(f"{where} is not valid YAML ({error}); fix it there (or restore it from git).") from error


def pipeline_vars(document: Any) -> dict[str, str]:
    """`vars` of a dvc.yaml document: where its stages write metrics, predictions, history..."""
    entries = [entry for entry in (document or {}).get("vars") or [] if isinstance(entry, dict)]
    return {key: value for entry in entries for key, value in entry.items() if isinstance(value, str)}


def workspace_paths(pipeline_file: Path = PIPELINE_FILE) -> dict[str, str]:
    if not pipeline_file.is_file():
        raise UserError(f"{pipeline_file} not found: run this from the repository root.")
    return pipeline_vars(load_yaml(pipeline_file.read_text(encoding="utf-8"), str(pipeline_file)))
