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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlab.config.params import parse_params_yaml
from rnnlab.core.errors import UserError
from rnnlab.core.files import write_json, write_text
from rnnlab.core.git import experiment_refs, git, show
from rnnlab.experiments.presets import PRESETS_DIR, Preset, available, changed_params, load_preset, setting

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
    metrics: dict[str, dict[str, Any]]  # variant -> the run's details, changed ones only
    seed: Any = None
    command: str = "dvc repro"  # what reproduces it on top of its baseline

    @property
    def environment(self) -> str:
        labels = {label for m in self.metrics.values() if (label := environment_label(m.get("environment"))) is not None}
        return UNPINNED if UNPINNED in labels else " + ".join(sorted(labels)) or "reproducible"


def metrics_at(repo: Path, commit: str) -> dict[str, dict[str, Any]]:
    """variant -> its metrics/details/<variant>.json at `commit`."""
    names = git("ls-tree", "--name-only", commit, "metrics/details/", cwd=repo).split()
    return {Path(name).stem: json.loads(show(repo, commit, name)) for name in names if name.endswith(".json")}


def params_at(repo: Path, commit: str) -> dict[str, Any]:
    return parse_params_yaml(show(repo, commit, "params.yaml"), f"params.yaml at {commit[:7]}") or {}


def run_seed(overrides: dict[str, Any], params: dict[str, Any]) -> Any:
    """The seed a run changed, else its train.seed."""
    changed = [overrides[key] for key in SEED_KEYS if key in overrides]
    return changed[0] if changed else (params.get("train") or {}).get("seed")


def collect(repo: Path, names: list[str] | None = None) -> list[Run]:
    """The checked-out commit first, then each experiment (by name, or all of them)."""
    head = git("rev-parse", "HEAD", cwd=repo).strip()
    runs = [Run(HEAD_NAME, head, head, {}, metrics_at(repo, head), run_seed({}, params_at(repo, head)))]
    found = sorted(experiment_refs(repo), key=lambda ref: ref[0])
    known = sorted({name for name, _, _ in found})
    if missing := sorted(set(names or ()) - set(known)):
        raise UserError(
            f"No experiment named {', '.join(missing)}; `dvc exp list -A` lists them. Known: {', '.join(known) or '(none)'}."
        )
    for name, baseline, commit in (ref for ref in found if not names or ref[0] in names):
        base_metrics, params = metrics_at(repo, baseline), params_at(repo, commit)
        changed = {v: m for v, m in metrics_at(repo, commit).items() if base_metrics.get(v) != m}
        overrides = changed_params(params_at(repo, baseline), params)
        settings = [arg for key, value in overrides.items() for arg in ("-S", shlex.quote(setting(key, value)))]
        # A run that changed only some of its variants targeted their evaluate stages.
        targets = [] if set(changed) >= set(params.get("variants") or {}) else [f"evaluate@{v}" for v in sorted(changed)]
        command = " ".join(["dvc exp run -n", shlex.quote(name), *settings, *targets])
        runs.append(Run(name, baseline, commit, overrides, changed, run_seed(overrides, params), command))
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
    for entry in (entry for entry in recorded if entry["name"] not in present):
        # The seed it changed, else the one its rows agree on (a recorded run keeps no params file).
        row_seeds = {row.get("seed") for row in entry["rows"].values()} - {None}
        agreed = {"train": {"seed": row_seeds.pop()}} if len(row_seeds) == 1 else {}
        seed = run_seed(entry["overrides"], agreed)
        runs.append(
            Run(entry["name"], entry["baseline"], entry["commit"], entry["overrides"], entry["rows"], seed, entry["command"])
        )
    return runs


def seed_spread(runs: list[Run]) -> list[dict[str, Any]]:
    """Per group of runs equal but for their seeds (one run per seed), mean ± std of each variant's accuracy.
    Runs of other environments, or that reseeded other things (train.seed vs the order task's seeds), never
    group together; a run that changed no seed joins every group it matches otherwise."""

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
        shared = json.loads(key)
        for variant in sorted(set.union(*(set(run.metrics) for run in by_seed.values()))):
            # in the order the runs were given; a run of `evaluate@relu` alone counts for relu only
            members = sorted((run for run in by_seed.values() if variant in run.metrics), key=runs.index)
            if len(members) < 2:
                continue
            accuracies = [run.metrics[variant]["accuracy"] for run in members]
            spread.append(
                {
                    "overrides": shared["overrides"],
                    "environment": shared["environment"],
                    "variant": variant,
                    "runs": [run.name for run in members],
                    "seeds": [run.seed for run in members],
                    "accuracies": accuracies,
                    "mean": statistics.fmean(accuracies),
                    "std": statistics.stdev(accuracies),
                }
            )
    return spread


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def preset_command(preset: Preset) -> str:
    return f"python -m tools.preset {preset.name}"


STUDIES_INTRO = """# Studies (DVC experiments)

Generated by `python -m tools.studies` from this repository's experiment refs (do not edit by
hand). Each row is a metrics file an experiment's run changed; the command below the table
reproduces the experiment on top of its baseline commit. `(committed)` is the checked-out
pipeline run.

| experiment | variant | test accuracy | F1 | ROC-AUC | best valid acc. | best epoch | parameters | seed | environment |
|---|---|---|---|---|---|---|---|---|---|"""
SPREAD_INTRO = """
## Seed spread (test accuracy)

| runs | changed params besides the seeds | environment | variant | seeds | mean ± std | min – max |
|---|---|---|---|---|---|---|"""
PRESETS_INTRO = """
## Presets

Named, committed experiment definitions (`presets/<name>.yaml`); the command prints and runs
the equivalent `dvc exp run` (`--queue` queues it, `--name` and `-S` vary it, `--dry-run` only prints).
"""


def render(runs: list[Run], spread: list[dict[str, Any]], presets: list[Preset]) -> str:
    lines = [STUDIES_INTRO]
    for run in runs:
        for variant, m in sorted(
            run.metrics.items(), key=lambda item: (item[1].get("study", "imdb") != "imdb", -(item[1].get("accuracy") or 0))
        ):
            diverged = " (diverged)" if m.get("diverged") else ""
            lines.append(
                f"| `{run.name}` | `{variant}`{diverged} | {percent(m.get('accuracy'))} | {m.get('f1', 0):.4f} | "
                f"{m.get('roc_auc', 0):.4f} | {percent(m.get('best_valid_accuracy'))} | {m.get('best_epoch', '–')} / "
                f"{m.get('epochs_trained', '–')} | {m.get('parameters', 0):,} | {m.get('seed')} | {run.environment} |"
            )
    lines += ["", "## Commands", ""]
    by_experiment = {preset.experiment: preset for preset in presets}
    for run in runs[1:]:
        preset = f" — preset: `{preset_command(by_experiment[run.name])}`" if run.name in by_experiment else ""
        lines.append(f"- `{run.name}` (experiment {run.commit[:7]}, baseline {run.baseline[:7]}): `{run.command}`{preset}")
    if spread:
        lines.append(SPREAD_INTRO)
    for row in spread:
        changed = ", ".join(f"`{setting(k, v)}`" for k, v in row["overrides"].items()) or "(none)"
        lines.append(
            f"| {', '.join(f'`{name}`' for name in row['runs'])} | {changed} | {row['environment']} | `{row['variant']}` | "
            f"{', '.join(map(str, row['seeds']))} | {100 * row['mean']:.2f} ± {100 * row['std']:.2f} % | "
            f"{percent(min(row['accuracies']))} – {percent(max(row['accuracies']))} |"
        )
    if presets:
        lines.append(PRESETS_INTRO)
        lines += [f"- `{preset_command(preset)}`: {preset.description} (experiment `{preset.experiment}`)" for preset in presets]
    return "\n".join(lines) + "\n"


def to_json(runs: list[Run], spread: list[dict[str, Any]], presets: list[Preset]) -> dict[str, Any]:
    experiments = [
        {
            **{key: getattr(run, key) for key in ("name", "commit", "baseline", "overrides", "command", "environment")},
            "rows": {variant: {key: m.get(key) for key in ROW_KEYS} for variant, m in run.metrics.items()},
        }
        for run in runs
    ]
    listed = [
        {**{key: getattr(preset, key) for key in ("name", "experiment", "description")}, "command": preset_command(preset)}
        for preset in presets
    ]
    return {"experiments": experiments, "seed_spread": spread, "presets": listed}


def write_studies(repo: Path, out: Path, names: list[str] | None = None) -> None:
    """Collect the experiments (all, or `names`) and write `out` (Markdown) and its JSON beside it."""
    runs = collect(repo, names)
    # A full regeneration keeps what earlier runs recorded but this repository lacks.
    recorded = [] if names else recorded_runs(out.with_suffix(".json"), {run.name for run in runs})
    runs += recorded
    spread = seed_spread(runs)
    presets = [load_preset(name, repo / PRESETS_DIR) for name in available(repo / PRESETS_DIR)]
    write_json(out.with_suffix(".json"), to_json(runs, spread, presets))
    write_text(out, render(runs, spread, presets))
    print(f"studies: {len(runs) - 1} experiments ({len(recorded)} kept as recorded), {len(spread)} seed-spread rows -> {out}")
