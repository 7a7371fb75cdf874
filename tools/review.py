"""Markdown for a pull request: what a change did to every variant, and whether it is more than noise.

    python -m tools.review [BASE] [HEAD] [--out review]   # defaults: main against the workspace

BASE and HEAD are git revisions (branch, tag, sha, origin/main) or DVC experiment names; HEAD
`workspace` (the default) reads the files on disk. Before any verdict, both sides' results are
checked against their own params and code (dvc.lock) and their metrics against their predictions.
docs/review.md says how to read the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.comparison.output import REVIEW_FILE, review_folder
from rnnlab.comparison.review import build_report
from rnnlab.comparison.revision import resolve
from rnnlab.core.cli import run_cli
from rnnlab.core.files import write_text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", nargs="?", default="main", help="git revision or DVC experiment (default: main)")
    parser.add_argument("head", nargs="?", default=None, help="git revision or DVC experiment (default: the workspace)")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("review"), help="folder for review.md and its PNG charts, replaced whole: new, empty, or an earlier review's")
    parser.add_argument("--artifact-url", help="where CI uploaded the charts: linked instead of embedding the PNGs")
    args = parser.parse_args(argv)
    base, head = resolve(args.repo, args.base), resolve(args.repo, args.head)
    # Written whole or not at all: a failure leaves no PNGs behind and an earlier review as it was.
    with review_folder(args.out) as folder:
        markdown, rows = build_report(base, head, folder, args.artifact_url)
        write_text(folder / REVIEW_FILE, markdown)
    print(f"review: {len(rows)} variants compared -> {args.out / REVIEW_FILE}")
    print(next(line for line in markdown.splitlines() if line.startswith("**Summary")))


if __name__ == "__main__":
    run_cli(main)
