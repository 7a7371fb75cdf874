"""python -m bench [--quick] [--threads N] [--skip-dvc] [--reviews data/reviews.jsonl] [--profile]

Prints measured times and the ratios between things measured in this same run. Run it from the
repository root (it reads params.yaml for the default sizes). The full run takes ~10-20 minutes on
a 2-core CPU; --quick shrinks every size and skips the queued-experiments part (a smoke test).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from rnnlab.config.params import load_params
from rnnlab.runtime import environment

SECTIONS = ("text", "train", "readout", "activation", "fused", "denormal", "repro", "review", "dvc", "sweep")
OPT_IN = ("gpu",)  # run only when named: `--only gpu` on a GPU machine


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="RNN Lab speed benchmark (issue 7)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats, no queue: a smoke run")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: stable ratios on a shared CPU; the stages use RNNLAB_THREADS)",
    )
    parser.add_argument(
        "--denormal-threads",
        type=int,
        default=2,
        help="torch threads in the denormal subprocesses (>= 2 also shows a flush set too late)",
    )
    parser.add_argument("--reviews", type=Path, default=Path("data/reviews.jsonl"), help="canonical reviews file")
    parser.add_argument("--skip-dvc", action="store_true", help="leave out the DVC measurements (dvc, sweep)")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of: {', '.join(SECTIONS + OPT_IN)} (default: all but gpu)",
    )
    parser.add_argument("--profile", action="store_true", help="also print the profiler tables: fused RNN vs RNNCell loop")
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    os.environ["RNNLAB_THREADS"] = str(arguments.threads)
    # First, as a stage does: the runtime before torch loads, then torch's setup (denormal flush,
    # RNNLAB_THREADS) before anything starts its OpenMP workers, so the benchmark sees what the stages see.
    environment.configure(load_params().runtime)
    from rnnlab.runtime.environment import setup_torch

    setup_torch("cpu")
    import torch

    torch.manual_seed(0)

    from bench.models import default_sizes
    from bench.timing import Table

    sizes = default_sizes(arguments.quick)
    repeats, steps = (1, 1) if arguments.quick else (3, 2)
    started = time.perf_counter()
    print(
        f"RNN Lab benchmark: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"sizes: {sizes.describe()}; each ratio compares runs interleaved in this process, best of {repeats}", flush=True)
    table = Table()
    chosen = set(arguments.only.split(",")) - ({"dvc", "sweep"} if arguments.skip_dvc else set())
    # Each section imports what it measures: the GPU check runs where DVC, Ray and the S3 server are not installed.
    if "gpu" in chosen:
        from bench.gpu import bench_gpu

        bench_gpu(sizes, steps, repeats, table)
    if "text" in chosen:
        from bench.text import bench_text

        bench_text(arguments.reviews, repeats, table, with_processes=not arguments.quick)
    if chosen & {"train", "readout", "activation", "fused"} or arguments.profile:
        from bench.steps import (
            bench_activations,
            bench_fused_vs_loop,
            bench_pipeline_vs_bare,
            bench_readouts,
            bench_tokens_per_second,
            profile_fused_vs_loop,
        )
    if "train" in chosen:
        train_step_seconds = bench_pipeline_vs_bare(sizes, steps, repeats, table)
        bench_tokens_per_second(sizes, train_step_seconds, steps, repeats, table)
    if "readout" in chosen:
        bench_readouts(sizes, steps, repeats, table)
    if "activation" in chosen:
        bench_activations(sizes, steps, repeats, table)
    if "fused" in chosen:
        bench_fused_vs_loop(sizes, repeats, table)
    if "denormal" in chosen:
        from bench.denormal import bench_denormal

        bench_denormal(
            arguments.quick, arguments.denormal_threads, steps, table, cells=("rnn",) if arguments.quick else ("rnn", "lstm")
        )
    if "repro" in chosen:
        from bench.reproducibility import bench_reproducibility

        bench_reproducibility(
            arguments.quick,
            steps=2 if arguments.quick else 6,
            table=table,
            cells=("rnn",) if arguments.quick else ("rnn", "lstm", "gru"),
        )
    if "review" in chosen:
        from bench.review_speed import bench_review

        bench_review(arguments.quick, table)
    if "dvc" in chosen:
        from bench.dvc_bench import bench_dvc

        bench_dvc(arguments.quick, table)
    if "sweep" in chosen:
        from bench.sweep_speed import bench_sweep

        bench_sweep(arguments.quick, table)
    print()
    print(table.render())
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average at the end {os.getloadavg()[0]:.1f}")
    if arguments.profile:
        print()
        print(profile_fused_vs_loop(sizes))


if __name__ == "__main__":
    main()
