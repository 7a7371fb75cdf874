"""Issue 25, outputs: read-only folders, failed and interrupted runs, two trainers at once, a dead `dvc`.

A failed or interrupted stage leaves the outputs that were there before it started (written aside,
swapped in together at the end); a read-only location is refused with one line before any work;
one trainer at a time writes a variant's checkpoint and history; a stage DVC runs stops when `dvc`
dies. Tiny synthetic arrays and models, as in test_training_faults.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.stages.test_training_faults import run_variant, tiny_params, workdir  # noqa: F401  (workdir is a fixture)
from tests.support.read_only import ReadOnly, read_only  # noqa: F401  (read_only is a fixture)
from tests.support.stage_runner import REPO, assert_user_error, files_under, run_stage, stage_commands, write_params

UNWRITABLE = ("is not writable", "chmod u+w", "chattr -i", "no output was changed")


def snapshot(directory: Path, *names: str) -> dict[str, bytes]:
    """The bytes of every file under `directory` whose path starts with one of `names`, hidden ones too."""
    return {name: (directory / name).read_bytes() for name in sorted(files_under(directory)) if name.startswith(names)}


@pytest.fixture
def trained(workdir: Path, capsys: pytest.CaptureFixture[str]) -> Path:  # noqa: F811
    """A workdir whose `good` variant has a checkpoint and history from an earlier run."""
    assert run_variant("train", "good", capsys)[0] == 0
    return workdir


def previous_outputs(directory: Path) -> dict[str, bytes]:
    return snapshot(directory, "models", "plots")


def visible(files: dict[str, bytes]) -> dict[str, bytes]:
    """Without hidden entries (temporary folders, lock files)."""
    return {name: data for name, data in files.items() if not any(part.startswith(".") for part in Path(name).parts)}


# --- read-only folders --------------------------------------------------------------------------


def test_xy_into_a_read_only_folder_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], read_only: ReadOnly) -> None:  # noqa: F811
    from tests.stages.test_resources import write_prepared

    monkeypatch.chdir(tmp_path)
    write_prepared(tmp_path)
    write_params(tmp_path, tiny_params())
    assert run_stage(*stage_commands()["xy"], capsys)[0] == 0
    before = snapshot(tmp_path, "data/xy")
    read_only(tmp_path / "data/xy")  # the issue's `chattr +i data/xy`
    code, out, err = run_stage(*stage_commands()["xy"], capsys)
    assert_user_error(code, err, "cannot write data/xy: data/xy is not writable", *UNWRITABLE)
    read_only.undo()
    assert snapshot(tmp_path, "data/xy") == before and out == ""  # nothing emptied, nothing encoded


def test_train_into_a_read_only_models_folder_is_refused_before_training(trained: Path, capsys: pytest.CaptureFixture[str],
                                                                          read_only: ReadOnly) -> None:  # noqa: F811
    before = previous_outputs(trained)
    read_only(trained / "models")
    code, out, err = run_variant("train", "good", capsys)
    assert_user_error(code, err, "cannot write models/good.pt: models is not writable", *UNWRITABLE)
    assert "epoch" not in out
    read_only.undo()
    assert previous_outputs(trained) == before


@pytest.mark.parametrize("folder", ["models", "plots/history"])
def test_a_folder_made_read_only_mid_train_keeps_the_previous_outputs(trained: Path, capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch, read_only: ReadOnly,  # noqa: F811
                                                                      folder: str) -> None:
    from rnnlab.training import history

    before = previous_outputs(trained)
    log_epoch = history.EpochLog.log_epoch

    def log_then_lock(self: Any, record: Any) -> None:
        log_epoch(self, record)
        if record.epoch == 1:
            read_only(trained / folder)  # the issue's `chattr +i` while training runs

    monkeypatch.setattr(history.EpochLog, "log_epoch", log_then_lock)
    code, out, err = run_variant("train", "good", capsys)
    target = "models/good.pt: models" if folder == "models" else "plots/history/good: plots/history"
    assert_user_error(code, err, f"cannot write {target} is not writable", "no output was changed")
    assert "epoch 2/2" in out  # the failure came at the end, when the outputs were swapped in
    read_only.undo()
    assert visible(previous_outputs(trained)) == before  # the old checkpoint and history, not an empty folder
    # What a read-only folder keeps from being removed: the lock file (harmless: the kernel holds the lock).
    assert set(previous_outputs(trained)) - set(before) <= {"plots/history/.good.lock"}


def test_download_into_a_read_only_folder_reads_no_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], read_only: ReadOnly) -> None:  # noqa: F811
    from bench.archive import make_archive

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, tiny_params())
    monkeypatch.setenv("IMDB_ARCHIVE", str(make_archive(tmp_path / "archive.tar.gz", per_folder=2)))
    (tmp_path / "data").mkdir()
    (tmp_path / "data/reviews.jsonl").write_text("previous\n")
    read_only(tmp_path / "data")
    code, out, err = run_stage(*stage_commands()["download"], capsys)
    assert_user_error(code, err, "cannot write data/reviews.jsonl: data is not writable", *UNWRITABLE)
    assert "IMDB_ARCHIVE" not in out  # refused before the archive was even opened
    read_only.undo()
    assert (tmp_path / "data/reviews.jsonl").read_text() == "previous\n"


# --- failed and interrupted runs keep what was there -----------------------------------------------


def test_a_failed_train_keeps_the_previous_checkpoint_and_history(trained: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnlab.training import train

    before = previous_outputs(trained)
    fit = train.fit

    def fit_then_fail(*args: Any, **kwargs: Any) -> Any:
        fit(*args, **kwargs)  # every epoch logged into the new history
        raise RuntimeError("the machine fell over")

    monkeypatch.setattr(train, "fit", fit_then_fail)
    with pytest.raises(RuntimeError, match="fell over"):
        run_variant("train", "good", capsys)
    assert previous_outputs(trained) == before  # and no temporary folder left beside them


def start_training(directory: Path, epochs: int = 1000, **environment: str) -> tuple[subprocess.Popen[str], Path]:
    """The train stage in a subprocess with many epochs, once its first epoch has ended; its stdout in a file."""
    write_params(directory, tiny_params(epochs=epochs))
    module, argv = stage_commands("good")["train"]
    log = directory / "train.log"
    settings = {**os.environ, "PYTHONPATH": str(REPO), "RNNLAB_THREADS": "1", "PYTHONUNBUFFERED": "1", **environment}
    with log.open("w") as handle:
        process = subprocess.Popen([sys.executable, "-m", module, *argv], cwd=directory, env=settings,
                                   stdout=handle, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: "epoch 1/" in log.read_text(), 60, "the first epoch")
    return process, log


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.05)


def test_ctrl_c_of_a_direct_train_keeps_the_previous_outputs_and_says_so(trained: Path) -> None:
    """The issue's case: a good models/good.pt and history present, `python -m stages.train`, Ctrl-C."""
    before = previous_outputs(trained)
    process, _log = start_training(trained)
    try:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "interrupted: no output was replaced, each is as it was before this run (nothing is half-written); rerun `dvc repro`."
    )
    assert previous_outputs(trained) == before


def test_evaluate_interrupted_between_its_writes_keeps_all_three_previous_outputs(trained: Path, capsys: pytest.CaptureFixture[str],
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnlab.evaluation import evaluate

    assert run_variant("evaluate", "good", capsys)[0] == 0
    written = ("metrics", "plots/predictions", "plots/gradients")
    before = snapshot(trained, *written)

    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt  # after the gradient profile was written, before predictions and metrics

    monkeypatch.setattr(evaluate, "write_predictions", interrupted)
    code, _out, err = run_variant("evaluate", "good", capsys)
    assert code == 130 and "interrupted: no output was replaced" in err
    assert snapshot(trained, *written) == before


# --- one trainer at a time, and none left behind by a dead dvc ----------------------------------


def test_a_second_trainer_names_the_first_one_and_changes_nothing(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = previous_outputs(trained)
    first, _log = start_training(trained)
    try:
        code, out, err = run_variant("train", "good", capsys)
        assert_user_error(code, err, f"another training run of good (PID {first.pid}) is writing plots/history/good",
                          f"`kill {first.pid}`", "Nothing was changed", "plots/history/.good.lock")
        assert out == ""
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 130
    assert previous_outputs(trained) == before


PARENT = """
import subprocess, sys, time
with open(sys.argv[1], "w") as log:
    child = subprocess.Popen(sys.argv[2:], stdout=log)
print(child.pid, flush=True)
time.sleep(600)
"""


def gone(pid: int) -> bool:
    """Exited (a zombie awaiting its new parent's wait counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux-only")
def test_a_stage_stops_when_its_dvc_parent_is_killed(trained: Path) -> None:
    """The issue's `kill -KILL` of the dvc process alone: the stage gets SIGTERM and cleans up instead of
    running on as an orphan. (DVC_STAGE is what DVC sets for every stage command.)"""
    before = previous_outputs(trained)
    write_params(trained, tiny_params(epochs=1000))
    module, argv = stage_commands("good")["train"]
    log, errors = trained / "train.log", trained / "train.err"
    environment = {**os.environ, "PYTHONPATH": str(REPO), "RNNLAB_THREADS": "1", "PYTHONUNBUFFERED": "1",
                   "DVC_STAGE": "train@good"}
    with errors.open("w") as err:
        parent = subprocess.Popen([sys.executable, "-c", PARENT, str(log), sys.executable, "-m", module, *argv],
                                  cwd=trained, env=environment, stdout=subprocess.PIPE, stderr=err, text=True)
    assert parent.stdout is not None
    trainer = int(parent.stdout.readline())
    try:
        wait_for(lambda: "epoch 1/" in log.read_text() if log.exists() else False, 60, "first epoch")
    finally:
        parent.kill()  # SIGKILL: no chance to pass anything on
        parent.wait()
    wait_for(lambda: gone(trainer), 60, "end of the orphaned trainer")
    assert "interrupted: no output was replaced" in errors.read_text() and "Traceback" not in errors.read_text()
    assert previous_outputs(trained) == before
