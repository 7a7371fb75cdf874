"""rnnlab.experiments.seed_bands (tools.seed_bands): collecting the bands from experiment refs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnlab.core.errors import UserError
from rnnlab.experiments import seed_bands
from tests.unit.experiments.test_studies import PARAMS, commit, experiment, git, with_changes
from tools import seed_bands as seed_bands_tool


@pytest.fixture()
def repo(tmp_path: Path) -> tuple[Path, str]:
    git(tmp_path, "init", "-q")
    baseline = commit(tmp_path, PARAMS, {"relu": 0.70, "tanh": 0.60}, "baseline")
    return tmp_path, baseline


def test_bands_from_the_commit_and_its_seed_experiments(repo: tuple[Path, str]) -> None:
    path, baseline = repo
    experiment(path, baseline, "default-seed1", with_changes(train={"seed": 1}), {"relu": 0.66, "tanh": 0.62})
    experiment(path, baseline, "default-seed2", with_changes(train={"seed": 2}), {"relu": 0.68, "tanh": 0.64})
    # Not seed noise: another param changed too, or another commit's experiment.
    experiment(path, baseline, "lr-seed1", with_changes(train={"seed": 1, "lr": 0.01}), {"relu": 0.9, "tanh": 0.9})
    older = baseline
    newer = commit(path, with_changes(model={"readout": "mean"}), {"relu": 0.80, "tanh": 0.70}, "newer")
    experiment(path, newer, "default-seed1", with_changes(model={"readout": "mean"}, train={"seed": 1}), {"relu": 0.82, "tanh": 0.72})
    git(path, "checkout", "-q", older)
    bands = seed_bands.collect_bands(path)
    assert bands["commit"] == baseline and bands["seeds"] == [0, 1, 2]
    assert set(bands["variants"]) == {"relu", "tanh"}
    assert bands["variants"]["relu"]["accuracies"] == [0.70, 0.66, 0.68]
    assert bands["variants"]["relu"]["mean"] == pytest.approx(0.68)
    assert bands["variants"]["relu"]["std"] == pytest.approx(0.02)
    assert bands["variants"]["relu"]["runs"] == ["(committed)", "default-seed1", "default-seed2"]
    assert bands["variants"]["relu"]["key"]  # the inputs the runs share: the review matches it to the base's
    only_two = seed_bands.collect_bands(path, seeds=[0, 2])
    assert only_two["variants"]["tanh"]["seeds"] == [0, 2]


def test_a_commit_without_seed_runs_names_the_command(repo: tuple[Path, str]) -> None:
    path, _ = repo
    with pytest.raises(UserError, match=r"no variant has two or more seeds for commit \w{7}.*`python -m tools.sweep --seeds 0-9`"):
        seed_bands.collect_bands(path)


def test_one_seed_is_not_a_band(repo: tuple[Path, str]) -> None:
    path, _ = repo
    with pytest.raises(UserError, match="two or more different seeds"):
        seed_bands_tool.main(["--seeds", "1", "1", "--repo", str(path)])


def test_a_later_commit_with_the_same_results_keeps_the_seed_runs(repo: tuple[Path, str]) -> None:
    path, baseline = repo
    experiment(path, baseline, "default-seed1", with_changes(train={"seed": 1}), {"relu": 0.66, "tanh": 0.62})
    (path / "NOTES.md").write_text("docs only\n")
    git(path, "add", "-A")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "docs")
    bands = seed_bands.collect_bands(path)
    assert bands["variants"]["relu"]["runs"] == ["(committed)", "default-seed1"]


def test_a_band_grows_with_finished_runs_of_any_seed_and_keeps_what_it_recorded(repo: tuple[Path, str]) -> None:
    """Seeds 0-1 recorded, their experiments since gone (another clone ran them); seeds 10 and 11 ran later with
    `evaluate@relu` only (tanh keeps the baseline's seed-0 results, which are not a seed-10 run)."""
    path, baseline = repo
    out = path.parent / "bands.json"  # outside the repository: the fixture's commits add every file there
    experiment(path, baseline, "default-seed1", with_changes(train={"seed": 1}), {"relu": 0.66, "tanh": 0.62})
    seed_bands_tool.main(["--repo", str(path), "--out", str(out)])
    git(path, "update-ref", "-d", f"refs/exps/{baseline[:2]}/{baseline[2:]}/default-seed1")
    for seed, accuracy in ((10, 0.61), (11, 0.69)):
        experiment(path, baseline, f"relu-seed{seed}", with_changes(train={"seed": seed}), {"relu": accuracy})
    seed_bands_tool.main(["--repo", str(path), "--out", str(out)])
    relu, tanh = (json.loads(out.read_text())["variants"][variant] for variant in ("relu", "tanh"))
    assert relu["runs"] == ["(committed)", "default-seed1", "relu-seed10", "relu-seed11"]
    assert relu["accuracies"] == [0.70, 0.66, 0.61, 0.69] and relu["seeds"] == [0, 1, 10, 11]
    assert tanh["runs"] == ["(committed)", "default-seed1"]
