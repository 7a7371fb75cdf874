"""Stage `train@<variant>`: train one variant, save its best checkpoint and per-epoch history (rnnlab/training/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.config.params import load_params
from rnnlab.core.cli import run_cli
from rnnlab.runtime import environment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="a variant of params.yaml (either task)")
    parser.add_argument("--data", type=Path, required=True, help="xy directory (train/, valid/, meta.json)")
    parser.add_argument("--model", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--history", type=Path, required=True, help="DVCLive directory for the per-epoch history")
    parser.add_argument("--timings", type=Path, help="machine-dependent timings JSON to write (not a DVC output)")
    args = parser.parse_args(argv)
    params = load_params()
    variant = params.find_variant(args.variant)[1]
    environment.configure(params.runtime)
    from rnnlab.training.train import train_variant  # loads torch: after configure

    train_variant(variant, args.data, args.model, args.history, args.timings)


if __name__ == "__main__":
    run_cli(main)
