"""Where the review goes: one folder (review.md and its PNGs), written whole or not at all.

The review is written into a temporary folder beside `--out` and swapped in at the end, so a failed
review leaves nothing behind (the earlier review stays as it was) and a reused `--out` keeps no
charts of an earlier review beside a report that does not list them. Because the folder is
replaced whole, only a folder that holds nothing but an earlier review can be reused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from rnnlab.core.errors import UserError
from rnnlab.core.files import disk_full_error, is_disk_full

REVIEW_FILE = "review.md"


def foreign_files(out: Path) -> list[str]:
    """What in an existing `out` a review did not write (it would be lost when the folder is replaced)."""
    return sorted(path.name for path in out.iterdir() if not (path.is_file() and (path.name == REVIEW_FILE or path.suffix == ".png")))


def check_out_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; name a folder for review.md and its charts (e.g. --out review).")
    if out.is_dir():
        others = foreign_files(out)
        if others:
            listed = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
            raise UserError(f"--out {out} holds files a review did not write ({listed}); it is replaced whole, so name "
                             "an empty or new folder, or an earlier review's.")


def cannot_write(out: Path, error: OSError) -> UserError:
    if is_disk_full(error):
        return disk_full_error(out, error, left="no partial review was left behind")
    return UserError(f"cannot write the review to {out} ({error.strerror or error}); name a folder you can write "
                     "with --out (e.g. --out /tmp/review).")


@contextlib.contextmanager
def review_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; when the block succeeds it becomes `out` (replacing an earlier review)."""
    out = Path(out)
    check_out_folder(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as error:
        raise cannot_write(out, error) from error
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o777 & ~umask)  # mkdtemp makes it private; a review folder is an ordinary one
    try:
        yield temporary
        try:
            replace_folder(temporary, out)
        except OSError as error:
            raise cannot_write(out, error) from error
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def replace_folder(new: Path, out: Path) -> None:
    """Move `new` to `out`; an earlier `out` is moved aside first and deleted after."""
    if not out.exists():
        os.replace(new, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    try:
        os.replace(out, aside / out.name)
        try:
            os.replace(new, out)
        except OSError:
            os.replace(aside / out.name, out)  # the earlier review stays
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
