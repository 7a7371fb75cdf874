"""Bad params: the params stage rejects a bad params.yaml before any other stage runs, and every
stage checks the resolved file it reads (issue 6, issue 25).

The stage list and their command lines come from dvc.yaml itself, so a stage added later is covered
too. Each stage's CLI runs in-process through the real `run_cli` wrapper (fast); one test runs the
params stage as `python -m stages.params` in a subprocess to prove the entry point behaves the same.
"""

from __future__ import annotations

import copy
import json
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
        write_params(work, params, resolve=False)
        monkeypatch.chdir(work)
        return work

    return make


def test_every_other_stage_depends_on_the_params_stage() -> None:
    """Only the params stage reads params.yaml; every stage that reads a value reads its resolved file,
    so `dvc repro` runs the check before any of them (and before DVC removes their outputs)."""
    pipeline = YAML(typ="safe").load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert "params.yaml" in pipeline["params"]["deps"]
    for name, stage in pipeline.items():
        stage = stage.get("do", stage)
        assert "params" not in stage, f"{name} lists params: depend on its resolved file instead"
        assert name == "params" or "params.yaml" not in stage.get("deps", []), name
        reads_params = "--params" in stage["cmd"]
        assert reads_params == any(str(dep).startswith("${params}/") for dep in stage.get("deps", [])), name
        assert reads_params or name in ("code", "params", "report"), f"{name} reads no resolved params"


@pytest.mark.parametrize("case_id, edit, needles", BAD_PARAMS, ids=[case[0] for case in BAD_PARAMS])
def test_the_params_stage_rejects_bad_params_and_writes_nothing(bad_workdir, capsys, case_id, edit, needles):
    work = bad_workdir(edit)
    module, argv = STAGES["params"]
    code, out, err = run_stage(module, argv, capsys)
    assert_user_error(code, err, "error: ", *needles)
    assert files_under(work) == {"params.yaml"} and out == ""


def test_a_failed_check_keeps_the_last_good_resolved_files(bad_workdir, capsys):
    """dvc.yaml marks the folder `persist`, so DVC leaves it to the stage, which replaces it all at once."""
    work = bad_workdir(lambda params: None)
    module, argv = STAGES["params"]
    assert run_stage(module, argv, capsys)[0] == 0
    good = {name: (work / name).read_bytes() for name in files_under(work)}
    params = repo_params()
    set_key("train.lr", -0.001)(params)
    write_params(work, params, resolve=False)
    assert_user_error(*run_stage(module, argv, capsys)[::2], "train.lr must be > 0")
    assert {name: (work / name).read_bytes() for name in files_under(work) if name != "params.yaml"} == \
        {name: data for name, data in good.items() if name != "params.yaml"}


# A hand-edited (or damaged) resolved file: each stage checks its own values like params.yaml's.
DAMAGE = {
    "download.json": (("download", "md5"), "XYZ", "md5 must be 32 lowercase hex digits"),
    "preprocess.json": (("data", "vocab_size"), 0, "vocab_size must be >= 1"),
    "xy.json": (("data", "fix_length"), "long", "fix_length must be an integer"),
    "order_data.json": (("order_data", "min_length"), 0, "min_length must be >= 1"),
    "baseline.json": (("baseline", "ngram_max"), 0, "ngram_max must be >= 1"),
    "variants": (("model", "cell"), "lsmt", "Did you mean 'lstm'"),
    "tasks": (("task", "variants"), "order_rnn", "no task with a variant list"),
}


def damaged_file(argv: list[str]) -> tuple[str, Path]:
    path = Path(argv[argv.index("--params") + 1])
    return (path.parent.name if path.parent.name in ("variants", "tasks") else path.name), path


@pytest.mark.parametrize("stage", sorted(name for name, (_module, argv) in STAGES.items() if "--params" in argv))
def test_every_stage_checks_its_resolved_params_before_work(tmp_path, monkeypatch, capsys, stage):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMDB_ARCHIVE", str(make_archive(tmp_path / "archive.tar.gz", per_folder=2)))
    write_params(tmp_path, repo_params())
    module, argv = STAGES[stage]
    kind, path = damaged_file(argv)
    (section, key), value, needle = DAMAGE[kind]
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw[section][key] = value
    path.write_text(json.dumps(raw), encoding="utf-8")
    code, out, err = run_stage(module, argv, capsys)
    assert_user_error(code, err, str(path), needle)
    assert outputs_under(tmp_path) == {"archive.tar.gz"} and out == ""


def test_a_stage_without_its_resolved_file_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    module, argv = STAGES["train"]
    code, _out, err = run_stage(module, argv, capsys)
    assert_user_error(code, err, "data/params/variants/", "not found", "dvc repro params")


def test_bad_params_rejected_by_the_real_command_line(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    params = repo_params()
    set_key("model.cell", "lsmt")(params)
    write_params(work, params, resolve=False)
    module, argv = STAGES["params"]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=work, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert_user_error(result.returncode, result.stderr, "model.cell", "Did you mean 'lstm'")
    assert files_under(work) == {"params.yaml"}
