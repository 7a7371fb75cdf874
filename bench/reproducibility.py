"""What decides the bits of a CPU training run, and what the reproducible mode costs.

Bits: each setting runs in a fresh process (the math libraries read their environment once, when
they load): a few training steps of the pipeline's model from the same seed, then a hash of the
weights. Two settings that give the same hash computed the same bits. The reproducible mode must give
one hash for every thread count, on one core or all, and under every MKL setting (MKL is off its path,
so the CPU vendor cannot matter).

Cost: its train step (forward, backward, Adam) over torch's own (unpinned) kernels, at the pipeline's
sizes, for rnn, lstm and gru at 1 and 2 threads and the order task at 1: two long-lived worker
processes (bench/gemm_speed.py) take turns on the same step, and the ratio is the median over rounds,
so contention from other jobs hits both sides of each pair alike.

Worker: python -m bench.reproducibility --worker --cell rnn --threads 2 [--cores 1] [--mkl NAME=VALUE]
[--quick] -> one JSON line {"hash", "capability", "math"}; the caller sets the environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

from bench import gemm_speed
from bench.timing import Row, Table, seconds, verdict

UNPINNED = {"RNNLAB_REPRODUCIBLE": "0"}
REPRODUCIBLE = {"RNNLAB_REPRODUCIBLE": "1"}
SPEED_TARGET, SPEED_LIMIT = gemm_speed.TARGET, gemm_speed.ACCEPTABLE  # reproducible / unpinned train step
# What the worker's environment must not inherit: every knob a setting below turns.
KNOBS = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_VERBOSE",
    "RNNLAB_REPRODUCIBLE",
    "RNNLAB_GEMM",
    "RNNLAB_THREADS",
    "OMP_NUM_THREADS",
)


@dataclass(frozen=True)
class Setting:
    name: str
    environment: dict[str, str]
    threads: tuple[int, ...] = (1, 2)
    cores: int | None = None  # restrict the process to this many cores (None: all)
    mkl: str | None = None  # an MKL variable set after the mode's own pins, before torch loads


REFERENCE = Setting("reproducible mode", REPRODUCIBLE, threads=(1, 2, 3))
SETTINGS = (
    REFERENCE,
    Setting("reproducible mode, one core", REPRODUCIBLE, threads=(2,), cores=1),
    # MKL's own switches: with MKL off the path, none may change a bit (they did before the kernels).
    *(
        Setting(f"reproducible mode, {mkl}", REPRODUCIBLE, threads=(2,), mkl=mkl)
        for mkl in ("MKL_CBWR=COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS=SSE4_2", "MKL_ENABLE_INSTRUCTIONS=AVX512")
    ),
    Setting("unpinned (torch's own choice)", UNPINNED),
    Setting("unpinned, MKL AVX2 instructions only", {**UNPINNED, "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, threads=(1,)),
    Setting("reproducible mode, kernels off (RNNLAB_GEMM=0: ATen + MKL)", {**REPRODUCIBLE, "RNNLAB_GEMM": "0"}, threads=(1, 2)),
    Setting("ATen kernels without SIMD", {**UNPINNED, "ATEN_CPU_CAPABILITY": "default"}, threads=(1,)),
)


# The smoke run (--quick): one process per kind of setting (a thread count, one core, an MKL switch), each a
# torch start. The tests check the bits under every MKL setting and thread count (tests/unit/runtime/test_gemm.py)
# and on one core (tests/e2e/test_pipeline.py).
QUICK_SETTINGS = (Setting(REFERENCE.name, REPRODUCIBLE, threads=(1,)), SETTINGS[1], SETTINGS[2])


@dataclass
class Outcome:
    hashes: dict[tuple[str, int], str] = field(default_factory=dict)


def worker(cell: str, threads: int, quick: bool, steps: int, cores: int | None, mkl: str | None) -> dict[str, object]:
    if cores:  # before torch starts its thread pool
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    from rnnlab.runtime import environment

    environment.configure()  # before torch loads; the caller's RNNLAB_REPRODUCIBLE chooses the mode
    if mkl:
        name, _, value = mkl.partition("=")
        os.environ[name] = value  # after the mode's pins, so this setting is the one MKL reads
    import torch

    from bench.models import default_sizes, pipeline_model, synthetic_split
    from bench.steps import pipeline_epoch_runner
    from rnnlab.runtime.environment import setup_torch

    os.environ["RNNLAB_THREADS"] = str(threads)
    setup_torch("cpu")
    sizes = default_sizes(quick)
    split = synthetic_split(steps * sizes.batch_size, sizes)
    model = pipeline_model(sizes, cell=cell)
    torch.manual_seed(0)  # the dropout masks
    run_epoch = pipeline_epoch_runner(model, split, sizes)  # the same shuffling, dropout, Adam as training
    run_epoch()
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return {
        "hash": digest.hexdigest()[:12],
        "capability": str(torch.backends.cpu.get_cpu_capability()),
        "math": environment.math_library("cpu"),
    }


def measure(setting: Setting, cell: str, threads: int, quick: bool, steps: int) -> dict[str, object]:
    environment = {key: value for key, value in os.environ.items() if key not in KNOBS}
    environment.update(setting.environment)
    command = [
        sys.executable,
        "-m",
        "bench.reproducibility",
        "--worker",
        "--cell",
        cell,
        "--threads",
        str(threads),
        "--steps",
        str(steps),
        *(["--quick"] if quick else []),
        *(["--cores", str(setting.cores)] if setting.cores else []),
        *(["--mkl", setting.mkl] if setting.mkl else []),
    ]
    completed = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def bench_reproducibility(
    quick: bool, steps: int, table: Table, cells: tuple[str, ...] = ("rnn", "lstm", "gru"), speed_rounds: int = 5
) -> None:
    for cell in cells:
        outcome = Outcome()
        for setting in QUICK_SETTINGS if quick else SETTINGS:
            for threads in setting.threads:
                outcome.hashes[(setting.name, threads)] = str(measure(setting, cell, threads, quick, steps)["hash"])
        add_hash_rows(cell, outcome, table)
    if not quick:  # the smoke run checks the bits only: its tiny sizes say nothing about speed
        bench_speed(cells, speed_rounds, table)


def add_hash_rows(cell: str, outcome: Outcome, table: Table) -> None:
    reference = outcome.hashes[(REFERENCE.name, 1)]
    for (name, threads), digest in outcome.hashes.items():
        same = "reference" if (name, threads) == (REFERENCE.name, 1) else "= reference" if digest == reference else "differs"
        table.add(Row("repro", f"{cell}, {name}, {threads} thread(s): weights sha256", digest, same))
    pinned = {
        key: digest
        for key, digest in outcome.hashes.items()
        if key[0].startswith("reproducible mode") and "kernels off" not in key[0]
    }
    table.add(
        Row(
            "repro",
            f"{cell}: reproducible mode over threads, one core, MKL settings",
            f"{len(set(pinned.values()))} hash(es) in {len(pinned)} runs",
            "",
            "1 hash",
            verdict(len(set(pinned.values())) == 1),
        )
    )


def bench_speed(cells: tuple[str, ...], rounds: int, table: Table) -> None:
    """Reproducible vs unpinned train step, IMDB sizes at 1 and 2 threads, the order task at 1."""
    ours, theirs = gemm_speed.Worker("ours"), gemm_speed.Worker("torch")
    runs = [(gemm_speed.IMDB, cell, threads) for threads in (1, 2) for cell in cells]
    runs += [(gemm_speed.ORDER, cell, 1) for cell in cells]
    try:
        for task, cell, threads in runs:
            ratio, mine, unpinned = gemm_speed.measure(ours, theirs, task, cell, threads, rounds)
            table.add(
                Row(
                    "repro",
                    f"{task.name} {cell}: train step, {threads} thread(s), reproducible vs unpinned (median of {rounds})",
                    f"{seconds(mine)} vs {seconds(unpinned)}",
                    f"{ratio:.2f}x time",
                    f"<= {SPEED_TARGET:.1f}x ({SPEED_LIMIT}x at most)",
                    verdict(ratio <= SPEED_LIMIT),
                )
            )
    finally:
        ours.close()
        theirs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="one reproducibility measurement (used by python -m bench)")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--cell", default="rnn")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--cores", type=int, help="restrict the process to this many cores")
    parser.add_argument("--mkl", help="NAME=VALUE: an MKL variable set after the mode's pins")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(worker(args.cell, args.threads, args.quick, args.steps, args.cores, args.mkl)))


if __name__ == "__main__":
    main()
