"""Outputs written aside and renamed into place, the one-writer lock (rnnlab/core/files.py) and the
parent-death request (rnnlab/core/cli.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rnnlab.core import cli, files
from rnnlab.core.errors import UnwritableError, UserError
from rnnlab.core.files import check_writable, exclusive_writer, outputs_together
from tests.support.read_only import ReadOnly, read_only  # noqa: F401  (read_only is a fixture)
from tests.support.stage_runner import REPO, files_under


def old_outputs(root: Path) -> tuple[Path, Path]:
    """A file output and a folder output with old content."""
    (root / "out/folder").mkdir(parents=True)
    (root / "out/file.txt").write_text("old file")
    (root / "out/folder/part.txt").write_text("old part")
    return root / "out/file.txt", root / "out/folder"


def contents(root: Path) -> dict[str, str]:
    return {name: (root / name).read_text() for name in sorted(files_under(root))}


def write_new(staged: dict[Path, Path], file: Path, folder: Path) -> None:
    staged[file].write_text("new file")
    staged[folder].mkdir()
    (staged[folder] / "part.txt").write_text("new part")


def test_outputs_are_replaced_together_when_the_block_succeeds(tmp_path: Path) -> None:
    file, folder = old_outputs(tmp_path)
    with outputs_together(file, folder) as staged:
        assert staged[file].parent.name.startswith(".file.txt.") and not staged[file].exists()
        write_new(staged, file, folder)
        assert file.read_text() == "old file"  # nothing replaced before the end
    assert contents(tmp_path) == {"out/file.txt": "new file", "out/folder/part.txt": "new part"}


@pytest.mark.parametrize("stop", [RuntimeError("failed"), KeyboardInterrupt()], ids=["failure", "interrupt"])
def test_a_failed_block_leaves_every_old_output(tmp_path: Path, stop: BaseException) -> None:
    file, folder = old_outputs(tmp_path)
    before = contents(tmp_path)
    with pytest.raises(type(stop)), outputs_together(file, folder) as staged:
        write_new(staged, file, folder)
        raise stop
    assert contents(tmp_path) == before


def test_a_live_output_is_written_in_place_when_there_is_nothing_to_keep(tmp_path: Path) -> None:
    history, model = tmp_path / "history", tmp_path / "model.pt"
    history.mkdir()  # as DVC leaves it: its files removed, the folder kept
    with outputs_together(model, history, live=history) as staged:
        assert staged[history] == history
        (history / "epoch.tsv").write_text("1")
        staged[model].write_text("weights")
    assert contents(tmp_path) == {"history/epoch.tsv": "1", "model.pt": "weights"}
    with pytest.raises(RuntimeError):  # now there is a history to keep: the next run writes aside
        with outputs_together(model, history, live=history) as staged:
            assert staged[history] != history
            raise RuntimeError


@pytest.mark.parametrize("existed", [True, False])
def test_a_failed_run_removes_what_it_wrote_in_place(tmp_path: Path, existed: bool) -> None:
    history = tmp_path / "history"
    if existed:
        history.mkdir()
    with pytest.raises(KeyboardInterrupt), outputs_together(history, live=history):
        history.mkdir(exist_ok=True)
        (history / "epoch.tsv").write_text("1")
        raise KeyboardInterrupt
    assert history.is_dir() == existed and files_under(tmp_path) == set()


def test_read_only_folders_are_refused_before_any_work(tmp_path: Path, read_only: ReadOnly) -> None:  # noqa: F811
    file, folder = old_outputs(tmp_path)
    before = contents(tmp_path)
    read_only(folder)  # an old folder output whose files cannot be removed
    with pytest.raises(UnwritableError) as raised, outputs_together(file, folder):
        raise AssertionError("the block ran")
    assert str(raised.value) == (
        f"cannot write {folder}: {folder} is not writable (no permission to add or remove its entries). Make it "
        f"writable (`chmod u+w {folder}`, or `chattr -i {folder}` if it is immutable) and rerun; no output was changed."
    )
    read_only.undo()
    read_only(tmp_path / "out")  # the folder that would take a new file
    with pytest.raises(UnwritableError, match=r"cannot write .*out/new/deeper.json: .*out is not writable"):
        check_writable(tmp_path / "out/new/deeper.json")
    read_only.undo()
    assert contents(tmp_path) == before


def test_a_file_where_a_folder_belongs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("not a folder")
    with pytest.raises(UserError, match=r"cannot write .*models/relu.pt: .*models is a file, not a folder"):
        check_writable(tmp_path / "models/relu.pt")


def test_the_lock_refuses_a_second_writer_and_names_the_first(tmp_path: Path) -> None:
    history = tmp_path / "plots/history/relu"
    lock = history.parent / ".relu.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom rnnlab.core.files import exclusive_writer\n"
         f"with exclusive_writer(Path({str(history)!r}), 'run'):\n    print('held', flush=True)\n    time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as raised, exclusive_writer(history, "training run of relu"):
            raise AssertionError("two writers at once")
        assert str(raised.value) == (
            f"another training run of relu (PID {holder.pid}) is writing {history}; wait for it to end, or stop it "
            f"(`kill {holder.pid}`), then rerun. Nothing was changed. (Lock: {lock}.)"
        )
    finally:
        holder.kill()
        holder.wait()
    with exclusive_writer(history, "run"):  # the kernel dropped the killed holder's lock
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux-only")
def test_the_parent_death_signal_is_requested_only_under_dvc(monkeypatch: pytest.MonkeyPatch) -> None:
    requests: list[int] = []
    monkeypatch.setattr(cli, "stop_with_parent", lambda number=signal.SIGTERM: requests.append(number) or True)
    for environment in ({}, {"DVC_STAGE": "train@relu"}):
        monkeypatch.delenv("DVC_STAGE", raising=False)
        monkeypatch.setenv("DVC_STAGE", environment["DVC_STAGE"]) if environment else None
        handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            cli.run_cli(lambda argv: None, [])
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
    assert requests == [signal.SIGTERM]  # a stage run by hand (nohup ... &) outlives its shell


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux-only")
def test_stop_with_parent_sets_the_request() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    current = ctypes.c_int(0)
    try:
        assert cli.stop_with_parent(signal.SIGTERM) is True
        assert libc.prctl(2, ctypes.byref(current), 0, 0, 0) == 0 and current.value == signal.SIGTERM  # PR_GET_PDEATHSIG
    finally:
        cli.stop_with_parent(0)  # pytest itself must not die with its parent
    assert libc.prctl(2, ctypes.byref(current), 0, 0, 0) == 0 and current.value == 0


def test_a_file_the_block_cannot_read_is_not_reported_as_an_unwritable_output(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), outputs_together(tmp_path / "out.txt"):
        raise PermissionError(13, "Permission denied", str(tmp_path / "input.npy"))


def test_a_refused_write_inside_the_block_names_the_output(tmp_path: Path) -> None:
    output = tmp_path / "xy"
    with pytest.raises(UnwritableError, match=r"cannot write .*/xy/train/X.npy: .*/xy/train is not writable \(Permission denied\)"):
        with files.atomic_directory(output) as staged:
            raise PermissionError(13, "Permission denied", str(staged / "train/X.npy"))


def test_a_second_output_that_cannot_be_staged_leaves_no_temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    real_mkdtemp = files.tempfile.mkdtemp

    def fail_the_second(*args: Any, **kwargs: Any) -> str:
        if made:
            raise PermissionError(13, "Permission denied", str(kwargs["dir"] / "x"))
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(files.tempfile, "mkdtemp", fail_the_second)
    with pytest.raises(UnwritableError), outputs_together(tmp_path / "a.txt", tmp_path / "b.txt"):
        raise AssertionError("the block ran")
    assert not any(tmp_path.iterdir())
