"""Stage `preprocess`: tokenize like torchtext-legacy, split train/valid, build the vocabulary (rnnlab/text/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.config.params import load_params
from rnnlab.core.cli import run_cli
from rnnlab.text.prepare import prepare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for train/valid/test .tsv")
    parser.add_argument("--vocab", type=Path, required=True, help="vocabulary file (tsv)")
    args = parser.parse_args(argv)
    prepare(args.reviews, args.out, args.vocab, load_params().data)


if __name__ == "__main__":
    run_cli(main)
