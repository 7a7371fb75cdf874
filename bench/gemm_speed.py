"""Train-step speed: deterministic CPU math (rnnlab.runtime.gemm) against unpinned torch.

    python -m bench.gemm_speed [--rounds 5] [--cells rnn lstm gru] [--threads 1 2] [--no-order]
                               [--aten-loop] [--shapes]

Two worker processes, because MKL, oneDNN and ATen read their environment when they load:
- ours:  ATEN_CPU_CAPABILITY=avx2, oneDNN off, gemm.enable(): our GEMM and elementwise kernels and
         the fused recurrent layers (--aten-loop: torch's own recurrent loop on our kernels), on
         the AVX-512F tiles where the CPU has them (RNNLAB_GEMM_ISA=avx2: the AVX2 ones);
- torch: the default environment, MKL and oneDNN on (oneDNN runs nn.LSTM's fused kernel).
Each round times one setting after the other (alternating which goes first) on the same batch, and
the printed ratio is the median over rounds of ours / torch: contention from other jobs on a shared
CPU hits both sides of a pair alike. Step = forward + backward + Adam step, at the pipeline's IMDB
sizes (and, unless --no-order, the order task's). Standalone: imports torch and rnnlab only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.0  # ours / torch step time
ACCEPTABLE = 1.15
PINS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "RNNLAB_GEMM")


@dataclass(frozen=True)
class Task:
    """One train step's sizes: IMDB (embedding) or the order task (one-hot)."""

    name: str
    vocab: int
    embedding: int  # 0: one-hot inputs of `vocab` symbols
    hidden: int
    head: int  # 0: readout -> output layer directly
    classes: int
    batch: int
    steps: int
    min_length: int
    lr: float
    dropout: float


IMDB = Task("imdb", vocab=10002, embedding=128, hidden=256, head=256, classes=2, batch=100, steps=200,
            min_length=10, lr=1e-4, dropout=0.5)  # fmt: skip
ORDER = Task("order", vocab=9, embedding=0, hidden=4, head=0, classes=4, batch=256, steps=80, min_length=70,
             lr=5e-3, dropout=0.0)  # fmt: skip
TASKS = {task.name: task for task in (IMDB, ORDER)}


# ------------------------------------------------------------------------------------------------
# Worker side: builds the model and times train steps on request.


def make_step(task: Task, cell: str) -> Callable[[], None]:
    """A closure running one train step of the pipeline's model shape on a fixed random batch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class MaskDropout(nn.Module):
        """The pipeline's dropout (the model's Dropout layer): a torch.rand mask, the same on every CPU."""

        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return inputs * ((torch.rand(inputs.shape) >= self.p).to(inputs.dtype) / (1.0 - self.p))

    torch.manual_seed(0)
    features = task.embedding or task.vocab
    embedding = nn.Embedding(task.vocab, task.embedding) if task.embedding else None
    options = {"nonlinearity": "tanh"} if cell == "rnn" else {}
    recurrent = getattr(nn, cell.upper())(features, task.hidden, batch_first=True, **options)
    head: nn.Module
    if task.head:
        head = nn.Sequential(nn.Linear(task.hidden, task.head), nn.ReLU(), MaskDropout(task.dropout),
                             nn.Linear(task.head, task.classes))  # fmt: skip
    else:
        head = nn.Linear(task.hidden, task.classes)
    modules = nn.ModuleList([m for m in (embedding, recurrent, head) if m is not None])
    optimizer = torch.optim.Adam(modules.parameters(), lr=task.lr)
    tokens = torch.randint(0, task.vocab, (task.batch, task.steps))
    lengths = torch.randint(task.min_length, task.steps + 1, (task.batch,))
    labels = torch.randint(0, task.classes, (task.batch,))
    index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, task.hidden)  # (B, 1, H): the last real step

    def step() -> None:
        inputs = embedding(tokens) if embedding is not None else F.one_hot(tokens, task.vocab).float()
        outputs, _state = recurrent(inputs)  # (B, T, H)
        loss = F.cross_entropy(head(outputs.gather(1, index).squeeze(1)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


GEMM_SHAPES = {  # the LSTM layer's products at IMDB sizes, (m, k, n) and how backward lays them out
    "step forward  h @ W_hh^T + b  (100x256 @ 256x1024)": (100, 256, 1024, "addmm_bt"),
    "step backward G @ W_hh        (100x1024 @ 1024x256)": (100, 1024, 256, "mm"),
    "step backward G^T @ h         (1024x100 @ 100x256)": (1024, 100, 256, "mm_at"),
    "inputs        X @ W_ih^T + b  (20000x128 @ 128x1024)": (20000, 128, 1024, "addmm_bt"),
    "fused weights G^T @ H_prev    (1024x20000 @ 20000x256)": (1024, 20000, 256, "mm_at"),
}


def gemm_closure(m: int, k: int, n: int, kind: str) -> Callable[[], object]:
    import torch

    if kind == "addmm_bt":
        a, w, bias = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
        return lambda: torch.addmm(bias, a, w.t())
    if kind == "mm_at":
        g, h = torch.randn(k, m), torch.randn(k, n)
        return lambda: g.t().mm(h)
    a, b = torch.randn(m, k), torch.randn(k, n)
    return lambda: a.mm(b)


def time_gemm_shapes(threads: int, rounds: int) -> dict[str, float]:
    """ours / MKL per product shape, interleaved in this process (our ATen overrides toggled)."""
    import torch

    torch.set_num_threads(threads)
    ratios: dict[str, float] = {}
    for name, (m, k, n, kind) in GEMM_SHAPES.items():
        run = gemm_closure(m, k, n, kind)
        repeats = max(1, int(2e8 / (m * k * n)))
        samples = []
        for round_index in range(rounds):
            seconds = {}
            for use_ours in (True, False) if round_index % 2 == 0 else (False, True):
                torch.ops.rnnlab_gemm.set_enabled(use_ours)
                run()
                started = time.perf_counter()
                for _ in range(repeats):
                    run()
                seconds[use_ours] = time.perf_counter() - started
            samples.append(seconds[True] / seconds[False])
        torch.ops.rnnlab_gemm.set_enabled(True)
        ratios[name] = statistics.median(samples)
    return ratios


def worker(setting: str, fused_recurrent: bool) -> None:
    """Serve JSON requests on stdin: {"task", "cell", "threads", "repeats"} -> {"seconds": per step}."""
    import torch

    torch.set_flush_denormal(True)
    tiles = None
    if setting == "ours":
        from rnnlab.runtime import gemm

        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a ContextProp in torch's stubs
        status = gemm.enable(fused_recurrent=fused_recurrent)
        if not status.active:
            raise SystemExit(f"rnnlab-gemm is not active: {status.fallback_reason}")
        tiles = status.tiles
    steps: dict[tuple[str, str], Callable[[], None]] = {}
    print(json.dumps({"ready": torch.backends.cpu.get_cpu_capability(), "tiles": tiles}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        torch.set_num_threads(request["threads"])
        if request.get("shapes"):
            print(json.dumps({"ratios": time_gemm_shapes(request["threads"], request["repeats"])}), flush=True)
            continue
        key = (request["task"], request["cell"])
        if key not in steps:
            steps[key] = make_step(TASKS[key[0]], key[1])
            steps[key]()  # warm-up: allocations, thread pool
        started = time.perf_counter()
        for _ in range(request["repeats"]):
            steps[key]()
        print(json.dumps({"seconds": (time.perf_counter() - started) / request["repeats"]}), flush=True)


# ------------------------------------------------------------------------------------------------
# Parent side: two workers, interleaved requests, median ratios.


class Worker:
    def __init__(self, setting: str, aten_loop: bool = False) -> None:
        environment = {name: value for name, value in os.environ.items() if name not in PINS}
        if setting == "ours":
            environment["ATEN_CPU_CAPABILITY"] = "avx2"
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", setting, *(["--aten-loop"] if aten_loop else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment, cwd=ROOT,
        )  # fmt: skip
        ready = self.receive()
        self.capability, self.tiles = ready["ready"], ready["tiles"]  # tiles: ours' micro-kernels (same bits)

    def receive(self) -> dict:
        assert self.process.stdout is not None  # opened with stdout=PIPE
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"a benchmark worker died (exit {self.process.wait()})")
        return json.loads(line)

    def ask(self, **request: object) -> dict:
        assert self.process.stdin is not None  # opened with stdin=PIPE
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def repeats_for(task: Task, cell: str) -> int:
    """Steps per timed sample: about half a second or more each (LSTM's IMDB step is ~1 s on one core)."""
    return {"imdb": {"rnn": 2, "lstm": 1, "gru": 1}, "order": {"rnn": 20, "lstm": 10, "gru": 10}}[task.name][cell]


def measure(ours: Worker, torch_: Worker, task: Task, cell: str, threads: int, rounds: int) -> tuple[float, float, float]:
    """(median ours / torch, median ours seconds, median torch seconds) per step."""
    request = {"task": task.name, "cell": cell, "threads": threads, "repeats": repeats_for(task, cell)}
    ours.ask(**request)  # warm-up (first use builds the model)
    torch_.ask(**request)
    ratios, ours_times, torch_times = [], [], []
    for round_index in range(rounds):
        order = (ours, torch_) if round_index % 2 == 0 else (torch_, ours)
        seconds = {id(w): w.ask(**request)["seconds"] for w in order}
        ours_times.append(seconds[id(ours)])
        torch_times.append(seconds[id(torch_)])
        ratios.append(seconds[id(ours)] / seconds[id(torch_)])
    return statistics.median(ratios), statistics.median(ours_times), statistics.median(torch_times)


def verdict(ratio: float) -> str:
    return "ok" if ratio <= TARGET else "acceptable" if ratio <= ACCEPTABLE else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"], choices=["rnn", "lstm", "gru"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--no-order", action="store_true", help="skip the order task (1 thread)")
    parser.add_argument("--aten-loop", action="store_true", help="ours without the fused recurrent layers")
    parser.add_argument("--shapes", action="store_true", help="also ours / MKL per LSTM product shape")
    parser.add_argument("--worker", choices=["ours", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, fused_recurrent=not args.aten_loop)
        return
    ours, torch_ = Worker("ours", args.aten_loop), Worker("torch")
    loop = "torch's recurrent loop" if args.aten_loop else "fused recurrent layers"
    print(
        f"ours: rnnlab-gemm ({ours.tiles} tiles), {loop}, ATen {ours.capability}, oneDNN off | "
        f"torch: MKL + oneDNN, ATen {torch_.capability}"
    )
    print(f"median of {args.rounds} interleaved rounds; target ours/torch <= {TARGET} (acceptable <= {ACCEPTABLE})")
    runs = [(IMDB, cell, threads) for threads in args.threads for cell in args.cells]
    if not args.no_order:
        runs += [(ORDER, cell, 1) for cell in args.cells]
    try:
        for task, cell, threads in runs:
            ratio, mine, theirs = measure(ours, torch_, task, cell, threads, args.rounds)
            print(f"{task.name:5s} {cell:4s} {threads} thread{'s' if threads > 1 else ' '}: "
                  f"ours {mine * 1000:8.1f} ms  torch {theirs * 1000:8.1f} ms  ratio {ratio:.3f}  {verdict(ratio)}",
                  flush=True)  # fmt: skip
        if args.shapes:
            for threads in args.threads:
                ratios = ours.ask(shapes=True, threads=threads, repeats=args.rounds)["ratios"]
                for name, ratio in ratios.items():
                    print(f"gemm {name} {threads} thread{'s' if threads > 1 else ' '}: ours / MKL {ratio:.3f}")
    finally:
        ours.close()
        torch_.close()


if __name__ == "__main__":
    main()
