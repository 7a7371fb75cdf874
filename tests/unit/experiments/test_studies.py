"""rnnlab.experiments (tools.studies) on a real git repository with DVC-style experiment refs (no DVC run needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from rnnlab.config.params import lookup
from rnnlab.core.errors import UserError
from rnnlab.experiments import collect as studies
from tools import studies as studies_tool

PARAMS = {"model": {"cell": "rnn", "readout": "last"}, "train": {"seed": 0, "lr": 0.001},
          "variants": {"relu": {"model": {"activation": "relu"}}, "tanh": {"model": {"activation": "tanh"}}}}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def variant_keys(params: dict, variant: str) -> list[str]:
    """The params.yaml keys dvc.yaml lists for a variant's train stage."""
    prefix = "" if variant in params["variants"] else "order."
    return [f"{prefix}model", f"{prefix}train", f"{prefix}variants.{variant}", "runtime"]


def commit(repo: Path, params: dict, metrics: dict[str, float], message: str) -> str:
    """A commit of the pipeline's results: declared metrics plus details."""
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    # What the review's config key reads: dvc.yaml's vars, params.yaml, and each variant's stages in dvc.lock.
    layout = {"metrics": "metrics", "details": "metrics/details", "predictions": "plots/predictions", "live": "plots/history"}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"vars": [layout], "stages": {"code": {"cmd": "true"}, "params": {"cmd": "true"}}}))
    lock = {f"train@{variant}": {
        "deps": [{"path": "data/code/train.json", "md5": "c0de"}],
        "params": {"params.yaml": {key: lookup(params, key) for key in variant_keys(params, variant)}},
        "outs": [{"path": f"models/{variant}.pt", "md5": f"{params['train']['seed']}{accuracy}"}]} for variant, accuracy in metrics.items()}
    lock |= {f"evaluate@{variant}": {"deps": [{"path": f"models/{variant}.pt", "md5": f"{params['train']['seed']}{accuracy}"}]}
             for variant, accuracy in metrics.items()}
    if (repo / "dvc.lock").is_file():  # the variants this run did not retrain keep their entries
        lock = {**yaml.safe_load((repo / "dvc.lock").read_text())["stages"], **lock}
    (repo / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": lock}))
    (repo / "metrics" / "details").mkdir(parents=True, exist_ok=True)
    for variant, accuracy in metrics.items():
        payload = {"variant": variant, "accuracy": accuracy, "seed": params["train"]["seed"], "f1": accuracy}
        (repo / "metrics" / f"{variant}.json").write_text(json.dumps({"accuracy": accuracy, "f1": accuracy}))
        (repo / "metrics" / "details" / f"{variant}.json").write_text(json.dumps(payload))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def experiment(repo: Path, baseline: str, name: str, params: dict, metrics: dict[str, float]) -> str:
    """A commit on top of `baseline` stored under refs/exps like `dvc exp run` does, HEAD left alone."""
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", baseline)
    sha = commit(repo, params, metrics, name)
    git(repo, "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}", sha)
    git(repo, "checkout", "-q", head)
    return sha


@pytest.fixture()
def repo(tmp_path: Path) -> tuple[Path, str]:
    git(tmp_path, "init", "-q")
    baseline = commit(tmp_path, PARAMS, {"relu": 0.70, "tanh": 0.60}, "baseline")
    git(tmp_path, "update-ref", "refs/exps/exec/EXEC_HEAD", baseline)  # DVC bookkeeping: not an experiment
    return tmp_path, baseline


def with_changes(**changes: dict) -> dict:
    params = json.loads(json.dumps(PARAMS))
    for section, values in changes.items():
        params.setdefault(section, {}).update(values)
    return params


def test_diff_command_and_changed_rows(repo: tuple[Path, str]) -> None:
    path, baseline = repo
    experiment(path, baseline, "readout-mean", with_changes(model={"readout": "mean"}), {"relu": 0.75, "tanh": 0.60})
    params = with_changes(variants={"strong": {"model": {"cell": "gru"}, "train": {"lr": 0.002}}})
    experiment(path, baseline, "strong", params, {"relu": 0.70, "tanh": 0.60, "strong": 0.88})
    runs = {run.name: run for run in studies.collect(path)}
    assert set(runs) == {studies.HEAD_NAME, "readout-mean", "strong"}
    assert runs["readout-mean"].overrides == {"model.readout": "mean"}
    assert set(runs["readout-mean"].metrics) == {"relu"}  # tanh's metrics did not change
    assert runs["readout-mean"].command == "dvc exp run -n readout-mean -S model.readout=mean evaluate@relu"
    assert runs["strong"].overrides == {"+variants.strong": {"model": {"cell": "gru"}, "train": {"lr": 0.002}}}
    assert runs["strong"].command.endswith("-S '+variants.strong={model: {cell: gru}, train: {lr: 0.002}}' evaluate@strong")


def test_a_run_that_changed_every_variant_needs_no_target(repo: tuple[Path, str]) -> None:
    path, baseline = repo
    experiment(path, baseline, "cell-gru", with_changes(model={"cell": "gru"}), {"relu": 0.8, "tanh": 0.81})
    (run,) = studies.collect(path, ["cell-gru"])[1:]
    assert run.command == "dvc exp run -n cell-gru -S model.cell=gru"


def test_seed_spread_groups_runs_that_differ_only_in_seed(repo: tuple[Path, str]) -> None:
    path, baseline = repo
    experiment(path, baseline, "seed1", with_changes(train={"seed": 1}), {"relu": 0.66, "tanh": 0.62})
    experiment(path, baseline, "seed2", with_changes(train={"seed": 2}), {"relu": 0.68, "tanh": 0.64})
    experiment(path, baseline, "mean", with_changes(model={"readout": "mean"}), {"relu": 0.9, "tanh": 0.9})
    spread = {row["variant"]: row for row in studies.seed_spread(studies.collect(path))}
    assert set(spread) == {"relu", "tanh"}  # the `mean` run has no second seed: no row
    assert spread["relu"]["seeds"] == [0, 1, 2]
    assert spread["relu"]["mean"] == pytest.approx(0.68)
    assert spread["relu"]["std"] == pytest.approx(0.02)
    assert spread["relu"]["overrides"] == {}


def test_main_writes_markdown_and_json(repo: tuple[Path, str], tmp_path: Path) -> None:
    path, baseline = repo
    experiment(path, baseline, "seed1", with_changes(train={"seed": 1}), {"relu": 0.66, "tanh": 0.62})
    out = tmp_path / "out" / "studies.md"
    studies_tool.main(["--repo", str(path), "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    assert [e["name"] for e in data["experiments"]] == [studies.HEAD_NAME, "seed1"]
    assert "| `seed1` | `relu` | 66.00 % |" in out.read_text()


def test_unknown_experiment_name_is_a_clear_error(repo: tuple[Path, str]) -> None:
    path, baseline = repo
    experiment(path, baseline, "seed1", with_changes(train={"seed": 1}), {"relu": 0.66, "tanh": 0.62})
    with pytest.raises(UserError, match="No experiment named seed9.*Known: seed1"):
        studies.collect(path, ["seed9"])


def test_outside_a_git_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="Run this from the RNN Lab repository"):
        studies.collect(tmp_path)


def test_recorded_experiments_without_refs_are_kept_and_never_mixed_into_a_new_seed_spread(
    repo: tuple[Path, str], tmp_path: Path,
) -> None:
    # An earlier report, made where its experiment refs lived; this repository has none of them.
    path, baseline = repo
    experiment(path, baseline, "seed2", with_changes(train={"seed": 2}), {"relu": 0.66, "tanh": 0.62})
    out = tmp_path / "out" / "studies.md"  # written after the experiment commit: `git add -A` would take it
    out.parent.mkdir()
    earlier_rows = {"relu": {"accuracy": 0.5, "seed": 1, "train_seconds_per_epoch": 22.0}}
    out.with_suffix(".json").write_text(json.dumps({"experiments": [
        {"name": "(committed)", "commit": "c" * 40, "baseline": "c" * 40, "overrides": {}, "command": "dvc repro", "rows": {}},
        {"name": "old-seed1", "commit": "a" * 40, "baseline": "b" * 40, "overrides": {"train.seed": 1},
         "command": "dvc exp run -n old-seed1 -S train.seed=1", "rows": earlier_rows},
    ], "seed_spread": []}))
    studies_tool.main(["--repo", str(path), "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    by_name = {entry["name"]: entry for entry in data["experiments"]}
    assert set(by_name) == {studies.HEAD_NAME, "seed2", "old-seed1"}
    assert by_name["old-seed1"]["command"] == "dvc exp run -n old-seed1 -S train.seed=1"
    assert by_name["old-seed1"]["environment"] == "earlier, unpinned"
    text = out.read_text()
    assert "| `old-seed1` | `relu` | 50.00 % |" in text and "earlier, unpinned |" in text
    # All three are unpinned here (this test repository's metrics carry no environment record), so
    # the recorded seed-1 run joins the spread of seeds 0 and 2.
    spread = {(row["variant"], tuple(row["seeds"]), row["environment"]) for row in data["seed_spread"]}
    assert ("relu", (0, 2, 1), "earlier, unpinned") in spread


KERNELS = {"reproducible": True, "math": "rnnlab-gemm 1 (AVX2+FMA, fused recurrent layers)"}
MKL_ERA = {"reproducible": True}  # the reproducible mode before rnnlab's kernels stamped no `math`


def test_seed_spread_never_mixes_runs_of_different_math() -> None:
    def run(name: str, seed: int, accuracy: float, environment: dict | None) -> studies.Run:
        metrics = {"relu": {"accuracy": accuracy, "environment": environment}}
        overrides = {"train.seed": seed} if seed else {}
        return studies.Run(name, "b", "c", overrides, metrics, seed=seed)

    runs = [run("now", 0, 0.70, KERNELS), run("now-s1", 1, 0.72, KERNELS), run("mkl-s1", 1, 0.65, MKL_ERA),
            run("mkl-s2", 2, 0.66, MKL_ERA), run("old-s1", 1, 0.60, None), run("old-s2", 2, 0.62, None)]
    spread = {row["environment"]: row["seeds"] for row in studies.seed_spread(runs)}
    assert spread == {"reproducible, rnnlab-gemm 1": [0, 1], "reproducible, MKL": [1, 2], "earlier, unpinned": [1, 2]}


def test_a_run_is_reproducible_only_when_every_row_says_so() -> None:
    baseline = {"environment": {"reproducible": True, "math": "numpy/scipy OpenBLAS (Haswell kernels, 1 thread)"}}
    assert studies.Run("a", "b", "c", {}, {"relu": {"environment": KERNELS}, "linear_tfidf": baseline}).environment == \
        "reproducible, rnnlab-gemm 1"  # the baseline's numpy says nothing about the kernels
    assert studies.Run("a", "b", "c", {}, {"relu": {"environment": MKL_ERA}}).environment == "reproducible, MKL"
    assert studies.Run("a", "b", "c", {}, {"relu": {"environment": KERNELS}, "tanh": {}}).environment == "earlier, unpinned"


def test_presets_are_listed_and_their_experiment_points_at_them(repo: tuple[Path, str], tmp_path: Path) -> None:
    path, baseline = repo
    params = with_changes(variants={"strong": {"model": {"cell": "gru"}, "train": {"lr": 0.002}}})
    experiment(path, baseline, "strong-gru", params, {"relu": 0.70, "tanh": 0.60, "strong": 0.88})
    (path / "presets").mkdir()
    (path / "presets" / "strong.yaml").write_text(
        "experiment: strong-gru\ndescription: a GRU\nparams: {variants: {strong: {model: {cell: gru}}}}\ntargets: [evaluate@strong]\n")
    out = tmp_path / "out" / "studies.md"
    studies_tool.main(["--repo", str(path), "--out", str(out)])
    text = out.read_text()
    assert "## Presets" in text and "- `python -m tools.preset strong`: a GRU (experiment `strong-gru`)" in text
    command_line = next(line for line in text.splitlines() if line.startswith("- `strong-gru` (experiment"))
    assert command_line.endswith("— preset: `python -m tools.preset strong`")
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["presets"] == [{"name": "strong", "experiment": "strong-gru", "description": "a GRU",
                                "command": "python -m tools.preset strong"}]


def order_task(seed: int) -> dict:
    return {"train": {"seed": seed}, "data": {"seed": seed}, "variants": {"order_lstm": {"model": {"cell": "lstm"}}}}


def test_order_task_seeds_group_like_train_seeds(repo: tuple[Path, str]) -> None:
    path, _ = repo
    baseline = commit(path, with_changes(order=order_task(0)),
                      {"relu": 0.70, "tanh": 0.60, "order_lstm": 0.70}, "with the order study")
    for seed, accuracy in ((1, 0.66), (2, 0.68)):
        params = with_changes(order=order_task(seed))
        experiment(path, baseline, f"order-s{seed}", params, {"relu": 0.70, "tanh": 0.60, "order_lstm": accuracy})
    spread = studies.seed_spread(studies.collect(path))
    assert [(row["variant"], row["seeds"]) for row in spread] == [("order_lstm", [0, 1, 2])]


def test_imdb_and_order_seed_runs_form_separate_groups_with_the_committed_run(repo: tuple[Path, str]) -> None:
    path, _ = repo
    baseline = commit(path, with_changes(order=order_task(0)),
                      {"relu": 0.70, "tanh": 0.60, "order_lstm": 0.70}, "with the order study")
    experiment(path, baseline, "imdb-s1", with_changes(train={"seed": 1}, order=order_task(0)),
               {"relu": 0.72, "tanh": 0.62, "order_lstm": 0.70})
    experiment(path, baseline, "order-s1", with_changes(order=order_task(1)),
               {"relu": 0.70, "tanh": 0.60, "order_lstm": 0.90})
    spread = {row["variant"]: sorted(row["runs"]) for row in studies.seed_spread(studies.collect(path))}
    committed = studies.HEAD_NAME
    assert spread == {"relu": sorted([committed, "imdb-s1"]), "tanh": sorted([committed, "imdb-s1"]),
                      "order_lstm": sorted([committed, "order-s1"])}
