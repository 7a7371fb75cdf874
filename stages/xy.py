"""Stage `xy`: token files + vocabulary -> fixed-length id arrays for train, valid and test (rnnlab/text/encode.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.config.params import load_params
from rnnlab.core.cli import run_cli
from rnnlab.text.encode import write_xy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--vocab", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write_xy(args.prepared, args.vocab, args.out, load_params().data)


if __name__ == "__main__":
    run_cli(main)
