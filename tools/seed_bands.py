"""Seed bands: each variant's test-accuracy mean and std over seeds -> reports/seed_bands.json.

    python -m tools.sweep --seeds 0-9               # run the seeds the commit lacks (default-seed1 ... 9)
    python -m tools.seed_bands                      # record every finished reseed experiment here (any seed)
    python -m tools.seed_bands --seeds 0 1 2        # only these seeds

`tools.review` reads the file to tell a real change from seed noise (rnnlab/experiments/seed_bands.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.core.cli import run_cli
from rnnlab.experiments.seed_bands import record_bands


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: all found)")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, help="default: dvc.yaml's `seed_bands` var")
    args = parser.parse_args(argv)
    record_bands(args.repo, args.seeds, args.out)


if __name__ == "__main__":
    run_cli(main)
