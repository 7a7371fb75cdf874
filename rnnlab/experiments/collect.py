"""Collect finished DVC experiments into reports/studies.md and reports/studies.json.

Each experiment contributes the variants its run changed and the params it changed against its baseline
commit. Runs that differ only in their seeds form a seed spread (mean and sample std of test accuracy per
variant), so a reviewer can tell which `dvc metrics diff` deltas are noise. Experiment refs are local to the
repository that ran them, so runs recorded in reports/studies.json whose refs are not here are kept as recorded.
"""

from __future__ import annotations

import json
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnlab.config.params import parse_params_yaml
from rnnlab.core.errors import UserError
from rnnlab.core.git import experiment_refs, git, show
from rnnlab.experiments.presets import changed_params, setting

SEED_KEY = "train.seed"
# Every param that only reseeds a run: the IMDB study's, and the order task's (weights and data).
SEED_KEYS = (SEED_KEY, "order.train.seed", "order.data.seed")
HEAD_NAME = "(committed)"
# What reports/studies.json keeps of each row.
ROW_KEYS: tuple[str, ...] = ("accuracy", "f1", "roc_auc", "best_valid_accuracy", "best_epoch", "epochs_trained")
ROW_KEYS += ("train_seconds_per_epoch", "parameters", "seed", "diverged", "environment")
UNPINNED = "earlier, unpinned"
KERNELS = "rnnlab-gemm"  # the name the reproducible mode's kernels stamp into `environment.math`


def environment_label(environment: dict[str, Any] | None) -> str | None:
    """The class of math a row comes from (bits per machine, per CPU vendor with MKL, or rnnlab's kernels);
    rows of two classes never share a seed spread. None for the linear baseline's numpy."""
    environment = environment or {}
    if not environment.get("reproducible"):
        return UNPINNED
    math = environment.get("math")
    if math is None:
        return "reproducible, MKL"
    return f"reproducible, {math.split(' (')[0]}" if math.startswith(KERNELS) else None


@dataclass
class Run:
    """One set of metrics files: an experiment, or the checked-out commit itself."""

    name: str
    baseline: str
    commit: str
    overrides: dict[str, Any]  # dotted param key -> value; "+key" adds, "~key" removes
    metrics: dict[str, dict[str, Any]]  # variant -> the run's details (metrics_at), changed ones only
    all_variants: list[str] = field(default_factory=list)  # the run's params variants (imdb study)
    seed: Any = None
    recorded_command: str | None = None  # a run kept from reports/studies.json (its ref is not here)

    @property
    def environment(self) -> str:
        labels = {label for m in self.metrics.values() if (label := environment_label(m.get("environment"))) is not None}
        return UNPINNED if UNPINNED in labels else " + ".join(sorted(labels)) or "reproducible"

    @property
    def command(self) -> str:
        if self.recorded_command is not None:
            return self.recorded_command
        settings = [arg for key, value in self.overrides.items() for arg in ("-S", shlex.quote(setting(key, value)))]
        # A run that changed only some of its variants targeted their evaluate stages.
        targets = [] if set(self.metrics) >= set(self.all_variants) else [f"evaluate@{v}" for v in sorted(self.metrics)]
        return " ".join(["dvc exp run -n", shlex.quote(self.name), *settings, *targets])


def metrics_at(repo: Path, commit: str) -> dict[str, dict[str, Any]]:
    """variant -> metrics/details/<variant>.json at `commit`, or metrics/<variant>.json in revisions made
    before the declared metrics were split from the details."""
    names = git("ls-tree", "-r", "--name-only", commit, "metrics/", cwd=repo).split()
    files = {Path(name).stem: name for name in names if Path(name).parent == Path("metrics") and name.endswith(".json")}
    details = {Path(name).stem: name for name in names if Path(name).parent == Path("metrics/details")}
    return {variant: json.loads(show(repo, commit, details.get(variant, name))) for variant, name in files.items()}


def params_at(repo: Path, commit: str) -> dict[str, Any]:
    return parse_params_yaml(show(repo, commit, "params.yaml"), f"params.yaml at {commit[:7]}") or {}


def run_seed(overrides: dict[str, Any], params: dict[str, Any]) -> Any:
    """The seed a run changed, else its train.seed."""
    changed = [overrides[key] for key in SEED_KEYS if key in overrides]
    return changed[0] if changed else train_seed(params)


def train_seed(params: dict[str, Any]) -> Any:
    return (params.get("train") or {}).get("seed")


def collect(repo: Path, names: list[str] | None = None) -> list[Run]:
    """The checked-out commit first, then each experiment (by name, or all of them)."""
    head = git("rev-parse", "HEAD", cwd=repo).strip()
    head_metrics = metrics_at(repo, head)
    runs = [Run(HEAD_NAME, head, head, {}, head_metrics, list(head_metrics), train_seed(params_at(repo, head)))]
    found = sorted(experiment_refs(repo), key=lambda ref: ref[0])
    missing = sorted(set(names or ()) - {name for name, _, _ in found})
    if missing:
        known = ", ".join(sorted({name for name, _, _ in found})) or "(none)"
        raise UserError(f"No experiment named {', '.join(missing)}; `dvc exp list -A` lists them. Known: {known}.")
    for name, baseline, commit in found:
        if names and name not in names:
            continue
        base_metrics, params = metrics_at(repo, baseline), params_at(repo, commit)
        changed = {v: m for v, m in metrics_at(repo, commit).items() if base_metrics.get(v) != m}
        overrides = changed_params(params_at(repo, baseline), params)
        runs.append(
            Run(name, baseline, commit, overrides, changed, list(params.get("variants") or {}), run_seed(overrides, params))
        )
    return runs


def recorded_runs(path: Path, present: set[str]) -> list[Run]:
    """Experiments in an earlier reports/studies.json whose refs are not in this repository."""
    if not path.is_file():
        return []
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("experiments", [])
    except (json.JSONDecodeError, AttributeError) as error:
        raise UserError(f"{path} is not a studies report ({error}); restore it with `git checkout {path}`.") from error
    runs = []
    for entry in recorded:
        if entry["name"] in present or entry["name"] == HEAD_NAME:
            continue
        # The seed it changed, else the one its rows agree on (a recorded run keeps no params file).
        seed = run_seed(entry["overrides"], {})
        row_seeds = {row.get("seed") for row in entry["rows"].values()} - {None}
        if seed is None and len(row_seeds) == 1:
            seed = next(iter(row_seeds))
        run = Run(entry["name"], entry["baseline"], entry["commit"], entry["overrides"], entry["rows"], seed=seed)
        run.recorded_command = entry["command"]
        runs.append(run)
    return runs


def seed_spread(runs: list[Run]) -> list[dict[str, Any]]:
    """Per group of runs equal but for their seeds (one run per seed), mean ± std of each variant's accuracy.

    Runs of different environments are never grouped together, nor runs that reseeded different things
    (train.seed vs the order task's seeds); a run that changed no seed joins every group it matches otherwise.
    """

    def setting_key(run: Run) -> str:
        rest = {key: value for key, value in run.overrides.items() if key not in SEED_KEYS}
        return json.dumps({"overrides": rest, "environment": run.environment}, sort_keys=True)

    def reseeded(run: Run) -> tuple[str, ...]:
        return tuple(key for key in SEED_KEYS if key in run.overrides)

    groups: dict[tuple[str, tuple[str, ...]], dict[int, Run]] = {}
    for run in filter(reseeded, runs):
        groups.setdefault((setting_key(run), reseeded(run)), {}).setdefault(run.seed, run)  # the first run of a seed counts
    for run in runs:
        if not reseeded(run):
            matching = [group for (setting, _keys), group in groups.items() if setting == setting_key(run)]
            for group in matching or [groups.setdefault((setting_key(run), ()), {})]:
                group.setdefault(run.seed, run)
    spread = []
    for (key, _reseeded), by_seed in groups.items():
        group_setting = json.loads(key)
        for variant in sorted(set.union(*(set(run.metrics) for run in by_seed.values()))):
            # in the order the runs were given; a run of `evaluate@relu` alone counts for relu only
            members = sorted((run for run in by_seed.values() if variant in run.metrics), key=runs.index)
            if len(members) < 2:
                continue
            accuracies = [run.metrics[variant]["accuracy"] for run in members]
            spread.append(
                {
                    "overrides": group_setting["overrides"],
                    "environment": group_setting["environment"],
                    "variant": variant,
                    "runs": [run.name for run in members],
                    "seeds": [run.seed for run in members],
                    "accuracies": accuracies,
                    "mean": statistics.fmean(accuracies),
                    "std": statistics.stdev(accuracies),
                }
            )
    return spread
