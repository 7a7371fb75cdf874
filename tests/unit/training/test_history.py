"""The per-epoch history logged with DVCLive (rnnlab/training/history.py): it grows while a stage trains, its
summary is the best epoch, its bytes reproduce, and the reader parses it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnlab.core.errors import UserError
from rnnlab.training.history import HISTORY_METRICS, EpochLog, metric_file, read_history
from rnnlab.training.train import EpochRecord
from tests.stages.test_training_faults import tiny_params, workdir  # noqa: F401  (workdir is a fixture)
from tests.support.stage_runner import REPO, assert_user_error, files_under, run_stage, stage_commands, write_params

GROWTH_TIMEOUT = 120.0  # seconds to see the history grow on a busy machine


def record(epoch: int, valid_accuracy: float) -> EpochRecord:
    return EpochRecord(epoch=epoch, train_loss=1.0 / epoch, train_accuracy=0.5, valid_loss=0.7, valid_accuracy=valid_accuracy,
                       grad_norm_mean=0.25, grad_norm_max=0.5, clip_fraction=0.0)


def data_lines(path: Path) -> int:
    """Finished epochs in a metric file (lines after the header); 0 before the first one."""
    try:
        return max(len(path.read_text(encoding="utf-8").splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


def test_summary_is_the_best_epoch_and_files_carry_no_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    log = EpochLog(tmp_path / "live")
    for epoch, accuracy in ((1, 0.5), (2, 0.9), (3, 0.7)):
        log.log_epoch(record(epoch, accuracy))
        # metrics.json follows the running epoch while training goes on
        assert json.loads((tmp_path / "live" / "metrics.json").read_text())["step"] == epoch
    log.finish(record(2, 0.9))
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary == {"step": 2, **{name: getattr(record(2, 0.9), name) for name in HISTORY_METRICS}}
    text = metric_file(tmp_path / "live", "valid_accuracy").read_text()
    assert text.splitlines() == ["step\tvalid_accuracy", "1\t0.5", "2\t0.9", "3\t0.7"]  # no timestamp column
    assert files_under(tmp_path) == {"live/metrics.json", *(f"live/plots/metrics/{name}.tsv" for name in HISTORY_METRICS)}


def test_a_run_without_a_finished_epoch_has_an_empty_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    EpochLog(tmp_path / "live").finish(None)
    assert json.loads((tmp_path / "live" / "metrics.json").read_text()) == {}
    assert read_history(tmp_path / "live") == []


def test_reader_parses_the_metric_files_and_names_a_bad_one(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="training history not found"):
        read_history(tmp_path / "missing")
    accuracy, loss = metric_file(tmp_path, "valid_accuracy"), metric_file(tmp_path, "train_loss")
    accuracy.parent.mkdir(parents=True)
    accuracy.write_text("step\tvalid_accuracy\n2\t0.75\n1\t0.5\n")
    loss.write_text("step\ttrain_loss\n1\t0.7\n2\t0.6\n")
    assert read_history(tmp_path) == [{"epoch": 1, "train_loss": 0.7, "valid_accuracy": 0.5},
                                      {"epoch": 2, "train_loss": 0.6, "valid_accuracy": 0.75}]
    loss.write_text("step\tvalid_accuracy\n1\t0.5\n")
    with pytest.raises(UserError, match="train_loss.tsv is not a DVCLive history of train_loss"):
        read_history(tmp_path)
    loss.write_text("step\ttrain_loss\n1\t0.5\n2\tabc\n")
    with pytest.raises(UserError, match="train_loss.tsv line 3"):
        read_history(tmp_path)


def test_stage_history_matches_checkpoint_and_reruns_byte_identical(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    import torch

    write_params(workdir, tiny_params(epochs=4))
    module, argv = stage_commands("good")["train"]
    assert run_stage(module, argv, capsys)[0] == 0
    first = {name: (workdir / "plots/history/good" / name).read_bytes() for name in files_under(workdir / "plots/history/good")}
    history = read_history(workdir / "plots/history/good")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    best_epoch = torch.load(workdir / "models/good.pt", weights_only=True)["best_epoch"]
    summary = json.loads((workdir / "plots/history/good" / "metrics.json").read_text())
    assert summary["step"] == best_epoch and summary["valid_accuracy"] == max(row["valid_accuracy"] for row in history)
    assert run_stage(module, argv, capsys)[0] == 0
    second = {name: (workdir / "plots/history/good" / name).read_bytes() for name in files_under(workdir / "plots/history/good")}
    assert first == second


def test_evaluate_without_a_history_is_a_user_error(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert run_stage(*stage_commands("good")["train"], capsys)[0] == 0
    import shutil

    shutil.rmtree(workdir / "plots/history/good")
    code, _out, err = run_stage(*stage_commands("good")["evaluate"], capsys)
    assert_user_error(code, err, "training history not found at plots/history/good", "dvc repro")


def test_history_files_grow_while_the_stage_trains(workdir: Path) -> None:  # noqa: F811
    """The point of logging with DVCLive: `dvc exp show` / `dvc plots` / VS Code see epochs before the stage ends."""
    write_params(workdir, tiny_params(epochs=100000))  # far more than the test waits for
    module, argv = stage_commands("good")["train"]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "RNNLAB_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", module, *argv], cwd=workdir, env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    history = metric_file(workdir / "plots/history/good", "valid_accuracy")
    seen: list[int] = []
    try:
        deadline = time.monotonic() + GROWTH_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None and len(set(seen)) < 3:
            lines = data_lines(history)
            if lines and (not seen or lines > seen[-1]):
                seen.append(lines)
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""  # still training
        process.terminate()
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen  # grew, epoch by epoch, while the stage ran
    assert process.returncode == 130 and "interrupted" in err
    assert not (workdir / "plots/history/good").exists()  # an unfinished history is not left as a result
