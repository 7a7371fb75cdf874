"""Collect finished DVC experiments into reports/studies.md and reports/studies.json.

Not a DVC stage: experiments live in git refs (`refs/exps/...`), which DVC cannot track as a
dependency. Run it after `dvc exp run` (or a drained `dvc queue`) has finished:

    python -m stages.studies               # every experiment in this repository
    python -m stages.studies NAME [NAME]   # only these

Each experiment contributes the metrics files its run changed, and the params it changed against
its baseline commit, written as the `dvc exp run -S ...` command that reproduces it. Runs that differ
only in `train.seed` (the checked-out commit's own metrics count as one of them) are grouped into a
seed spread: mean and sample standard deviation of test accuracy per variant, so a reviewer can tell
which `dvc metrics diff` deltas are noise. Named experiment definitions (presets/*.yaml) are listed
with their one short command, and the experiment a preset reproduces points at it.

Experiment refs are local to the repository that ran them, so experiments already recorded in
reports/studies.json whose refs are not here are kept as recorded. Each row says the environment it
ran in: `reproducible` (runtime.reproducible, stages/runtime.py) or `earlier, unpinned` for runs
made before that mode existed, whose bits depend on the machine. Seed spreads never mix the two.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from stages import preset as presets
from stages.common import StageError, run_cli, write_json, write_text
from stages.config import parse_params_yaml
from stages.preset import params_diff, setting

__all__ = ["params_diff", "setting"]  # -S formatting lives in stages.preset, shared with it

SEED_KEY = "train.seed"
# Every param that only reseeds a run: the IMDB study's, and the order task's (weights and data).
SEED_KEYS = (SEED_KEY, "order.train.seed", "order.data.seed")
HEAD_NAME = "(committed)"
ROW_KEYS = ("accuracy", "f1", "roc_auc", "best_valid_accuracy", "best_epoch", "epochs_trained",
            "train_seconds_per_epoch", "parameters", "seed", "diverged", "environment")


@dataclass
class Run:
    """One set of metrics files: an experiment, or the checked-out commit itself."""

    name: str
    baseline: str
    commit: str
    overrides: dict[str, Any]          # dotted param key -> value; "+key" adds, "~key" removes
    metrics: dict[str, dict[str, Any]]  # variant -> the run's metrics JSON, changed files only
    all_variants: list[str] = field(default_factory=list)  # the run's params variants (imdb study)
    seed: Any = None                                          # the run's train.seed
    recorded_command: str | None = None  # a run kept from reports/studies.json (its ref is not here)

    @property
    def environment(self) -> str:
        """`reproducible` when every row was made in reproducible mode, else `earlier, unpinned`."""
        modes = {bool((m.get("environment") or {}).get("reproducible")) for m in self.metrics.values()}
        return "reproducible" if modes == {True} else "earlier, unpinned"

    @property
    def command(self) -> str:
        if self.recorded_command is not None:
            return self.recorded_command
        settings = [arg for key, value in self.overrides.items() for arg in ("-S", shlex.quote(setting(key, value)))]
        # A run that changed only some of its variants targeted their evaluate stages.
        targets = [] if set(self.metrics) >= set(self.all_variants) else [f"evaluate@{v}" for v in sorted(self.metrics)]
        return " ".join(["dvc exp run -n", shlex.quote(self.name), *settings, *targets])


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StageError(f"`git {' '.join(args)}` failed in {cwd}: {result.stderr.strip()}. Run this from the RNN Lab repository.")
    return result.stdout


def experiment_refs(repo: Path) -> list[tuple[str, str, str]]:
    """(name, baseline commit, experiment commit) for every `refs/exps/<xx>/<baseline>/<name>`."""
    refs = []
    for line in git("for-each-ref", "--format=%(refname) %(objectname)", "refs/exps", cwd=repo).splitlines():
        refname, commit = line.split()
        parts = refname.split("/")
        # DVC also keeps bookkeeping refs (refs/exps/exec/..., refs/exps/celery/...): not experiments.
        if len(parts) == 5 and len(parts[2]) == 2 and len(parts[2] + parts[3]) == 40:
            refs.append((parts[4], parts[2] + parts[3], commit))
    return refs


def show(repo: Path, commit: str, path: str) -> str:
    return git("show", f"{commit}:{path}", cwd=repo)


def metrics_at(repo: Path, commit: str) -> dict[str, dict[str, Any]]:
    names = git("ls-tree", "--name-only", commit, "metrics/", cwd=repo).split()
    return {Path(name).stem: json.loads(show(repo, commit, name)) for name in names if name.endswith(".json")}


def params_at(repo: Path, commit: str) -> dict[str, Any]:
    return parse_params_yaml(show(repo, commit, "params.yaml"), f"params.yaml at {commit[:7]}") or {}


def run_seed(overrides: dict[str, Any], params: dict[str, Any]) -> Any:
    """The seed a run changed (any of SEED_KEYS), else its train.seed: what its seed-spread row lists."""
    changed = [overrides[key] for key in SEED_KEYS if key in overrides]
    return changed[0] if changed else train_seed(params)


def train_seed(params: dict[str, Any]) -> Any:
    return (params.get("train") or {}).get("seed")


def collect(repo: Path, names: list[str] | None = None) -> list[Run]:
    """The checked-out commit first, then each experiment (by name, or all of them)."""
    head = git("rev-parse", "HEAD", cwd=repo).strip()
    head_metrics = metrics_at(repo, head)
    head_params = params_at(repo, head)
    runs = [Run(HEAD_NAME, head, head, {}, head_metrics, list(head_metrics), train_seed(head_params))]
    found = experiment_refs(repo)
    missing = sorted(set(names or ()) - {name for name, _, _ in found})
    if missing:
        known = ", ".join(sorted({name for name, _, _ in found})) or "(none)"
        raise StageError(f"No experiment named {', '.join(missing)}; `dvc exp list -A` lists them. Known: {known}.")
    for name, baseline, commit in sorted(found, key=lambda ref: ref[0]):
        if names and name not in names:
            continue
        base_metrics, exp_metrics = metrics_at(repo, baseline), metrics_at(repo, commit)
        exp_params = params_at(repo, commit)
        changed = {v: m for v, m in exp_metrics.items() if base_metrics.get(v) != m}
        overrides = params_diff(params_at(repo, baseline), exp_params)
        runs.append(Run(name, baseline, commit, overrides, changed, list(exp_params.get("variants") or {}),
                        run_seed(overrides, exp_params)))
    return runs


def recorded_runs(path: Path, present: set[str]) -> list[Run]:
    """Experiments in an earlier reports/studies.json whose refs are not in this repository."""
    if not path.is_file():
        return []
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("experiments", [])
    except (json.JSONDecodeError, AttributeError) as error:
        raise StageError(f"{path} is not a studies report ({error}); restore it with `git checkout {path}`.") from error
    runs = []
    for entry in recorded:
        if entry["name"] in present or entry["name"] == HEAD_NAME:
            continue
        # The seed it changed, else the one its rows agree on (a recorded run keeps no params file).
        seed = run_seed(entry["overrides"], {})
        row_seeds = {row.get("seed") for row in entry["rows"].values()} - {None}
        if seed is None and len(row_seeds) == 1:
            seed = next(iter(row_seeds))
        runs.append(Run(entry["name"], entry["baseline"], entry["commit"], entry["overrides"], entry["rows"],
                        seed=seed, recorded_command=entry["command"]))
    return runs


def seed_spread(runs: list[Run]) -> list[dict[str, Any]]:
    """Per group of runs equal but for their seeds (SEED_KEYS; one run per seed), mean ± std of each variant.

    Runs of different environments (reproducible vs earlier, unpinned) are never grouped together,
    nor runs that reseeded different things (train.seed vs the order task's seeds); a run that changed
    no seed (the committed one, with its own seed) joins every group it matches otherwise.
    """
    def setting_key(run: Run) -> str:
        rest = {key: value for key, value in run.overrides.items() if key not in SEED_KEYS}
        return json.dumps({"overrides": rest, "environment": run.environment}, sort_keys=True)

    def reseeded(run: Run) -> tuple[str, ...]:
        return tuple(key for key in SEED_KEYS if key in run.overrides)

    groups: dict[tuple[str, tuple[str, ...]], dict[int, Run]] = {}
    for run in runs:
        if reseeded(run):
            groups.setdefault((setting_key(run), reseeded(run)), {}).setdefault(run.seed, run)  # the first run of a seed counts
    for run in runs:
        if not reseeded(run):
            matching = [group for (setting, _keys), group in groups.items() if setting == setting_key(run)]
            for group in matching or [groups.setdefault((setting_key(run), ()), {})]:
                group.setdefault(run.seed, run)
    spread = []
    for (key, _reseeded), by_seed in groups.items():
        if len(by_seed) < 2:
            continue
        group_setting = json.loads(key)
        members = sorted(by_seed.values(), key=runs.index)  # in the order the runs were given
        shared = set.intersection(*(set(run.metrics) for run in members))
        for variant in sorted(shared):
            accuracies = [run.metrics[variant]["accuracy"] for run in members]
            spread.append({
                "overrides": group_setting["overrides"],
                "environment": group_setting["environment"],
                "variant": variant,
                "runs": [run.name for run in members],
                "seeds": [run.seed for run in members],
                "accuracies": accuracies,
                "mean": statistics.fmean(accuracies),
                "std": statistics.stdev(accuracies),
            })
    return spread


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


@dataclass(frozen=True)
class PresetEntry:
    """A committed experiment definition, as the report lists it."""

    name: str
    experiment: str
    description: str

    @property
    def command(self) -> str:
        return f"python -m stages.preset {self.name}"


def preset_entries(repo: Path) -> list[PresetEntry]:
    directory = repo / presets.PRESETS_DIR
    return [PresetEntry(name, entry.experiment, entry.description)
            for name in presets.available(directory) for entry in [presets.load_preset(name, directory)]]


def preset_lines(entries: list[PresetEntry]) -> list[str]:
    if not entries:
        return []
    lines = ["", "## Presets", "", "Named, committed experiment definitions (`presets/<name>.yaml`); the command prints and runs",
             "the equivalent `dvc exp run` (`--queue` queues it, `--name` and `-S` vary it, `--dry-run` only prints).", ""]
    lines += [f"- `{entry.command}`: {entry.description} (experiment `{entry.experiment}`)" for entry in entries]
    return lines


def render(runs: list[Run], spread: list[dict[str, Any]], entries: list[PresetEntry] | None = None) -> str:
    lines = [
        "# Studies (DVC experiments)",
        "",
        "Generated by `python -m stages.studies` from this repository's experiment refs (do not edit by",
        "hand). Each row is a metrics file an experiment's run changed; the command below the table",
        "reproduces the experiment on top of its baseline commit. `(committed)` is the checked-out",
        "pipeline run.",
        "",
        "| experiment | variant | test accuracy | F1 | ROC-AUC | best valid acc. | best epoch | parameters | seed | environment |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for variant, m in sorted(run.metrics.items(), key=lambda item: (item[1].get("study", "imdb") != "imdb", -(item[1].get("accuracy") or 0))):
            diverged = " (diverged)" if m.get("diverged") else ""
            lines.append(
                f"| `{run.name}` | `{variant}`{diverged} | {percent(m.get('accuracy'))} | {m.get('f1', 0):.4f} | "
                f"{m.get('roc_auc', 0):.4f} | {percent(m.get('best_valid_accuracy'))} | {m.get('best_epoch', '–')} / "
                f"{m.get('epochs_trained', '–')} | {m.get('parameters', 0):,} | {m.get('seed')} | {run.environment} |"
            )
    lines += ["", "## Commands", ""]
    by_experiment = {entry.experiment: entry for entry in entries or []}
    lines += [
        f"- `{run.name}` (experiment {run.commit[:7]}, baseline {run.baseline[:7]}): `{run.command}`"
        + (f" — preset: `{by_experiment[run.name].command}`" if run.name in by_experiment else "")
        for run in runs if run.name != HEAD_NAME
    ]
    if spread:
        lines += ["", "## Seed spread (test accuracy)", "",
                  "| runs | changed params besides the seeds | environment | variant | seeds | mean ± std | min – max |",
                  "|---|---|---|---|---|---|---|"]
        for row in spread:
            changed = ", ".join(f"`{setting(k, v)}`" for k, v in row["overrides"].items()) or "(none)"
            lines.append(
                f"| {', '.join(f'`{name}`' for name in row['runs'])} | {changed} | {row['environment']} | `{row['variant']}` | "
                f"{', '.join(map(str, row['seeds']))} | {100 * row['mean']:.2f} ± {100 * row['std']:.2f} % | "
                f"{percent(min(row['accuracies']))} – {percent(max(row['accuracies']))} |"
            )
    lines += preset_lines(entries or [])
    return "\n".join(lines) + "\n"


def to_json(runs: list[Run], spread: list[dict[str, Any]], entries: list[PresetEntry] | None = None) -> dict[str, Any]:
    return {
        "experiments": [
            {"name": run.name, "commit": run.commit, "baseline": run.baseline, "overrides": run.overrides,
             "command": run.command if run.name != HEAD_NAME else "dvc repro", "environment": run.environment,
             "rows": {variant: {key: m.get(key) for key in ROW_KEYS} for variant, m in run.metrics.items()}}
            for run in runs
        ],
        "seed_spread": spread,
        "presets": [{"name": entry.name, "experiment": entry.experiment, "description": entry.description,
                     "command": entry.command} for entry in entries or []],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="experiment names (default: all)")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("reports/studies.md"), help="markdown; the JSON goes beside it")
    args = parser.parse_args(argv)
    runs = collect(args.repo, args.names or None)
    if not args.names:  # a full regeneration keeps what earlier runs recorded but this repository lacks
        runs += recorded_runs(args.out.with_suffix(".json"), {run.name for run in runs})
    spread = seed_spread(runs)
    entries = preset_entries(args.repo)
    write_json(args.out.with_suffix(".json"), to_json(runs, spread, entries))
    write_text(args.out, render(runs, spread, entries))
    kept = sum(run.recorded_command is not None for run in runs)
    print(f"studies: {len(runs) - 1} experiments ({kept} kept as recorded), {len(spread)} seed-spread rows -> {args.out}")


if __name__ == "__main__":
    run_cli(main)
