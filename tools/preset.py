"""Run a named, committed experiment definition (presets/<name>.yaml) as one `dvc exp run`.

    python -m tools.preset strong                      # print the dvc command, then run it
    python -m tools.preset strong --queue              # queue it instead (`dvc queue start` runs it)
    python -m tools.preset strong --name s1 -S train.seed=1   # another name, extra overrides
    python -m tools.preset strong --dry-run            # only print the command

The merged params are checked like params.yaml itself before DVC is called (rnnlab/experiments/presets.py).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from rnnlab.config.params import read_params_file
from rnnlab.core.cli import run_cli
from rnnlab.experiments.presets import available, experiment_arguments, load_preset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", help=f"a presets/<name>.yaml ({', '.join(available()) or 'none found'})")
    parser.add_argument("--name", "-n", help="experiment name (default: the preset's `experiment`)")
    parser.add_argument("--queue", action="store_true", help="queue it; `dvc queue start` runs it")
    parser.add_argument(
        "-S",
        "--set-param",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more `dvc exp run -S` override, after the preset's (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = parser.parse_args(argv)
    preset = load_preset(args.preset)
    arguments, _params = experiment_arguments(preset, read_params_file() or {}, args.extra)
    command = ["dvc", "exp", "run", *(["--queue"] if args.queue else []), "-n", args.name or preset.experiment, *arguments]
    print(shlex.join(command))
    if args.dry_run:
        return
    # This interpreter's DVC: the one installed beside the library, whatever `dvc` is on PATH.
    completed = subprocess.run([sys.executable, "-m", "dvc", *command[1:]])
    if completed.returncode != 0:
        sys.exit(completed.returncode)
    if args.queue:
        print("queued; run it with `dvc queue start` (`dvc queue status` follows it)")


if __name__ == "__main__":
    run_cli(main)
