"""Seed bands: each variant's test-accuracy mean and std over seeds -> reports/seed_bands.json.

`tools.review` reads the file to tell a real change from seed noise. The seeds run as queued experiments of
the checked-out commit, whose own metrics count as its seed's run. Not a DVC output: it summarises experiments.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnlab.core.errors import UserError
from rnnlab.core.files import PIPELINE_FILE, workspace_paths, write_json
from rnnlab.core.git import experiment_refs, git
from rnnlab.experiments import collect as experiments

DEFAULT_SEEDS = tuple(range(10))
POLL_SECONDS = 30.0
ACTIVE_STATUSES = ("Queued", "Running")


def experiment_name(seed: int) -> str:
    return f"default-seed{seed}"


def run_dvc(args: list[str], repo: Path) -> str:
    """Run `dvc ARGS` in `repo`; its failure becomes a one-line error with dvc's last line."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"`dvc {' '.join(args)}` failed: {message}")
    return result.stdout


def same_results(repo: Path) -> Callable[[str], bool]:
    """Whether a commit's metrics are the checked-out commit's (e.g. a docs-only commit before it): its seed
    experiments then describe this commit too."""
    head_metrics = experiments.metrics_at(repo, head_commit(repo))
    return functools.cache(lambda commit: experiments.metrics_at(repo, commit) == head_metrics)


def head_commit(repo: Path) -> str:
    return git("rev-parse", "HEAD", cwd=repo).strip()


def queue_seeds(repo: Path, seeds: list[int], committed_seed: int, jobs: int) -> list[str]:
    """Queue one experiment per seed the commit lacks and start the queue; return the names to wait for.

    A seed whose experiment finished on a commit with the same results, or is still queued or running, is not
    queued again: DVC refuses a second experiment of the same name on one baseline, and ten seeds take hours.
    """
    counts = same_results(repo)
    finished = {name for name, baseline, _ in experiment_refs(repo) if counts(baseline)}
    pending = set(active_tasks(run_dvc(["queue", "status"], repo), [experiment_name(seed) for seed in seeds]))
    names, queued = [], False
    for seed in seeds:
        name = experiment_name(seed)
        if seed == committed_seed or name in finished:
            continue  # the committed metrics are this seed's run; or it ran already
        if name not in pending:
            run_dvc(["exp", "run", "--queue", "-n", name, "-S", f"{experiments.SEED_KEY}={seed}"], repo)
            queued = True
        names.append(name)
    if queued:
        run_dvc(["queue", "start", "-j", str(jobs)], repo)
    return names


def active_tasks(status_output: str, names: list[str]) -> list[str]:
    """Our experiment names that `dvc queue status` still lists as queued or running."""
    rows = [line.split() for line in status_output.splitlines()]
    return [name for words in rows if set(words) & set(ACTIVE_STATUSES) for name in names if name in words]


def wait_for_queue(repo: Path, names: list[str], poll_seconds: float = POLL_SECONDS) -> None:
    while active := active_tasks(run_dvc(["queue", "status"], repo), names):
        print(f"seed_bands: waiting for {', '.join(active)} (`dvc queue logs <name>` shows progress)", flush=True)
        time.sleep(poll_seconds)


def collect_bands(repo: Path, seeds: list[int] | None = None) -> dict[str, Any]:
    """{commit, seeds, variants: {variant: {seeds, runs, accuracies, mean, std, df}}} of the checked-out commit,
    from the runs with its results whose only changed param is train.seed; `df` (seeds - 1) is what the
    review's t-interval uses."""
    head = head_commit(repo)
    counts = same_results(repo)
    runs = [run for run in experiments.collect(repo) if counts(run.baseline)]
    seed_runs = [run for run in runs if set(run.overrides) <= {experiments.SEED_KEY} and (seeds is None or run.seed in seeds)]
    spread = [row for row in experiments.seed_spread(seed_runs) if row["overrides"] == {}]
    if not spread:
        seeds = sorted({run.seed for run in seed_runs}, key=str)
        raise UserError(
            f"only seed(s) {', '.join(map(str, seeds)) or '(none)'} found for commit {head[:7]}: a band needs two "
            "or more; run the other seeds with `python -m tools.seed_bands --run`."
        )
    variants = {
        row["variant"]: {
            **{key: row[key] for key in ("seeds", "runs", "accuracies", "mean", "std")},
            "df": len(row["accuracies"]) - 1,
        }
        for row in spread
    }
    return {
        "commit": head,
        "made_by": "python -m tools.seed_bands",
        "seeds": sorted({seed for row in spread for seed in row["seeds"]}),
        "variants": variants,
    }


def record_bands(repo: Path, seeds: list[int], out: Path | None = None, run: bool = False, jobs: int = 1) -> None:
    """Optionally queue and run the missing seeds, then write the bands of the checked-out commit to `out`."""
    if len(set(seeds)) < 2:
        raise UserError("a seed band needs two or more different seeds; pass e.g. `--seeds 0 1 2`.")
    out = out or repo / workspace_paths(repo / PIPELINE_FILE).get("seed_bands", "reports/seed_bands.json")
    if run:
        head = head_commit(repo)
        names = queue_seeds(repo, seeds, int(experiments.train_seed(experiments.params_at(repo, head)) or 0), jobs)
        wait_for_queue(repo, names)
        finished = {name for name, baseline, _ in experiment_refs(repo) if baseline == head}
        failed = [name for name in names if name not in finished]
        if failed:
            raise UserError(f"experiment(s) {', '.join(failed)} did not finish; `dvc queue logs {failed[0]}` says why.")
    bands = collect_bands(repo, seeds)
    write_json(out, bands)
    summary = ", ".join(f"{v} {100 * b['mean']:.2f} ± {100 * b['std']:.2f} %" for v, b in bands["variants"].items())
    print(f"seed_bands: seeds {bands['seeds']} of {bands['commit'][:7]}: {summary} -> {out}")
