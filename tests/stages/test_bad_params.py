"""Issue 6, params: every stage in dvc.yaml rejects a bad params.yaml before any work.

The stage list and their command lines come from dvc.yaml itself, so a stage added later is covered
too. Each stage's CLI runs in-process through the real `run_cli` wrapper (fast); one test per stage
also runs it as `python -m stages.<name>` in a subprocess to prove the entry point behaves the same.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from rnnlab.testing.archive import make_archive
from tests.support.stage_runner import (REPO, assert_user_error, files_under, lookup, repo_params, run_stage,
                                        stage_commands, write_params)

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
     ("variants.relu.model.hidden", "only override keys that exist", "Did you mean 'hidden_size'")),
    ("variant-overrides-missing-section", set_key("variants.tanh.optimizer", {"lr": 1}), ("variants.tanh.optimizer",)),
    ("order-variant-bad-value", set_key("order.variants.order_lstm.train.lr", -1.0), ("order.variants.order_lstm.train.lr",)),
]


@pytest.fixture
def bad_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Edit], Path]:
    # A real archive via IMDB_ARCHIVE: if validation came late, download would do real work and write output.
    monkeypatch.setenv("IMDB_ARCHIVE", str(make_archive(tmp_path / "archive.tar.gz", per_folder=2)))

    def make(edit: Edit) -> Path:
        work = tmp_path / "work"
        work.mkdir()
        params = copy.deepcopy(repo_params())
        edit(params)
        write_params(work, params)
        monkeypatch.chdir(work)
        return work

    return make


def test_every_dvc_stage_is_covered() -> None:
    assert {"download", "preprocess", "xy", "train", "evaluate"} <= set(STAGES)


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("case_id, edit, needles", BAD_PARAMS, ids=[case[0] for case in BAD_PARAMS])
def test_bad_params_rejected_before_work_in_every_stage(bad_workdir, capsys, stage, case_id, edit, needles):
    work = bad_workdir(edit)
    module, argv = STAGES[stage]
    code, out, err = run_stage(module, argv, capsys)
    assert_user_error(code, err, "error: ", *needles)
    assert files_under(work) == {"params.yaml"}, f"{stage} created output despite bad params"
    assert out == ""  # nothing started: no progress lines


# One subprocess per stage module (train@x and order_train@x share stages.train): each costs an interpreter start.
ONE_STAGE_PER_MODULE = {module: (name, argv) for name, (module, argv) in reversed(sorted(STAGES.items()))}


@pytest.mark.parametrize("module", sorted(ONE_STAGE_PER_MODULE))
def test_bad_params_rejected_by_the_real_command_line(tmp_path, module):
    work = tmp_path / "work"
    work.mkdir()
    params = repo_params()
    set_key("model.cell", "lsmt")(params)
    write_params(work, params)
    _stage, argv = ONE_STAGE_PER_MODULE[module]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "RNNLAB_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=work, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert_user_error(result.returncode, result.stderr, "model.cell", "Did you mean 'lstm'")
    assert files_under(work) == {"params.yaml"}
