"""Collect finished DVC experiments into reports/studies.md and reports/studies.json.

    python -m tools.studies               # every experiment in this repository
    python -m tools.studies NAME [NAME]   # only these

Not a DVC stage: experiments live in git refs (`refs/exps/...`), which DVC cannot track as a
dependency. Run it after `dvc exp run` (or a drained `dvc queue`) has finished (docs/studies.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.core.cli import run_cli
from rnnlab.experiments.collect import write_studies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="experiment names (default: all)")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("reports/studies.md"), help="markdown; the JSON goes beside it")
    args = parser.parse_args(argv)
    write_studies(args.repo, args.out, args.names or None)


if __name__ == "__main__":
    run_cli(main)
