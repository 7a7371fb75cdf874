"""The review's cost: `python -m tools.review` with changed variants against HEAD against itself.

Issue 24's target: a review of 4 changed variants costs at most 1.5x a review of HEAD against itself.
The changed side is a real one, as a pull request's head would be: an experiment of the checked-out
commit whose four IMDB variants were retrained, so the review compares every prediction, judges every
variant and draws every chart. Make it with (~5 minutes on 2 cores)

    dvc exp run --queue -n review-bench -S train.epochs=2 && dvc queue start

Without one, the newest seed experiment (`default-seed<N>`, python -m tools.sweep --seeds 0-9) stands
in; made on an earlier commit, its side of the review runs that commit's code. The two commands run
as the user runs them (a fresh process each, so imports count), interleaved.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.dvc_repo import PROJECT_ROOT
from bench.timing import Row, Table, seconds, time_interleaved, verdict
from rnnlab.core.git import experiment_refs, git

TARGET_RATIO = 1.5
# A 2-second command on a shared 2-core VM: HEAD HEAD alone ranged 1.0-2.6 s within minutes, so 7 pairs gave
# medians from 1.35x to 1.74x on one commit; 15 interleaved pairs halve the spread for about a minute.
REPEATS = 15
SEED_EXPERIMENT = re.compile(r"default-seed\d+$")
BENCH_EXPERIMENT = "review-bench"


def changed_head(repo: Path) -> str | None:
    """`review-bench` of the checked-out commit, else the newest seed experiment (by commit time), else None."""
    head = git("rev-parse", "HEAD", cwd=repo).strip()
    refs = experiment_refs(repo)
    if any(name == BENCH_EXPERIMENT and baseline == head for name, baseline, _ in refs):
        return BENCH_EXPERIMENT
    seeds = [(name, commit) for name, _baseline, commit in refs if SEED_EXPERIMENT.match(name)]
    if not seeds:
        return None
    times = {commit: int(git("show", "-s", "--format=%ct", commit, cwd=repo)) for _, commit in seeds}
    return max(seeds, key=lambda ref: times[ref[1]])[0]


def review_command(head: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "tools.review", "HEAD", head, "--out", str(out)]


def run_review(head: str, out: Path) -> str:
    """Run one review; its summary line."""
    result = subprocess.run(review_command(head, out), cwd=PROJECT_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench review: `{' '.join(review_command(head, out))}` failed: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


def bench_review(quick: bool, table: Table) -> None:
    experiment = changed_head(PROJECT_ROOT)
    if experiment is None:
        table.add(
            Row(
                "review",
                "4 changed variants vs none",
                "skipped: no experiment to review here (dvc exp run --queue -n review-bench -S train.epochs=2 makes one)",
            )
        )
        return
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-review-") as temporary:
        same, changed = Path(temporary) / "same", Path(temporary) / "changed"
        summary = run_review(experiment, changed)  # also the warm-up: page cache, the compiled .pyc files
        charts = len(list(changed.glob("*.png")))
        timings = time_interleaved(
            {"same": lambda: run_review("HEAD", same), "changed": lambda: run_review(experiment, changed)},
            repeats=1 if quick else REPEATS,
            warmup=0,
        )
    best, median = timings["changed"].best / timings["same"].best, timings["changed"].median / timings["same"].median
    table.add(
        Row(
            "review",
            "python -m tools.review HEAD HEAD (best / median)",
            f"{seconds(timings['same'].best)} / {seconds(timings['same'].median)}",
        )
    )
    table.add(
        Row(
            "review",
            f"python -m tools.review HEAD {experiment}, {charts} charts (best / median)",
            f"{seconds(timings['changed'].best)} / {seconds(timings['changed'].median)}",
            f"{best:.2f}x / {median:.2f}x HEAD HEAD",
            f"<= {TARGET_RATIO}x",
            verdict(median <= TARGET_RATIO),
        )
    )
    print(f"  [review] {experiment}: {summary}", flush=True)
