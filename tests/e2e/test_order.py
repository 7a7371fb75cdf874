"""End-to-end: only the temporal-order branch, run for real with `dvc repro` in a temporary repo.

The branch needs no download, so this is the run anyone can do offline. The repo is a copy of
stages/, dvc.yaml and params.yaml with tiny sizes and one epoch; `dvc repro order_evaluate` (a
foreach group name, which DVC expands to every order_evaluate@<variant> plus their upstream
stages) must train and evaluate every order variant and touch no IMDB stage.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.dvc_repo import copy_pipeline

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RUNNING_STAGE = re.compile(r"Running stage '([^']+)'")
IMDB_STAGE_PREFIXES = ("download", "preprocess", "xy", "train@", "evaluate@")
TINY_ORDER_DATA = {"train_size": 64, "valid_size": 16, "test_size": 16, "min_length": 20, "max_length": 24,
                   "early_window": [2, 5], "late_window": [10, 15]}
TINY_ORDER_TRAIN = {"epochs": 1, "batch_size": 32, "device": "cpu"}
COMMAND_TIMEOUT = 900  # a hang guard: minutes on a loaded 2-core CPU


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{output}"
    return output


@pytest.fixture(scope="module")
def order_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[str]]:
    """Build the repo, run the branch once; return (repo, dvc output, order variant names)."""
    repo = tmp_path_factory.mktemp("order-repo")
    copy_pipeline(repo)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["order"]["data"].update(TINY_ORDER_DATA)
    params["order"]["train"].update(TINY_ORDER_TRAIN)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")

    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the stages must come from the copy, not this checkout
    env.update(
        # `python` in dvc.yaml's cmds must be this interpreter (the one with torch and dvc).
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        RNNLAB_THREADS="1",  # several stages start torch; one thread each keeps a shared CPU responsive
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid",
    )
    run(["git", "init", "-q"], repo, env)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "order branch"], repo, env)
    output = run([sys.executable, "-m", "dvc", "repro", "order_evaluate"], repo, env)
    return repo, output, list(params["order"]["variants"])


def test_the_branch_runs_every_order_stage_and_nothing_else(order_run: tuple[Path, str, list[str]]) -> None:
    _repo, output, variants = order_run
    ran = set(RUNNING_STAGE.findall(output))
    expected = {"code", "params", "order_data"} | {f"order_{kind}@{variant}" for kind in ("train", "evaluate") for variant in variants}
    assert ran == expected, f"ran {sorted(ran)}, expected {sorted(expected)}"
    assert not [stage for stage in ran if stage.startswith(IMDB_STAGE_PREFIXES)]


def test_metrics_are_comparable_across_order_variants(order_run: tuple[Path, str, list[str]]) -> None:
    repo, _output, variants = order_run
    metrics: dict[str, dict[str, Any]] = {
        variant: json.loads((repo / "metrics" / "details" / f"{variant}.json").read_text(encoding="utf-8")) for variant in variants
    }
    assert len(metrics) == 6, "order_rnn, order_lstm, order_gru and their _fix variants"
    key_sets = {variant: tuple(values) for variant, values in metrics.items()}
    assert len(set(key_sets.values())) == 1, f"metrics keys differ between variants: {key_sets}"
    for variant, values in metrics.items():
        assert values["variant"] == variant and values["study"] == "order"
        assert set(values["per_class_accuracy"]) == {"Q", "R", "S", "U"}
        assert all(value is None or 0.0 <= value <= 1.0 for value in values["per_class_accuracy"].values())
        assert 0.0 <= values["accuracy"] <= 1.0
        assert values["epochs_trained"] == 1
        declared = json.loads((repo / "metrics" / f"{variant}.json").read_text(encoding="utf-8"))
        assert declared == {key: values[key] for key in ("accuracy", "f1", "roc_auc", "loss", "best_epoch")}
    assert {values["cell"] for values in metrics.values()} == {"rnn", "lstm", "gru"}
    for variant in variants:  # the outputs dvc.yaml declares for each variant
        assert (repo / "models" / f"{variant}.pt").is_file()
        assert (repo / "plots" / "predictions" / f"{variant}.csv").is_file()
        assert (repo / "plots" / "history" / variant / "metrics.json").is_file()  # DVCLive's best-epoch summary
        assert (repo / "plots" / "history" / variant / "plots" / "metrics" / "valid_accuracy.tsv").is_file()


def test_no_imdb_output_was_written(order_run: tuple[Path, str, list[str]]) -> None:
    repo, _output, variants = order_run
    for imdb_output in ("data/reviews.jsonl", "data/prepared", "data/vocab.tsv", "data/xy"):
        assert not (repo / imdb_output).exists(), imdb_output
    assert sorted(path.stem for path in (repo / "metrics").glob("*.json")) == sorted(variants)

