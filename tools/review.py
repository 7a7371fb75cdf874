"""Markdown for a pull request: what a change did to every variant, and whether it is more than noise.

    python -m tools.review [BASE] [HEAD] [--out review]   # defaults: main against the workspace

BASE and HEAD are git revisions (branch, tag, sha, origin/main) or DVC experiment names; HEAD
`workspace` (the default) reads the files on disk. Before any verdict, both sides' results are
checked against their own params and code (dvc.lock) and their metrics against their predictions.
docs/review.md says how to read the report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from rnnlab.comparison.render import build_report
from rnnlab.comparison.revision import resolve
from rnnlab.core.cli import run_cli
from rnnlab.core.errors import UserError

REVIEW_FILE = "review.md"


def check_out_folder(out: Path) -> None:
    """`out` is replaced whole: only a new or empty folder, or an earlier review's (review.md and PNGs), will do."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; name a folder for review.md and its charts (e.g. --out review).")
    others = (
        sorted(
            path.name for path in out.iterdir() if not (path.is_file() and (path.name == REVIEW_FILE or path.suffix == ".png"))
        )
        if out.is_dir()
        else []
    )
    if others:
        listed = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        raise UserError(
            f"--out {out} holds files a review did not write ({listed}); it is replaced whole, so name "
            "an empty or new folder, or an earlier review's."
        )


def cannot_write(out: Path, error: OSError) -> UserError:
    return UserError(
        f"cannot write the review to {out} ({error.strerror or error}); name a folder you can write "
        "with --out (e.g. --out /tmp/review)."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("base", nargs="?", default="main", help="git revision or DVC experiment (default: main)")
    parser.add_argument("head", nargs="?", default=None, help="git revision or DVC experiment (default: the workspace)")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("review"),
        help="folder for review.md and its PNG charts, replaced whole: new, empty, or an earlier review's",
    )
    parser.add_argument("--artifact-url", help="where CI uploaded the charts: linked instead of embedding the PNGs")
    args = parser.parse_args(argv)
    base, head, out = resolve(args.repo, args.base), resolve(args.repo, args.head), args.out
    check_out_folder(out)
    # Written into a folder beside --out and swapped in at the end: a failed review leaves the earlier one as it was.
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as error:
        raise cannot_write(out, error) from error
    try:
        umask = os.umask(0)
        os.umask(umask)
        folder.chmod(0o777 & ~umask)  # mkdtemp makes it private; a review folder is an ordinary one
        markdown, rows = build_report(base, head, folder, args.artifact_url)
        (folder / REVIEW_FILE).write_text(markdown, encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(folder, out)
    except OSError as error:
        raise cannot_write(out, error) from error
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"review: {len(rows)} variants compared -> {out / REVIEW_FILE}")
    print(next(line for line in markdown.splitlines() if line.startswith("**Summary")))


if __name__ == "__main__":
    run_cli(main)
