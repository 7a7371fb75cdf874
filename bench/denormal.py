"""Denormal flushing on vs off, one fresh process per setting so each starts with a clean FP state.

Vanishing gradients underflow into denormal floats, which x86 CPUs handle in slow microcode.
rnnlab.runtime.environment.setup_torch flushes them to zero, first thing, because OpenMP worker threads take
their FP mode from the thread that starts them: a flush set after the workers exist does not reach them.

Worker: python -m bench.denormal --mode on|off|late [--cell rnn] [--quick] -> one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.timing import Row, Table, seconds

MODES = {
    "off": "flush off (torch default)",
    "on": "flush on before workers start (setup_torch)",
    "late": "flush on after OpenMP workers started",
}


def set_mode(mode: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    if mode == "on":
        torch.set_flush_denormal(True)
    elif mode == "late":
        big = torch.randn(512, 512)
        torch.mm(big, big)  # a parallel op: the OpenMP worker threads now exist with denormals enabled
        torch.set_flush_denormal(True)  # reaches this thread only
    else:
        torch.set_flush_denormal(False)


def worker(mode: str, cell: str, quick: bool, threads: int, steps: int) -> dict[str, float]:
    set_mode(mode, threads)
    from bench.models import default_sizes, pipeline_model, synthetic_split
    from bench.steps import pipeline_epoch_runner
    from bench.timing import time_interleaved

    sizes = default_sizes(quick)
    split = synthetic_split(steps * sizes.batch_size, sizes)
    runner = pipeline_epoch_runner(pipeline_model(sizes, cell=cell), split, sizes)
    timing = time_interleaved({"epoch": runner}, repeats=2)["epoch"]
    return {"seconds_per_step": timing.best / steps}


def measure(mode: str, cell: str, quick: bool, threads: int, steps: int) -> float:
    command = [
        sys.executable,
        "-m",
        "bench.denormal",
        "--mode",
        mode,
        "--cell",
        cell,
        "--threads",
        str(threads),
        "--steps",
        str(steps),
        *(["--quick"] if quick else []),
    ]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])["seconds_per_step"]


def bench_denormal(quick: bool, threads: int, steps: int, table: Table, cells: tuple[str, ...] = ("rnn", "lstm")) -> None:
    modes = ["off", "on"] + (["late"] if threads > 1 else [])
    for cell in cells:
        results = {mode: measure(mode, cell, quick, threads, steps) for mode in modes}
        for mode in modes:
            ratio = "1.0x" if mode == "on" else f"{results[mode] / results['on']:.1f}x flushed"
            table.add(Row("denormals", f"{cell} train step, {threads} threads, {MODES[mode]}", seconds(results[mode]), ratio))


def main() -> None:
    parser = argparse.ArgumentParser(description="one denormal-mode measurement (used by python -m bench)")
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--cell", default="rnn")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(worker(args.mode, args.cell, args.quick, args.threads, args.steps)))


if __name__ == "__main__":
    main()
