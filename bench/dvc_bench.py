"""DVC: no-op `dvc repro`, what `dvc exp run -S model.cell=lstm` reruns, and queued experiments -j 1 vs -j 2."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.archive import make_archive
from bench.dvc_repo import PROJECT_ROOT, DvcRepo, export_commit, make_pipeline_repo, stages_run
from bench.timing import Row, Table, seconds, time_interleaved, time_once, verdict
from rnnlab.config.params import lookup, read_params_file

NOOP_TARGET_SECONDS = 1.5
# The pipeline before the library moved out of stages/ (issue 22): its no-op `dvc repro` is the
# reference the current layout must beat by NOOP_TARGET_RATIO, measured side by side on one tiny run.
REFERENCE_COMMIT = "602c26a"
NOOP_TARGET_RATIO = 0.7
QUEUE_POLL_SECONDS = 1.0
QUEUE_TIMEOUT_SECONDS = 900.0


@dataclass(frozen=True)
class Experiment:
    name: str
    overrides: dict[str, Any]  # params key -> value, as `-S key=value`


# The queued grid varies one variant only, so each experiment reruns just train@relu and
# evaluate@relu: two stage processes plus DVC's own per-experiment work (a temporary workspace,
# checkout, commit), which is what -j N parallelises. The keys exist in the bench repo's
# params.yaml (QUEUE_VARIANT), so `-S` only changes values.
QUEUE_VARIANT = {"model": {"activation": "relu", "cell": "rnn", "hidden_size": 8}, "train": {"seed": 0}}


def grid(tag: str, seed: int) -> list[Experiment]:
    """Four runs whose checkpoints differ in size, so a clobbered result shows in its parameter count."""
    settings: list[dict[str, object]] = [{"cell": "rnn"}, {"cell": "lstm"}, {"cell": "gru"}, {"cell": "rnn", "hidden_size": 16}]
    return [
        Experiment(
            f"{tag}-{index}",
            {**{f"variants.relu.model.{key}": value for key, value in setting.items()}, "variants.relu.train.seed": seed},
        )
        for index, setting in enumerate(settings)
    ]


def bench_dvc(quick: bool, table: Table) -> None:
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-dvc-") as temporary:
        archive = make_archive(Path(temporary) / "archive.tar.gz", per_folder=50)
        variants = read_params_file(PROJECT_ROOT / "params.yaml")["variants"]
        order_variants = None
        if quick:  # one variant per study: a smoke run of the same commands
            variants, order_variants = {"relu": QUEUE_VARIANT}, {"order_rnn": {"model": {"cell": "rnn"}}}
        repo = make_pipeline_repo(
            Path(temporary) / "repo", archive, variants={**variants, "relu": QUEUE_VARIANT}, order_variants=order_variants
        )
        order_count = len(read_params_file(repo.root / "params.yaml")["order"]["variants"])
        started = time.perf_counter()
        first = repo.run("repro")
        table.add(
            Row(
                "dvc",
                f"first dvc repro (tiny params, {len(variants)} + {order_count} order variants)",
                seconds(time.perf_counter() - started),
                f"{len(stages_run(first.stdout))} stages ran",
            )
        )
        repo.commit("first run")
        bench_noop_repro(repo, table)
        bench_noop_against_reference(Path(temporary), archive, variants, order_variants, repo, table, rounds=3 if quick else 7)
        bench_exp_run_lstm(repo, variants, table)
        if not quick:
            bench_queue(repo, table)


def bench_noop_repro(repo: DvcRepo, table: Table, repeats: int = 3) -> None:
    outputs: list[str] = []
    best = min(time_once(lambda: outputs.append(repo.run("repro").stdout)) for _ in range(repeats))
    reran = sorted({name for output in outputs for name in stages_run(output)})
    table.add(
        Row(
            "dvc",
            "no-op dvc repro, all variants (best of 3)",
            seconds(best),
            f"{len(reran)} stages ran",
            f"<= {NOOP_TARGET_SECONDS} s, 0 stages",
            verdict(best <= NOOP_TARGET_SECONDS and not reran),
        )
    )


def bench_noop_against_reference(
    base: Path,
    archive: Path,
    variants: dict[str, Any],
    order_variants: dict[str, Any] | None,
    current: DvcRepo,
    table: Table,
    rounds: int,
) -> None:
    """No-op `dvc repro` here vs at REFERENCE_COMMIT, same tiny params and archive, interleaved rounds."""
    source = export_commit(REFERENCE_COMMIT, base / "reference-tree")
    reference = make_pipeline_repo(
        base / "reference-repo",
        archive,
        variants={**variants, "relu": QUEUE_VARIANT},
        order_variants=order_variants,
        source=source,
    )
    reference.run("repro")
    reference.commit("first run")
    outputs: list[str] = []
    timings = time_interleaved(
        {
            "reference": lambda: outputs.append(reference.run("repro").stdout),
            "current": lambda: outputs.append(current.run("repro").stdout),
        },
        repeats=rounds,
    )
    reran = sorted({name for output in outputs for name in stages_run(output)})
    ratio = timings["current"].median / timings["reference"].median
    table.add(
        Row(
            "dvc",
            f"no-op dvc repro, this layout vs {REFERENCE_COMMIT} (median of {rounds}, interleaved)",
            f"{seconds(timings['current'].median)} vs {seconds(timings['reference'].median)}",
            f"{ratio:.2f}x time",
            f"<= {NOOP_TARGET_RATIO}x, 0 stages",
            verdict(ratio <= NOOP_TARGET_RATIO and not reran),
        )
    )


def bench_exp_run_lstm(repo: DvcRepo, variants: list[str], table: Table) -> None:
    started = time.perf_counter()
    output = repo.run("exp", "run", "-S", "model.cell=lstm").stdout
    elapsed = time.perf_counter() - started
    ran = stages_run(output)
    expected = {f"{stage}@{variant}" for stage in ("train", "evaluate") for variant in variants}
    # `report` aggregates every metrics file, so it reruns after them: downstream, never upstream.
    downstream = {"report"}
    retrained = [name for name in ran if name not in downstream]
    table.add(
        Row(
            "dvc",
            "dvc exp run -S model.cell=lstm: 'Running stage' lines",
            f"{len(ran)} in {seconds(elapsed)}",
            ", ".join(sorted(set(ran) - expected)) or "only train@/evaluate@",
            f"all {len(expected)} train+evaluate x {len(variants)}, nothing upstream",
            verdict(set(retrained) == expected and len(retrained) == len(expected)),
        )
    )
    # Back to the committed baseline: a queued experiment would otherwise carry this one's changes.
    repo.run("git", "checkout", "--", ".")
    repo.run("checkout", "--force")


def queue_and_run(repo: DvcRepo, experiments: list[Experiment], jobs: int) -> float:
    """Queue the grid, start `jobs` workers, wait until the queue is drained; returns wall seconds."""
    for experiment in experiments:
        settings = [argument for key, value in experiment.overrides.items() for argument in ("-S", f"{key}={value}")]
        repo.run("exp", "run", "--queue", "-n", experiment.name, *settings)
    started = time.perf_counter()
    repo.run("queue", "start", "-j", str(jobs))
    while True:
        status = repo.run("queue", "status").stdout
        if not any(state in status for state in ("Queued", "Running")):
            break
        if time.perf_counter() - started > QUEUE_TIMEOUT_SECONDS:
            raise TimeoutError(f"queue not drained after {QUEUE_TIMEOUT_SECONDS} s:\n{status}")
        time.sleep(QUEUE_POLL_SECONDS)
    elapsed = time.perf_counter() - started
    repo.run("queue", "stop", check=False)
    failed = [line for line in status.splitlines() if "Failed" in line]
    if failed:
        logs = "\n".join(repo.run("queue", "logs", line.split()[0], check=False).stdout for line in failed)
        raise RuntimeError(f"queued experiments failed:\n{status}\n{logs}")
    return elapsed


def experiment_results(repo: DvcRepo) -> dict[str, dict[str, Any]]:
    """name -> {"params": flat params.yaml values, "metrics": {metrics file: values}} from `dvc exp show --json`."""
    shown = json.loads(repo.run("exp", "show", "--json").stdout)
    results: dict[str, dict[str, Any]] = {}
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs", []):
                data = revision.get("data") or {}
                if revision.get("name"):
                    params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
                    metrics = {path: entry.get("data", {}) for path, entry in (data.get("metrics") or {}).items()}
                    results[revision["name"]] = {"params": params, "metrics": metrics, "rev": revision.get("rev")}
    return results


def parameter_count(repo: DvcRepo, revision: str) -> object:
    """The parameter count evaluate@relu wrote at an experiment's commit: an undeclared details file, so not in
    `dvc exp show`; metrics/relu.json held it in revisions made before the details file existed."""
    for path in ("metrics/details/relu.json", "metrics/relu.json"):
        shown = repo.run("git", "show", f"{revision}:{path}", check=False)
        if shown.returncode == 0:
            return json.loads(shown.stdout).get("parameters")
    return None


def check_no_clobbering(repo: DvcRepo, experiments: list[Experiment]) -> str:
    """Each experiment shows its own params, and the parameter count evaluate@relu wrote matches the
    cell/size it was queued with (a result written by another run would not). Returns the problems."""
    results = experiment_results(repo)
    problems: list[str] = []
    counts_by_setting: dict[tuple[tuple[str, object], ...], set[object]] = {}
    for experiment in experiments:
        result = results.get(experiment.name)
        if result is None:
            problems.append(f"{experiment.name} missing from dvc exp show")
            continue
        for key, value in experiment.overrides.items():
            if lookup(result["params"], key) != value:
                problems.append(f"{experiment.name}: {key}={lookup(result['params'], key)}, queued {value}")
        count = parameter_count(repo, result["rev"])
        if count is None:
            problems.append(f"{experiment.name}: no parameter count in metrics/details/relu.json at {result['rev']}")
        setting = tuple(sorted((key, value) for key, value in experiment.overrides.items() if not key.endswith("seed")))
        counts_by_setting.setdefault(setting, set()).add(count)
    if any(len(counts) != 1 for counts in counts_by_setting.values()) or len(
        {frozenset(counts) for counts in counts_by_setting.values()}
    ) != len(counts_by_setting):
        problems.append(f"parameter counts do not match the queued settings: {counts_by_setting}")
    return "; ".join(problems)


def bench_queue(repo: DvcRepo, table: Table) -> None:
    serial_grid, parallel_grid = grid("j1", seed=1), grid("j2", seed=2)  # distinct seeds: no run-cache hits
    serial = queue_and_run(repo, serial_grid, jobs=1)
    parallel = queue_and_run(repo, parallel_grid, jobs=2)
    problems = check_no_clobbering(repo, serial_grid + parallel_grid)
    table.add(
        Row("dvc queue", f"{len(serial_grid)} queued experiments (train+evaluate@relu each), -j 1", seconds(serial), "1.0x")
    )
    table.add(
        Row(
            "dvc queue",
            f"{len(parallel_grid)} queued experiments (train+evaluate@relu each), -j 2",
            seconds(parallel),
            f"{serial / parallel:.2f}x speedup",
            "all results in dvc exp show, none clobbered",
            verdict(not problems),
        )
    )
    if problems:
        print(f"queue check problems: {problems}")
