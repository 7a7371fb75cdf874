"""The sweep's planning and its node-side pieces that need no cluster (tests/e2e/test_sweep.py runs the rest)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from rnnlab.core.errors import ConfigError, UserError
from rnnlab.experiments.sweep import Options, check_commit, check_dvc_remote, dvc, parse_seeds, plan
from rnnlab.experiments.sweep_node import EpochWatch, Runner, SweepFailure, experiment_ref
from tests.support.stage_runner import REPO, repo_params


@pytest.mark.parametrize(("text", "seeds"), [("0-9", list(range(10))), ("0,3,7", [0, 3, 7]), ("0-2,8,1", [0, 1, 2, 8]), ("4", [4])])
def test_seeds_are_ranges_or_lists(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["a-b", "0-", "9-0", ""])
def test_a_bad_seed_range_names_the_forms_that_work(text: str) -> None:
    with pytest.raises(UserError, match="--seeds"):
        parse_seeds(text)


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # presets/ and dvc.yaml, for the targets check


def test_seeds_without_settings_take_the_seed_bands_names(in_repo: None) -> None:
    planned = plan(Options(seeds=[0, 1], targets=["evaluate@relu"]), repo_params())
    assert [item.name for item in planned] == ["default-seed0", "default-seed1"]
    assert planned[1].arguments == ("-S", "train.seed=1", "evaluate@relu")
    assert planned[1].params["train"]["seed"] == 1


def test_the_same_settings_give_the_same_name_and_other_settings_another(in_repo: None) -> None:
    lstm = plan(Options(settings=["model.cell=lstm"]), repo_params())
    assert lstm == plan(Options(settings=["model.cell=lstm"]), repo_params())
    assert lstm[0].name.startswith("sweep-") and lstm[0].name != plan(Options(settings=["model.cell=gru"]), repo_params())[0].name
    assert plan(Options(settings=["model.cell=lstm"], prefix="lstm", seeds=[2]), repo_params())[0].name == "lstm-seed2"


def test_a_preset_gives_its_settings_name_and_targets(in_repo: None) -> None:
    planned = plan(Options(preset="strong", seeds=[1]), repo_params())
    assert planned[0].name.endswith("-seed1")
    assert "evaluate@strong" in planned[0].arguments and "train.seed=1" in planned[0].arguments


@pytest.mark.parametrize(("options", "message"), [
    (Options(settings=["model.cel=lstm"]), "is not in params.yaml. Did you mean 'cell'"),
    (Options(settings=["model.cell=transformer"]), "transformer"),
    (Options(targets=["evaluate@nope"]), "no variant 'nope'"),
])
def test_a_bad_experiment_fails_before_anything_runs(in_repo: None, options: Options, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan(options, repo_params())


def test_a_dirty_workspace_is_refused_with_the_files_named(tmp_path: Path) -> None:
    def git(*arguments: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *arguments], cwd=tmp_path,
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    git("add", "-A")
    git("commit", "-qm", "one")
    assert len(check_commit(tmp_path)) == 40
    (tmp_path / "params.yaml").write_text("a: 2\n")
    with pytest.raises(UserError, match="commit or stash these changes first: params.yaml"):
        check_commit(tmp_path)


def test_the_epoch_shown_comes_from_the_variant_s_dvclive_history(tmp_path: Path) -> None:
    shown: list[str] = []
    watch = EpochWatch(tmp_path, shown.append)
    watch.poll()
    assert shown == []  # no stage trains yet
    watch.on_line("Running stage 'order_train@order_lstm':\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"order": {"train": {"epochs": 20}, "variants": {"order_lstm": {}}}}))
    watch.poll()
    history = tmp_path / "plots/history/order_lstm/plots/metrics"
    history.mkdir(parents=True)
    (history / "train_loss.tsv").write_text("step\ttrain_loss\n1\t0.7\n2\t0.6\n")
    watch.poll()
    watch.poll()
    assert shown == ["training order_lstm: epoch 1 of 20", "training order_lstm: epoch 3 of 20"]


def test_a_failed_step_raises_its_last_line_and_keeps_the_output_in_the_log(tmp_path: Path) -> None:
    runner = Runner(tmp_path, {"PATH": "/usr/bin:/bin"}, tmp_path / "sweep.log", lambda: False)
    assert runner.run("sh", "-c", "echo hello", step="echo") == "hello"
    with pytest.raises(SweepFailure, match=r"dvc pull failed \(exit 3\): no remote"):
        runner.run("sh", "-c", "echo first; echo no remote; exit 3", step="dvc pull")
    assert "first\nno remote" in (tmp_path / "sweep.log").read_text()


def test_a_cancel_flag_stops_the_command_when_the_interrupt_was_lost(tmp_path: Path) -> None:
    """Ray's cancel raises KeyboardInterrupt once; where a library call swallowed it, its flag still stops the run."""
    flags = iter([False, True])
    runner = Runner(tmp_path, {"PATH": "/usr/bin:/bin"}, tmp_path / "sweep.log", lambda: next(flags))
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run("sleep", "60", step="sleep")
    process = runner.process
    runner.stop()  # what run_task's `finally` does
    assert process is not None and process.poll() is not None and time.monotonic() - started < 30


def test_experiment_refs_are_dvc_s_layout() -> None:
    commit = "94c25ae46a90e0b164d6229e89e9208e67ab86c6"
    assert experiment_ref(commit, "default-seed0") == "refs/exps/94/c25ae46a90e0b164d6229e89e9208e67ab86c6/default-seed0"


def test_a_cluster_sweep_needs_a_committed_dvc_remote(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(dvc("init", "-q"), cwd=tmp_path, check=True)
    with pytest.raises(UserError, match="a cluster sweep needs a DVC remote that every node reaches"):
        check_dvc_remote(tmp_path, None)
    subprocess.run(dvc("remote", "add", "--local", "-d", "mine", str(tmp_path / "store")), cwd=tmp_path, check=True)
    with pytest.raises(UserError, match="'mine' is not in the committed .dvc/config .* `dvc remote add --project mine URL`"):
        check_dvc_remote(tmp_path, "mine")
