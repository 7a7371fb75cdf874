"""Bad params: the params stage rejects a bad params.yaml before any other stage runs, and every
stage checks it again when run by hand (issue 6, issue 25).

The stage list and their command lines come from dvc.yaml itself, so a stage added later is covered
too. Each stage's CLI runs in-process through the real `run_cli` wrapper (fast); one test runs the
params stage as `python -m stages.params` in a subprocess to prove the entry point behaves the same.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bench.archive import make_archive
from tests.support.stage_runner import (
    REPO,
    assert_user_error,
    files_under,
    lookup,
    outputs_under,
    repo_params,
    run_stage,
    stage_commands,
    write_params,
)

Edit = Callable[[dict[str, Any]], None]


STAGES = stage_commands()


def set_key(dotted: str, value: Any) -> Edit:
    def edit(params: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        target = params
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value

    return edit


def rename_key(dotted: str, new_name: str) -> Edit:
    def edit(params: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        target = lookup(params, ".".join(parents)) if parents else params
        target[new_name] = target.pop(last)

    return edit


# (case id, edit, text the one-line message must contain)
BAD_PARAMS: list[tuple[str, Edit, tuple[str, ...]]] = [
    ("unknown-top-level-key", rename_key("data", "dta"), ("'dta'", "Did you mean 'data'")),
    ("unknown-nested-key", rename_key("data.fix_length", "fix_lenght"), ("data.fix_lenght", "Did you mean 'fix_length'")),
    ("unknown-key-in-order-model", set_key("order.model.hiden_size", 4), ("order.model.hiden_size", "hidden_size")),
    ("wrong-type-int", set_key("data.vocab_size", "10k"), ("data.vocab_size", "integer", "10k")),
    ("wrong-type-float", set_key("train.lr", "fast"), ("train.lr", "number")),
    ("wrong-type-bool", set_key("model.bidirectional", "yes"), ("model.bidirectional", "true or false")),
    ("fix-length-zero", set_key("data.fix_length", 0), ("data.fix_length", ">= 1", "got 0")),
    ("fix-length-negative", set_key("data.fix_length", -5), ("data.fix_length", "got -5")),
    ("vocab-size-zero", set_key("data.vocab_size", 0), ("data.vocab_size", ">= 1")),
    ("valid-ratio-zero", set_key("data.valid_ratio", 0.0), ("data.valid_ratio", "(0, 1)")),
    ("valid-ratio-one", set_key("data.valid_ratio", 1), ("data.valid_ratio", "(0, 1)")),
    ("valid-ratio-above", set_key("data.valid_ratio", 1.5), ("data.valid_ratio", "1.5")),
    ("negative-lr", set_key("train.lr", -0.001), ("train.lr", "> 0")),
    ("dropout-one", set_key("model.dropout", 1.0), ("model.dropout", "[0, 1)")),
    ("dropout-negative", set_key("model.dropout", -0.1), ("model.dropout", "[0, 1)")),
    ("unknown-cell", set_key("model.cell", "lsmt"), ("model.cell", "'lsmt'", "Did you mean 'lstm'", "rnn, lstm, gru")),
    ("unknown-readout", set_key("model.readout", "lsat"), ("model.readout", "Did you mean 'last'")),
    ("unknown-activation", set_key("model.activation", "sigmod"), ("model.activation", "Did you mean 'sigmoid'")),
    ("variant-unknown-activation", set_key("variants.sigmoid.model.activation", "sigmod"),
     ("variants.sigmoid.model.activation", "Did you mean 'sigmoid'")),
    ("variant-overrides-missing-key", set_key("variants.relu.model.hidden", 8),
     ("variants.relu.model.hidden", "Unknown key", "Did you mean 'hidden_size'")),
    ("variant-overrides-missing-section", set_key("variants.tanh.optimizer", {"lr": 1}), ("variants.tanh.optimizer",)),
    ("order-variant-bad-value", set_key("order.variants.order_lstm.train.lr", -1.0), ("order.variants.order_lstm.train.lr",)),
]


@pytest.fixture
def bad_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Edit], Path]:
    def make(edit: Edit) -> Path:
        work = tmp_path / "work"
        work.mkdir()
        params = copy.deepcopy(repo_params())
        edit(params)
        write_params(work, params)
        monkeypatch.chdir(work)
        return work

    return make


def test_every_other_stage_depends_on_the_params_stage() -> None:
    """Every stage after the params stage depends on its file, so `dvc repro` runs the check before any of
    them (and before DVC removes their outputs); each lists the params.yaml keys it reads, by name."""
    pipeline = YAML(typ="safe").load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert "params.yaml" in pipeline["params"]["deps"]
    for name, stage in pipeline.items():
        stage = stage.get("do", stage)
        assert name == "params" or "params.yaml" not in stage.get("deps", []), f"{name}: list its keys under params:"
        assert name in ("code", "params", "report") or "${checked}" in stage["deps"], name
        assert bool(stage.get("params")) != (name in ("code", "params", "report")), f"{name} lists no params"


@pytest.mark.parametrize("case_id, edit, needles", BAD_PARAMS, ids=[case[0] for case in BAD_PARAMS])
def test_the_params_stage_rejects_bad_params_and_writes_nothing(bad_workdir, capsys, case_id, edit, needles):
    work = bad_workdir(edit)
    module, argv = STAGES["params"]
    code, out, err = run_stage(module, argv, capsys)
    assert_user_error(code, err, "error: ", *needles)
    assert files_under(work) == {"params.yaml"} and out == ""


READERS = sorted(name for name, (module, _argv) in STAGES.items() if name not in ("code", "params", "report"))


@pytest.mark.parametrize("stage", READERS)
def test_every_stage_checks_params_yaml_before_work(tmp_path, monkeypatch, capsys, stage):
    """A stage run by hand (or `dvc repro -s`) checks the whole file as the params stage does."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMDB_ARCHIVE", str(make_archive(tmp_path / "archive.tar.gz", per_folder=2)))
    params = repo_params()
    set_key("model.cell", "lsmt")(params)
    write_params(tmp_path, params)
    module, argv = STAGES[stage]
    code, out, err = run_stage(module, argv, capsys)
    assert_user_error(code, err, "model.cell", "Did you mean 'lstm'")
    assert outputs_under(tmp_path) == {"archive.tar.gz"} and out == ""


def test_a_stage_without_params_yaml_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    module, argv = STAGES["train"]
    code, _out, err = run_stage(module, argv, capsys)
    assert_user_error(code, err, "params.yaml not found", "repository root")


def test_bad_params_rejected_by_the_real_command_line(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    params = repo_params()
    set_key("model.cell", "lsmt")(params)
    write_params(work, params)
    module, argv = STAGES["params"]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=work, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert_user_error(result.returncode, result.stderr, "model.cell", "Did you mean 'lstm'")
    assert files_under(work) == {"params.yaml"}
