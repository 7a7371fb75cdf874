"""Seed bands: each variant's test accuracies over seeds -> reports/seed_bands.json, which `tools.review` reads to
tell a real change from seed noise; and which runs are seeds of one config (config_key), for the bands and the
review alike. Not a DVC output: it summarises experiments (`python -m tools.sweep --seeds 0-9` runs them)."""

from __future__ import annotations

import functools
import json
import statistics
from pathlib import Path
from typing import Any

from rnnlab.comparison.revision import Revision, stale_params
from rnnlab.config.params import PARAMS_FILE, parse_params, parse_params_yaml
from rnnlab.core.errors import UserError
from rnnlab.core.files import PIPELINE_FILE, load_yaml, workspace_paths, write_json
from rnnlab.core.git import experiment_refs, git
from rnnlab.experiments import collect as experiments


def collect_bands(repo: Path, seeds: list[int] | None = None, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """{commit, seeds, variants: {variant: {key, seeds, runs, accuracies, mean, std}}} of the checked-out commit: its
    own run, the runs `recorded` for a commit with the same results (their refs may be gone), and each experiment
    here of such a commit that changed train.seed alone, per variant it retrained; one run per seed. `key`
    (config_key): the review uses a band only for a base with that key."""
    head = git("rev-parse", "HEAD", cwd=repo).strip()
    head_metrics = experiments.metrics_at(repo, head)
    # A commit with the same metrics (e.g. a docs-only commit before this one): its seed experiments count too.
    counts = functools.cache(lambda commit: experiments.metrics_at(repo, commit) == head_metrics)
    found: dict[str, dict[Any, tuple[str, float]]] = {}
    if recorded and counts(str(recorded.get("commit"))):
        for variant, entry in (recorded.get("variants") or {}).items():
            for seed, name, accuracy in zip(entry["seeds"], entry["runs"], entry["accuracies"], strict=True):
                if seeds is None or seed in seeds:
                    found.setdefault(variant, {})[seed] = (name, accuracy)
    for run in experiments.collect(repo):
        if counts(run.baseline) and set(run.overrides) <= {experiments.SEED_KEY}:
            for variant, metrics in run.metrics.items():
                if metrics.get("seed") == run.seed and (seeds is None or run.seed in seeds):
                    found.setdefault(variant, {}).setdefault(run.seed, (run.name, metrics["accuracy"]))
    checked_out = Revision(repo, "HEAD", head)
    variants: dict[str, dict[str, Any]] = {}
    for variant, by_seed in sorted(found.items()):
        if len(by_seed) < 2 or (key := config_key(checked_out, variant)) is None:
            continue
        ordered = sorted(by_seed.items(), key=lambda item: str(item[0]).zfill(6))
        accuracies = [accuracy for _, (_, accuracy) in ordered]
        variants[variant] = {
            "key": key,
            "seeds": [seed for seed, _ in ordered],
            "runs": [name for _, (name, _) in ordered],
            "accuracies": accuracies,
            "mean": statistics.fmean(accuracies),
            "std": statistics.stdev(accuracies),
        }
    if not variants:
        raise UserError(
            f"no variant has two or more seeds for commit {head[:7]}: run the other seeds with `python -m tools.sweep --seeds 0-9`."
        )
    every_seed = sorted({seed for entry in variants.values() for seed in entry["seeds"]}, key=str)
    return {"commit": head, "made_by": "python -m tools.seed_bands", "seeds": every_seed, "variants": variants}


def record_bands(repo: Path, seeds: list[int] | None = None, out: Path | None = None) -> None:
    """Write the checked-out commit's bands (of `seeds` only, if given) to `out`, keeping the runs it recorded."""
    if seeds is not None and len(set(seeds)) < 2:
        raise UserError("a seed band needs two or more different seeds; pass e.g. `--seeds 0 1 2`.")
    out = out or repo / workspace_paths(repo / PIPELINE_FILE).get("seed_bands", "reports/seed_bands.json")
    try:
        recorded = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else None
    except json.JSONDecodeError as error:
        raise UserError(f"{out} is not a seed bands file ({error}); restore it with `git checkout {out}`.") from error
    bands = collect_bands(repo, seeds, recorded)
    write_json(out, bands)
    summary = ", ".join(
        f"{v} {len(b['runs'])} runs, {100 * b['mean']:.2f} ± {100 * b['std']:.2f} %" for v, b in bands["variants"].items()
    )
    print(f"seed_bands: {bands['commit'][:7]}: {summary} -> {out}")


def variant_params(revision: Revision, variant: str, paths: dict[str, str]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(the revision's params.yaml, the variant's model, train and runtime after its overrides, its details), with
    `paths` the revision's layout; no config when its params.yaml has no such variant or does not check."""
    try:
        raw = parse_params_yaml(revision.read_text(str(PARAMS_FILE)) or "{}")
        params = parse_params(raw)
        found = params.find_variant(variant)[1]
        config = {"model": found.model.to_dict(), "train": found.train.to_dict(), "runtime": params.runtime.to_dict()}
    except UserError:
        raw, config = {}, {}
    details = revision.read_json(f"{paths['details']}/{variant}.json") if "details" in paths else None
    return raw, config, details or {}


def config_key(revision: Revision, variant: str, paths: dict[str, str] | None = None) -> str | None:
    """What fixes a variant's result but its seed: the md5 of each input of the variant's stages in dvc.lock, its
    params less train.seed, and the math it ran with. None when its results are not that run's: a run of other
    variants' stages leaves this one's lock entry (and results) from params it no longer has."""
    raw, params, details = variant_params(revision, variant, paths or revision.paths)
    if not params or params["train"].pop("seed") != details.get("seed"):
        return None
    lock = load_yaml(revision.read_text("dvc.lock") or "{}", f"dvc.lock at {revision.title}") or {}
    stages = {name: stage for name, stage in (lock.get("stages") or {}).items() if name.endswith(f"@{variant}")}
    if any(stale_params(stage, raw) for stage in stages.values()):
        return None
    made = {out["path"] for stage in stages.values() for out in stage.get("outs") or []}  # the model: it differs per seed
    inputs = {
        f"{name}:{dep['path']}": dep.get("md5")
        for name, stage in stages.items()
        for dep in stage.get("deps") or []
        if dep["path"] not in made
    }
    return json.dumps([inputs, params, (details.get("environment") or {}).get("math")], sort_keys=True)


def seed_runs(head: Revision, variant: str, accuracy: float, exclude: set[str]) -> list[tuple[str, float]]:
    """The head's run of `variant` (its `accuracy`), then one experiment here per other seed that ran it with the
    same inputs (a sweep's), but those named in `exclude` (the base's band)."""
    _, params, details = variant_params(head, variant, head.paths)
    runs, seeds, key = [(head.label, accuracy)], {details.get("seed")}, config_key(head, variant)
    for name, _baseline, commit in sorted(experiment_refs(head.repo)) if key is not None else []:
        if commit == head.commit or name in exclude:
            continue
        other = Revision(head.repo, name, commit)
        _, other_params, found = variant_params(other, variant, head.paths)
        if found.get("seed") in seeds or other_params.get("model") != params.get("model"):
            continue  # a cheap first look: most experiments change the model
        if config_key(other, variant, head.paths) == key:
            runs.append((name, float(found["accuracy"])))
            seeds.add(found.get("seed"))
    return runs
