"""Stage `params`: check the whole params.yaml (rnnlab/config/params.py) before any other stage runs.

Every other stage depends on the file it writes, so DVC runs this check first: a typo in params.yaml stops
`dvc repro` here, before DVC removes any stage's outputs. The file's text never changes, so a stage reruns
only when a key dvc.yaml lists for it changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.config.params import PARAMS_FILE, load_params
from rnnlab.core.cli import run_cli
from rnnlab.core.files import write_text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the file the other stages depend on")
    args = parser.parse_args(argv)
    load_params()
    write_text(args.out, f"{PARAMS_FILE} is valid\n")
    print(f"params: {PARAMS_FILE} is valid")


if __name__ == "__main__":
    run_cli(main)
