"""Seed bands: each variant's test-accuracy mean and std over seeds -> reports/seed_bands.json.

    python -m tools.seed_bands --run                # queue and run the missing seeds (0 to 9), then record
    python -m tools.seed_bands                      # add the experiments that already finished (any seed)
    python -m tools.seed_bands --run --seeds 0 1 2 --jobs 2

`tools.review` reads the file to tell a real change from seed noise (rnnlab/experiments/seed_bands.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.core.cli import run_cli
from rnnlab.experiments.seed_bands import record_bands


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="queue and run the seeds the commit lacks before recording")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: 0-9 with --run; else all found)")
    parser.add_argument("--jobs", type=int, default=1, help="queue workers (`dvc queue start -j`)")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, help="default: dvc.yaml's `seed_bands` var")
    args = parser.parse_args(argv)
    record_bands(args.repo, args.seeds, args.out, run=args.run, jobs=args.jobs)


if __name__ == "__main__":
    run_cli(main)
