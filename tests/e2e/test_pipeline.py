"""End-to-end: the README's dvc commands, run for real in a temporary git repo.

One repo is built per module (the pipeline spawns ~17 python processes per `dvc repro`), and the
commands run in the order a user would: the temporal-order branch alone (no download: the run anyone
can do offline), repro, repro again, push to a DVC remote and pull into a fresh clone, download from
the other archive form, a forced rerun for determinism, an experiment that changes the cell, then
metrics diff and plots.
Each step is a module fixture that depends on the previous one, so the order holds whichever
test is selected.

The data is a synthetic archive in the official layout (bench/archive.py), read through
IMDB_ARCHIVE; the model is tiny and trains for one epoch.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.dvc_repo import copy_pipeline
from rnnlab.config.params import load_params
from bench.archive import make_archive

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RUNNING_STAGE = re.compile(r"Running stage '([^']+)'")
TIMING_KEYS = {"train_seconds_per_epoch", "train_tokens_per_second", "eval_tokens_per_second"}
RESULT_ENVIRONMENT_KEYS = {"reproducible", "math", "cpu_capability", "torch", "libc", "device"}
# The code fingerprints and the params check come first, then the data stages.
CHECK_STAGES = {"code", "params"}
UPSTREAM_STAGES = {"download", "preprocess", "xy", "order_data"}
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "data": {"min_freq": 1, "vocab_size": 200, "fix_length": 30},
    "model": {"embedding_dim": 8, "hidden_size": 8, "head_size": 8},
    "train": {"epochs": 1, "batch_size": 20, "lr": 0.01, "device": "cpu"},
}
TINY_ORDER_PARAMS: dict[str, dict[str, Any]] = {
    "data": {"train_size": 200, "valid_size": 40, "test_size": 40},
    "train": {"epochs": 1, "device": "cpu"},
}
# Two variants per task cover every stage kind (and keras init, on order_gru_fix) at half the processes.
KEPT_VARIANTS = {"variants": ("relu", "tanh"), "order": ("order_lstm", "order_gru_fix")}
COMMAND_TIMEOUT = 900  # a hang guard: minutes on a loaded 2-core CPU
REVIEWS_PER_FOLDER = 60  # 240 reviews: 96 train, 24 valid, 120 test
IMDB_OUTPUTS = ("data/reviews.jsonl", "data/prepared", "data/vocab.tsv", "data/xy", "models/relu.pt", "metrics/relu.json")
# What DVC caches, and so pushes (dvc.yaml outs without `cache: false`), for the kept variants.
CACHED_OUTPUTS = ("data/reviews.jsonl", "data/prepared", "data/vocab.tsv", "data/xy", "data/order", "models/relu.pt",
                  "models/tanh.pt", "models/order_lstm.pt", "models/order_gru_fix.pt")
FORCED_TARGETS = ("evaluate@relu", "order_evaluate@order_lstm")
FORCED_STAGES = CHECK_STAGES | UPSTREAM_STAGES | {"train@relu", "evaluate@relu", "order_train@order_lstm", "order_evaluate@order_lstm"}


@dataclass(frozen=True)
class Result:
    output: str  # stdout and stderr together, as a user would see them

    def stages_run(self) -> set[str]:
        return set(RUNNING_STAGE.findall(self.output))


class PipelineRepo:
    def __init__(self, path: Path, archive: Path) -> None:
        self.path = path
        self.env = dict(os.environ)
        self.env.pop("PYTHONPATH", None)  # the stages must come from the copy, not this checkout
        # No thread override: torch's own count (one per core) is what the forced rerun is compared with.
        self.env.pop("RNNLAB_THREADS", None)
        self.cores: set[int] | None = None  # restrict every command to these cores (None: all)
        self.env.update(
            # `python` in dvc.yaml's cmds must be this interpreter (the one with torch and dvc).
            PATH=os.pathsep.join([str(Path(sys.executable).parent), self.env.get("PATH", "")]),
            IMDB_ARCHIVE=str(archive),
            DVC_NO_ANALYTICS="1",
            GIT_AUTHOR_NAME="rnn-lab test", GIT_AUTHOR_EMAIL="test@example.invalid",
            GIT_COMMITTER_NAME="rnn-lab test", GIT_COMMITTER_EMAIL="test@example.invalid",
        )

    def run(self, *args: str, check: bool = True) -> Result:
        cores = self.cores
        completed = subprocess.run(
            list(args), cwd=self.path, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=COMMAND_TIMEOUT, preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
        )
        assert completed.returncode == 0 or not check, f"{' '.join(args)} failed ({completed.returncode}):\n{completed.stdout}"
        return Result(completed.stdout)

    def dvc(self, *args: str, check: bool = True) -> Result:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def git(self, *args: str) -> Result:
        return self.run("git", *args)

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def metrics(self, folder: str = "metrics/details") -> dict[str, dict[str, Any]]:
        """variant -> every value its stage wrote; folder="metrics": only its declared metrics."""
        return {path.stem: json.loads(path.read_text()) for path in sorted((self.path / folder).glob("*.json"))}

    def stage_names(self) -> set[str]:
        listed = self.dvc("stage", "list", "--name-only").output.split()
        return {name for name in listed if name}


def patch_params(params_file: Path) -> None:
    raw = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    for section, values in TINY_PARAMS.items():
        raw[section].update(values)
    for section, values in TINY_ORDER_PARAMS.items():
        raw["order"][section].update(values)
    raw["variants"] = {name: raw["variants"][name] for name in KEPT_VARIANTS["variants"]}
    raw["order"]["variants"] = {name: raw["order"]["variants"][name] for name in KEPT_VARIANTS["order"]}
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def stages_reading_metrics() -> set[str]:
    """Stages downstream of the metrics files (e.g. a report); they may rerun with evaluate."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name for name, stage in stages.items() if "foreach" not in stage and any("metrics" in str(dep) for dep in stage.get("deps", []))}


def output_hashes(lock: dict[str, Any]) -> dict[str, str]:
    """Output path -> md5 over every stage in a parsed dvc.lock."""
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def variants_of(repo: PipelineRepo) -> dict[str, set[str]]:
    params = load_params(repo.path / "params.yaml")
    return {study: set(params.task(study).variants) for study in ("imdb", "order")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> PipelineRepo:
    base = tmp_path_factory.mktemp("e2e")
    archive = make_archive(base / "archive" / "aclImdb_v1.tar.gz", per_folder=REVIEWS_PER_FOLDER, official_extras=True)
    path = base / "repo"
    path.mkdir()
    copy_pipeline(path)
    patch_params(path / "params.yaml")
    pipeline = PipelineRepo(path, archive)
    pipeline.git("init", "-q")
    pipeline.dvc("init", "-q")
    pipeline.dvc("config", "core.analytics", "false")
    pipeline.commit("pipeline under test")
    return pipeline


@pytest.fixture(scope="module")
def order_branch(repo: PipelineRepo) -> tuple[Result, list[str]]:
    """`dvc repro order_evaluate` (a foreach group: every order_evaluate@<variant> and what it needs), and
    which IMDB outputs exist after it."""
    result = repo.dvc("repro", "order_evaluate")
    return result, [output for output in IMDB_OUTPUTS if (repo.path / output).exists()]


@pytest.fixture(scope="module")
def first_repro(order_branch: tuple[Result, list[str]], repo: PipelineRepo) -> Result:
    result = repo.dvc("repro")
    repo.commit("first run")
    return result


@pytest.fixture(scope="module")
def second_repro(first_repro: Result, repo: PipelineRepo) -> Result:
    return repo.dvc("repro")


@pytest.fixture(scope="module")
def pulled_clone(second_repro: Result, repo: PipelineRepo) -> tuple[Path, Result, Result]:
    """`dvc push` to a local remote (committed, as a team shares it), a fresh `git clone`, and `dvc repro --pull`
    there with no archive at hand: a recomputed download would fail, so every output must come from the remote."""
    repo.dvc("remote", "add", "-d", "shared", str(repo.path.parent / "remote"))
    repo.commit("shared remote")
    repo.dvc("push")
    clone = repo.path.parent / "clone"
    repo.git("clone", "-q", str(repo.path), str(clone))
    archive = repo.env["IMDB_ARCHIVE"]
    repo.env["IMDB_ARCHIVE"] = str(repo.path.parent / "no-such-archive.tar.gz")
    original, repo.path = repo.path, clone
    try:
        pulled = repo.dvc("repro", "--pull")
        status = repo.dvc("status")
    finally:
        repo.path, repo.env["IMDB_ARCHIVE"] = original, archive
    return clone, pulled, status


@pytest.fixture(scope="module")
def labeled_only_download(pulled_clone: tuple, repo: PipelineRepo) -> tuple[Result, Result]:
    """Rerun download from the labeled-only archive (same reviews, no extras), then repro.

    Runs while everything is up to date, before any rerun touches the metrics files."""
    labeled = make_archive(repo.path.parent / "archive" / "labeled.tar.gz", per_folder=REVIEWS_PER_FOLDER)
    repo.env["IMDB_ARCHIVE"] = str(labeled)
    download = repo.dvc("repro", "-f", "-s", "download")
    return download, repo.dvc("repro")


def tracked_outputs(repo: PipelineRepo) -> dict[str, bytes]:
    """Every file under the pipeline's output folders, by path."""
    folders = ("data", "models", "metrics", "plots", "reports")
    return {str(path.relative_to(repo.path)): path.read_bytes() for folder in folders
            for path in sorted((repo.path / folder).rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def typo_then_fix(labeled_only_download: tuple, repo: PipelineRepo) -> tuple[dict, dict, Result, Result]:
    """`dvc exp run -S train.lr=abc`'s params file, then the typo fixed: the outputs before, after, both runs."""
    before = tracked_outputs(repo)
    params = repo.path / "params.yaml"
    good = params.read_text(encoding="utf-8")
    params.write_text(good.replace("lr: 0.01", "lr: abc", 1), encoding="utf-8")
    failed = repo.dvc("repro", check=False)
    params.write_text(good, encoding="utf-8")
    fixed = repo.dvc("repro")
    return before, tracked_outputs(repo), failed, fixed


@pytest.fixture(scope="module")
def forced_rerun(typo_then_fix: tuple, repo: PipelineRepo) -> tuple[dict, dict, Result]:
    before = repo.metrics()
    # Forcing one variant per study also forces everything upstream of it (download ... xy,
    # order_data): every stage kind reruns, at half the cost of forcing all variants. On one core and
    # one thread, where the first run had all cores: in reproducible mode not a bit may change.
    repo.cores = {sorted(os.sched_getaffinity(0))[0]}
    repo.env["RNNLAB_THREADS"] = "1"  # and one thread, where the first run had one per core
    try:
        result = repo.dvc("repro", "-f", *FORCED_TARGETS)
    finally:
        repo.cores = None
        repo.env.pop("RNNLAB_THREADS")
    return before, repo.metrics(), result


@pytest.fixture(scope="module")
def lstm_experiment(forced_rerun: tuple, repo: PipelineRepo) -> Result:
    return repo.dvc("exp", "run", "-S", "model.cell=lstm")


def test_the_order_branch_runs_its_stages_and_nothing_of_imdb(order_branch: tuple[Result, list[str]], repo: PipelineRepo) -> None:
    result, imdb_outputs = order_branch
    variants = variants_of(repo)["order"]
    assert result.stages_run() == CHECK_STAGES | {"order_data"} | {f"order_{kind}@{name}" for kind in ("train", "evaluate") for name in variants}
    assert imdb_outputs == []
    for name in variants:
        assert set(repo.metrics()[name]["per_class_accuracy"]) == {"Q", "R", "S", "U"}
        assert (repo.path / "plots" / "history" / name / "plots" / "metrics" / "valid_accuracy.tsv").is_file()


def test_repro_runs_every_stage_and_writes_comparable_metrics(order_branch: tuple[Result, list[str]], first_repro: Result,
                                                              repo: PipelineRepo) -> None:
    assert order_branch[0].stages_run() | first_repro.stages_run() == repo.stage_names()
    expected = set().union(*variants_of(repo).values())
    metrics = repo.metrics()
    assert expected <= set(metrics)
    key_sets = {name: tuple(sorted(metrics[name])) for name in expected}
    assert len(set(key_sets.values())) == 1, key_sets
    for name in expected:
        assert metrics[name]["variant"] == name
        # Only numbers that reproduce are metrics; speed and the machine sit in the timings files.
        assert not TIMING_KEYS & set(metrics[name]), name
        assert set(metrics[name]["environment"]) == RESULT_ENVIRONMENT_KEYS
        assert metrics[name]["environment"]["reproducible"] is True
        timings = json.loads((repo.path / "reports" / "timings" / f"{name}.json").read_text(encoding="utf-8"))
        assert timings["train_seconds_per_epoch"] > 0 and timings["eval_tokens_per_second"] > 0
        assert timings["machine"]["cpu_model"]
        assert 0.0 <= metrics[name]["accuracy"] <= 1.0 and metrics[name]["epochs_trained"] == 1
    assert metrics["relu"]["cell"] == "rnn" and metrics["order_lstm"]["cell"] == "lstm"
    # Declared metrics: what a reviewer compares, so `dvc metrics show` fits a terminal.
    declared = repo.metrics("metrics")
    for name in expected:
        assert declared[name] == {key: metrics[name][key] for key in ("accuracy", "f1", "roc_auc", "loss", "best_epoch")}
    assert set(declared["linear_tfidf"]) == {"accuracy", "f1", "roc_auc", "loss"}
    assert max(map(len, repo.dvc("metrics", "show").output.splitlines())) <= 100


def test_download_from_archive_env_is_canonical(first_repro: Result, repo: PipelineRepo) -> None:
    assert re.search(r"using IMDB_ARCHIVE=\S*/aclImdb_v1\.tar\.gz", first_repro.output)
    lines = (repo.path / "data" / "reviews.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 * REVIEWS_PER_FOLDER  # the official extras (unsup/, *.feat, ...) are not reviews


def test_second_repro_runs_nothing(second_repro: Result) -> None:
    assert second_repro.stages_run() == set()
    assert "Data and pipelines are up to date" in second_repro.output


def test_a_fresh_clone_pulls_every_output_without_recomputing(pulled_clone: tuple, repo: PipelineRepo) -> None:
    clone, pulled, status = pulled_clone
    assert pulled.stages_run() == set(), pulled.output
    assert "up to date" in status.output
    for output in CACHED_OUTPUTS:
        files = sorted(path.relative_to(repo.path) for path in [repo.path / output, *(repo.path / output).rglob("*")] if path.is_file())
        assert files, output
        for relative in files:
            assert filecmp.cmp(repo.path / relative, clone / relative, shallow=False), relative


def test_labeled_only_archive_keeps_downstream_cached(labeled_only_download: tuple) -> None:
    download, repro = labeled_only_download
    assert download.stages_run() == {"download"}
    # Same canonical reviews file, so preprocess and everything after it stays cached.
    assert repro.stages_run() == set() and "Data and pipelines are up to date" in repro.output


def test_a_typo_in_params_stops_repro_before_any_output_is_removed(typo_then_fix: tuple) -> None:
    before, after, failed, fixed = typo_then_fix
    assert failed.stages_run() == {"params"} and "train.lr must be a number, got 'abc'" in failed.output
    assert after == before  # every checkpoint, history, metrics file and array is still there, byte for byte
    assert fixed.stages_run() == set()  # the fix restores: nothing to retrain


def test_forced_rerun_on_cpu_gives_identical_outputs(forced_rerun: tuple, repo: PipelineRepo) -> None:
    before, after, result = forced_rerun
    assert result.stages_run() == FORCED_STAGES  # really rerun, not restored from the run cache
    # dvc.lock holds the md5 of every output (reviews, arrays, checkpoints, history, metrics,
    # predictions): all byte-identical, although the rerun had one core and one thread.
    committed = output_hashes(yaml.safe_load(repo.git("show", "HEAD:dvc.lock").output))
    current = output_hashes(yaml.safe_load((repo.path / "dvc.lock").read_text(encoding="utf-8")))
    assert {"data/xy", "models/relu.pt", "models/order_lstm.pt", "metrics/relu.json"} <= set(committed)
    assert committed == current
    assert repo.git("diff", "--stat", "dvc.lock").output.strip() == ""
    assert before == after
    # The reviewer's view: nothing changed, so `dvc metrics diff` prints nothing at all.
    assert repo.dvc("metrics", "diff").output.strip() == ""


def test_changing_the_cell_reruns_only_train_and_evaluate(lstm_experiment: Result, repo: PipelineRepo) -> None:
    imdb = variants_of(repo)["imdb"]
    expected = {f"{stage}@{variant}" for stage in ("train", "evaluate") for variant in imdb}
    ran = lstm_experiment.stages_run()
    assert expected | {"params"} <= ran  # the params stage checks the change first, then writes each variant's file
    assert ran - expected - {"params"} <= stages_reading_metrics(), ran - expected
    assert not {name for name in ran if name in UPSTREAM_STAGES or name.startswith("order_")}
    assert all(repo.metrics()[variant]["cell"] == "lstm" for variant in imdb)


def test_metrics_diff_names_every_variant(lstm_experiment: Result, repo: PipelineRepo) -> None:
    variants = variants_of(repo)
    changed = repo.dvc("metrics", "diff").output  # workspace (lstm) against the committed rnn run
    for variant in variants["imdb"]:
        assert f"metrics/{variant}.json" in changed, variant
    everything = repo.dvc("metrics", "diff", "--all").output
    for variant in variants["imdb"] | variants["order"]:
        assert f"metrics/{variant}.json" in everything, variant
    assert "accuracy" in changed


def test_plots_show_renders_html(lstm_experiment: Result, repo: PipelineRepo, tmp_path: Path) -> None:
    output = tmp_path / "plots"
    repo.dvc("plots", "show", "-o", str(output))
    html = (output / "index.html").read_text(encoding="utf-8")
    # Every top-level plot of dvc.yaml (training curves, gradient profiles, confusion matrices) is drawn.
    plot_ids = [next(iter(entry)) for entry in yaml.safe_load((repo.path / "dvc.yaml").read_text())["plots"]]
    assert len(plot_ids) >= 10
    for plot_id in plot_ids:
        assert f"vegaEmbed('#{plot_id}'" in html, plot_id
