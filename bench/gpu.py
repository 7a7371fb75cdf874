"""The GPU check (issue 31): the gpu test tier, then train-step tokens/s of rnn, lstm and gru at the IMDB sizes on the
GPU against this machine's CPU in reproducible mode (the stages' settings on each), and the GPU's peak memory.

    python -m bench --only gpu

It needs no DVC and no network: docs/reproducibility.md lists the wheels to carry to a GPU machine without one.
"""

from __future__ import annotations

import subprocess
import sys

import torch

from bench.dvc_repo import PROJECT_ROOT
from bench.models import CELLS, Sizes, pipeline_model, synthetic_split
from bench.timing import Row, Table, seconds, time_interleaved, verdict
from rnnlab.runtime import environment
from rnnlab.training.train import train_epoch


def epoch_runner(cell: str, sizes: Sizes, device: torch.device, steps: int):
    model = pipeline_model(sizes, cell=cell).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=sizes.train.lr)
    split, generator = synthetic_split(steps * sizes.batch_size, sizes), torch.Generator().manual_seed(0)
    return lambda: train_epoch(model, optimizer, split, sizes.train, generator, device)  # .item() each step: synchronised


def bench_gpu(sizes: Sizes, steps: int, repeats: int, table: Table) -> None:
    if not torch.cuda.is_available():
        table.add(Row("gpu", "CUDA", "no CUDA GPU visible to torch: nothing measured"))
        return
    tier = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-m", "gpu", "-p", "no:cacheprovider", "tests/gpu"], cwd=PROJECT_ROOT
    )
    passed = tier.returncode == 0
    table.add(
        Row(
            "gpu",
            "gpu tier: tiny train + evaluate on CUDA twice, same md5",
            "passed" if passed else f"exit {tier.returncode}",
            target="pass",
            verdict=verdict(passed),
        )
    )
    for warning in environment.apply_torch_settings("cuda"):
        print(warning)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    tokens = steps * sizes.batch_size * sizes.sequence_length
    for cell in CELLS:
        torch.cuda.reset_peak_memory_stats()
        timings = time_interleaved(
            {"cuda": epoch_runner(cell, sizes, cuda, steps), "cpu": epoch_runner(cell, sizes, cpu, steps)}, repeats=repeats
        )
        gpu_rate, cpu_rate = tokens / timings["cuda"].best, tokens / timings["cpu"].best
        peak = torch.cuda.max_memory_allocated() / 2**20
        table.add(
            Row(
                "gpu",
                f"{cell}: train tokens/s, {torch.cuda.get_device_name(0)} vs CPU ({torch.get_num_threads()} threads)",
                f"{gpu_rate:,.0f} vs {cpu_rate:,.0f} ({seconds(timings['cuda'].best / steps)} per step)",
                f"{gpu_rate / cpu_rate:.1f}x; peak GPU memory {peak:,.0f} MiB",
            )
        )
