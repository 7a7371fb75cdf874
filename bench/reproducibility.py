"""What decides the bits of a CPU training run, and what the reproducible mode costs.

Each setting runs in a fresh process (the math libraries read their environment once, when they
load): a few training steps of the pipeline's model from the same seed, then a hash of the weights.
Two settings that give the same hash computed the same bits. The reproducible mode must give the
same hash on all cores and on one core (its thread count is fixed, not taken from the machine); an
AVX2-only machine runs the kernels it pins natively. Its cost is its step time over the unpinned one.

Worker: python -m bench.reproducibility --worker --cell rnn --threads 2 [--cores 1] [--no-onednn]
[--quick] -> one JSON line {"hash", "seconds_per_step", "capability"}; the caller sets the environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

from bench.timing import Row, Table, seconds

UNPINNED = {"RNNLAB_REPRODUCIBLE": "0", "RNNLAB_CROSS_VENDOR": "0"}


@dataclass(frozen=True)
class Setting:
    name: str
    environment: dict[str, str]
    no_onednn: bool = False
    threads: tuple[int, ...] = (1, 2)
    cores: int | None = None  # restrict the process to this many cores (None: all)


REPRODUCIBLE_ENVIRONMENT = {"RNNLAB_REPRODUCIBLE": "1", "RNNLAB_CROSS_VENDOR": "0"}
SETTINGS = (
    Setting("unpinned (torch's own choice)", UNPINNED),
    Setting("unpinned, kernels of an AVX2-only CPU (ATen, oneDNN)",
            {**UNPINNED, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    Setting("ATen kernels without SIMD", {**UNPINNED, "ATEN_CPU_CAPABILITY": "default"}, threads=(2,)),
    Setting("oneDNN off", UNPINNED, no_onednn=True),
    Setting("MKL AVX2 instructions only", {**UNPINNED, "MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    Setting("MKL CNR COMPATIBLE", {**UNPINNED, "MKL_CBWR": "COMPATIBLE"}, threads=(1, 2, 3)),
    Setting("cross_vendor mode (MKL COMPATIBLE too)", {"RNNLAB_CROSS_VENDOR": "1"}, threads=(2,)),
    Setting("reproducible mode, all cores", REPRODUCIBLE_ENVIRONMENT, threads=(2,)),
    Setting("reproducible mode, one core", REPRODUCIBLE_ENVIRONMENT, threads=(2,), cores=1),
)
UNPINNED_SETTING, CROSS_VENDOR, ALL_CORES, ONE_CORE = SETTINGS[0], SETTINGS[-3], SETTINGS[-2], SETTINGS[-1]


@dataclass
class Outcome:
    hashes: dict[tuple[str, int], str] = field(default_factory=dict)
    step_seconds: dict[tuple[str, int], float] = field(default_factory=dict)


def worker(cell: str, threads: int, no_onednn: bool, quick: bool, steps: int, cores: int | None) -> dict[str, object]:
    if cores:  # before torch starts its thread pool
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    from rnnlab.runtime import environment

    environment.configure()  # before torch loads; the caller's RNNLAB_* switches choose the mode
    import torch

    from bench.models import default_sizes, pipeline_model, synthetic_split
    from bench.steps import pipeline_epoch_runner
    from bench.timing import time_once
    from rnnlab.runtime.torch_setup import setup_torch

    os.environ["RNNLAB_THREADS"] = str(threads)
    setup_torch("cpu")
    torch.manual_seed(0)
    if no_onednn:
        torch.backends.mkldnn.enabled = False
    sizes = default_sizes(quick)
    split = synthetic_split(steps * sizes.batch_size, sizes)
    model = pipeline_model(sizes, cell=cell)
    run_epoch = pipeline_epoch_runner(model, split, sizes)  # the same shuffling, dropout, Adam as training
    run_epoch()
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    elapsed = time_once(run_epoch)  # a second, warm epoch for the speed
    return {"hash": digest.hexdigest()[:12], "seconds_per_step": elapsed / steps,
            "capability": str(torch.backends.cpu.get_cpu_capability())}


def measure(setting: Setting, cell: str, threads: int, quick: bool, steps: int) -> dict[str, object]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
                                  "OMP_WAIT_POLICY", "RNNLAB_REPRODUCIBLE", "RNNLAB_CROSS_VENDOR")}
    environment.update(setting.environment)
    command = [sys.executable, "-m", "bench.reproducibility", "--worker", "--cell", cell, "--threads", str(threads),
               "--steps", str(steps), *(["--no-onednn"] if setting.no_onednn else []), *(["--quick"] if quick else []),
               *(["--cores", str(setting.cores)] if setting.cores else [])]
    completed = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def bench_reproducibility(quick: bool, steps: int, table: Table, cells: tuple[str, ...] = ("rnn", "lstm")) -> None:
    for cell in cells:
        outcome = Outcome()
        for setting in SETTINGS:
            for threads in setting.threads:
                result = measure(setting, cell, threads, quick, steps)
                outcome.hashes[(setting.name, threads)] = str(result["hash"])
                outcome.step_seconds[(setting.name, threads)] = float(result["seconds_per_step"])
        reference = outcome.hashes[(SETTINGS[0].name, 1)]
        for (name, threads), digest in outcome.hashes.items():
            same = "reference" if (name, threads) == (SETTINGS[0].name, 1) else "= reference" if digest == reference else "differs"
            table.add(Row("repro", f"{cell}, {name}, {threads} thread(s): weights sha256", digest, same))
        all_cores, one_core = outcome.hashes[(ALL_CORES.name, 2)], outcome.hashes[(ONE_CORE.name, 2)]
        table.add(Row("repro", f"{cell}: reproducible mode, all cores vs one core", f"{all_cores} vs {one_core}",
                      "", "equal", "ok" if all_cores == one_core else "MISSED"))
        unpinned = outcome.step_seconds[(UNPINNED_SETTING.name, 2)]
        for setting in (ALL_CORES, CROSS_VENDOR):
            pinned = outcome.step_seconds[(setting.name, 2)]
            table.add(Row("repro", f"{cell}: train step, 2 threads, {setting.name.split(' (')[0].split(',')[0]} vs unpinned",
                          f"{seconds(pinned)} vs {seconds(unpinned)}", f"{pinned / unpinned:.2f}x time"))


def main() -> None:
    parser = argparse.ArgumentParser(description="one reproducibility measurement (used by python -m bench)")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--cell", default="rnn")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--no-onednn", action="store_true")
    parser.add_argument("--cores", type=int, help="restrict the process to this many cores")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(worker(args.cell, args.threads, args.no_onednn, args.quick, args.steps, args.cores)))


if __name__ == "__main__":
    main()
