"""Stage `params`: check the whole params.yaml, then write each stage's resolved values (rnnlab/config/params.py).

Every other stage depends on its own resolved file, so a typo in params.yaml stops `dvc repro` here,
before DVC removes any stage's outputs, and a stage reruns only when a value it reads changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.config.params import load_params, write_resolved
from rnnlab.core.cli import run_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of resolved params files")
    args = parser.parse_args(argv)
    count = write_resolved(load_params(), args.out)
    print(f"params: params.yaml is valid; {count} resolved files -> {args.out}")


if __name__ == "__main__":
    run_cli(main)
