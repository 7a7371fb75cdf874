"""Run a set of DVC experiments over a Ray cluster (or this machine), one Ray task each.

    python -m tools.sweep --seeds 0-9                              # the committed params, ten seeds, here
    python -m tools.sweep -S model.cell=lstm --seeds 0-3 -n lstm   # -S, -n and targets as `dvc exp run` takes them
    python -m tools.sweep --preset strong --seeds 0-2 --address HEAD_IP:6379 --threads 2

Every node clones the git remote at this commit, pulls the baseline's outputs from the DVC remote, runs
`dvc exp run` and pushes the experiment back; this command then pulls them, so `dvc exp show`,
`python -m tools.seed_bands` and `python -m tools.review` see them. docs/cluster.md sets up a cluster.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rnnlab.core.cli import run_cli
from rnnlab.core.errors import UserError
from rnnlab.experiments.sweep import SEED_KEY, Options, parse_seeds, sweep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="stages to run, as `dvc exp run` takes them (default: all, or the preset's)")
    parser.add_argument(
        "-S",
        "--set-param",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a params.yaml override, as `dvc exp run -S` (repeatable)",
    )
    parser.add_argument("--seeds", type=parse_seeds, default=[], help="one experiment per seed: 0-9, 0,3,7 or 0-3,8")
    parser.add_argument(
        "--seed-key", default=SEED_KEY, help=f"the param --seeds sets (default {SEED_KEY}; order.train.seed for the order task)"
    )
    parser.add_argument("--preset", help="a presets/<name>.yaml to run (its params and targets)")
    parser.add_argument("-n", "--name", dest="prefix", help="experiment name; with --seeds, NAME-seed<N>")
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="a Ray cluster's head (HOST:6379; default RAY_ADDRESS); none: Ray on this machine",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPUs (torch threads) per experiment (default 1)")
    parser.add_argument("--git-remote", help="git remote name or URL the nodes clone and push to (default: origin on a cluster)")
    parser.add_argument("--remote", dest="dvc_remote", help="DVC remote for the data (default: the default remote on a cluster)")
    parser.add_argument(
        "--allow-mixed-environments",
        dest="allow_mixed",
        action="store_true",
        help="run on nodes whose environment stamp differs from this machine's (other bits; the review says so)",
    )
    parser.add_argument("--repo", type=Path, default=Path("."))
    options = Options(**vars(parser.parse_args(argv)))
    failed = [outcome.name for outcome in sweep(options) if outcome.status == "failed"]
    if failed:
        raise UserError(
            f"{len(failed)} experiment(s) failed: {', '.join(failed)} (their logs above); "
            "run the sweep again to retry them, finished ones are reused."
        )


if __name__ == "__main__":
    run_cli(main)
