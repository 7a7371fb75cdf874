"""Stage `report`: every variant's metrics and details -> reports/results.md, one table per task (rnnlab/reporting/results.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.core.cli import run_cli
from rnnlab.reporting.results import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, required=True, help="directory of <variant>.json files")
    parser.add_argument(
        "--details", type=Path, required=True, help="directory of <variant>.json details (cell, seed, environment...)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timings", type=Path, help="directory of <variant>.json timings (machine-dependent)")
    parser.add_argument("--timings-out", type=Path, help="Markdown table of the timings (not a DVC output)")
    args = parser.parse_args(argv)
    write_report(args.metrics, args.details, args.out, args.timings, args.timings_out)


if __name__ == "__main__":
    run_cli(main)
