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

from rnnlab.training.history import HISTORY_METRICS, EpochLog, metric_file
from rnnlab.training.train import EpochRecord
from tests.stages.test_training_faults import tiny_params, workdir  # noqa: F401  (workdir is a fixture)
from tests.support.stage_runner import REPO, files_under, run_stage, stage_commands, write_params

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
    assert data_lines(metric_file(tmp_path / "live", "valid_accuracy")) == 0


def test_stage_history_matches_checkpoint_and_reruns_byte_identical(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    import torch

    write_params(workdir, tiny_params(epochs=4))
    module, argv = stage_commands("good")["train"]
    assert run_stage(module, argv, capsys)[0] == 0
    first = {name: (workdir / "plots/history/good" / name).read_bytes() for name in files_under(workdir / "plots/history/good")}
    lines = metric_file(workdir / "plots/history/good", "valid_accuracy").read_text().splitlines()[1:]
    epochs, accuracies = zip(*((int(step), float(value)) for step, value in (line.split("\t") for line in lines)), strict=True)
    assert epochs == (1, 2, 3, 4)
    checkpoint = torch.load(workdir / "models/good.pt", weights_only=True)
    assert checkpoint["epochs_trained"] == 4 and checkpoint["best_valid_accuracy"] == max(accuracies)  # what evaluate reports
    summary = json.loads((workdir / "plots/history/good" / "metrics.json").read_text())
    assert summary["step"] == checkpoint["best_epoch"] and summary["valid_accuracy"] == max(accuracies)
    assert run_stage(module, argv, capsys)[0] == 0
    second = {name: (workdir / "plots/history/good" / name).read_bytes() for name in files_under(workdir / "plots/history/good")}
    assert first == second


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
