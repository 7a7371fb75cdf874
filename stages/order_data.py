"""Stage `order_data`: the temporal-order task's sequences (Hochreiter & Schmidhuber 1997, exp. 6a) as X/lengths/y arrays."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.config.params import load_params
from rnnlab.core.cli import run_cli
from rnnlab.order_task.generate import write_order_data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write_order_data(load_params().order_data, args.out)


if __name__ == "__main__":
    run_cli(main)
