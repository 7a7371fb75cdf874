"""The cluster sweep's cost (`python -m tools.sweep`), on a real Ray cluster and S3 store on this machine.

- per experiment, what the sweep adds around `dvc exp run` on its node (clone, dvc pull, the
  environment check, dvc push + dvc exp push) beside the run itself, on tiny data and, with the IMDB
  archive (IMDB_ARCHIVE or ../shared/data), on real data: one epoch of relu on the full reviews;
- 4 tiny experiments on two 1-CPU worker nodes against one (issue 30's target: <= 0.6x the time),
  alternated, each side's best of `repeats`.

The nodes run in a network namespace with only loopback (bench/cluster.py), as in the tests.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.archive import make_archive
from bench.cluster import S3_ENDPOINT, Sandbox
from bench.dvc_repo import PROJECT_ROOT, DvcRepo, make_pipeline_repo, share
from bench.timing import Row, Table, verdict

TARGET_RATIO = 0.6
TARGET = "evaluate@relu"
VARIANTS = {"relu": {"model": {"activation": "relu"}}}
ORDER_VARIANTS = {"order_rnn": {"model": {"cell": "rnn"}}}
REAL_ARCHIVE = PROJECT_ROOT.parent / "shared/data/aclImdb_v1.labeled.tar.gz"
STEP = re.compile(r"(\w+) ([0-9.]+) s")


def sweep(cluster: Sandbox, repo: DvcRepo, *arguments: str) -> tuple[float, dict[str, float]]:
    """Wall seconds of `python -m tools.sweep ARGUMENTS` on the cluster, and its last experiment's node steps."""
    environment = cluster.environment(**repo.git_identity())
    started = time.perf_counter()
    result = cluster.run(
        [sys.executable, "-m", "tools.sweep", "--address", cluster.head_address, *arguments], repo.root, environment
    )
    wall = time.perf_counter() - started
    pushed = [line for line in result.stderr.splitlines() if ": pushed by " in line]
    return wall, {step: float(seconds) for step, seconds in STEP.findall(pushed[-1].split("(", 1)[-1])} if pushed else {}


def cost_rows(label: str, wall: float, steps: dict[str, float], table: Table) -> None:
    overhead = sum(seconds for step, seconds in steps.items() if step != "run")
    run = steps.get("run", 0.0)
    detail = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in steps.items())
    table.add(
        Row(
            "sweep",
            f"one experiment, {label}: node steps ({detail})",
            f"{overhead:.1f} s + run {run:.1f} s",
            f"overhead {overhead / max(run, 1e-9):.2f}x the run",
        )
    )
    table.add(
        Row(
            "sweep",
            f"one experiment, {label}: the driver's wall time (checks, Ray, pull back)",
            f"{wall:.1f} s",
            f"{wall - overhead - run:.1f} s beside the node's steps",
        )
    )


def publish(repo: DvcRepo, cluster: Sandbox, folder: Path, stages: list[str]) -> None:
    repo.run("repro", *stages)
    repo.commit("results")
    share(repo, S3_ENDPOINT, folder / f"{repo.root.name}.git")


def bench_sweep(quick: bool, table: Table) -> None:
    repeats = 1 if quick else 2
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-sweep-") as temporary:
        folder = Path(temporary)
        cluster = Sandbox(folder / "cluster")
        try:
            cluster.start_s3()
            cluster.start_ray(workers=0)
            cluster.add_worker(cores="0")  # a 1-CPU machine: the node and all it runs on core 0
            archive = make_archive(folder / "archive.tar.gz", per_folder=20)
            tiny = make_pipeline_repo(folder / "tiny", archive, variants=VARIANTS, order_variants=ORDER_VARIANTS)
            publish(tiny, cluster, folder, [TARGET])
            sweep(cluster, tiny, "-n", "warm", "--seeds", "9", TARGET)  # the node's DVC cache and the GEMM build
            cost_rows("tiny data", *sweep(cluster, tiny, "-n", "cost", "--seeds", "1", TARGET), table)

            seeds = "1-4"
            one, two = [], []
            for round_ in range(repeats):
                one.append(sweep(cluster, tiny, "-n", f"one{round_}", "--seeds", seeds, TARGET)[0])
                second = cluster.add_worker(cores="1")
                two.append(sweep(cluster, tiny, "-n", f"two{round_}", "--seeds", seeds, TARGET)[0])
                cluster.kill_node(second)
            ratio = min(two) / min(one)
            table.add(
                Row(
                    "sweep",
                    "4 tiny experiments: two 1-CPU nodes vs one",
                    f"{min(two):.1f} s vs {min(one):.1f} s",
                    f"{ratio:.2f}x the time",
                    f"<= {TARGET_RATIO}x",
                    verdict(ratio <= TARGET_RATIO),
                )
            )

            real_archive = Path(os.environ.get("IMDB_ARCHIVE") or REAL_ARCHIVE)
            if quick or not real_archive.is_file():
                table.add(
                    Row(
                        "sweep",
                        "one experiment, real data",
                        "skipped",
                        "--quick" if quick else f"no IMDB archive at {real_archive} (set IMDB_ARCHIVE)",
                    )
                )
                return
            real = make_pipeline_repo(folder / "real", real_archive, variants=VARIANTS, order_variants=ORDER_VARIANTS, sizes={})
            publish(real, cluster, folder, ["xy"])
            cost_rows("real data (relu, 1 epoch)", *sweep(cluster, real, "-S", "train.epochs=1", TARGET), table)
        finally:
            cluster.close()
