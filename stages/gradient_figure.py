"""Stage `gradient_figure`: one task's gradient profiles (plots/gradients/<variant>.json) -> PNG (rnnlab/reporting/figures.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.config.params import load_params
from rnnlab.core.cli import run_cli
from rnnlab.reporting.figures import draw_task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=Path, required=True, help="directory of <variant>.json gradient profiles")
    parser.add_argument("--task", required=True, help="the task whose variants are drawn: imdb or order")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    draw_task(args.profiles, list(load_params().task(args.task).variants), args.task, args.out)


if __name__ == "__main__":
    run_cli(main)
