"""Issue 6, training and evaluation: divergence, interrupts, checkpoint safety, a missing CUDA device.

Tiny synthetic X/y arrays (no archive needed) and tiny models keep each test well under a few seconds.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnlab.config.params import ModelConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import write_json
from rnnlab.data.arrays import save_split
from rnnlab.model.classifier import load_checkpoint
from rnnlab.runtime.environment import resolve_device
from rnnlab.training.history import HISTORY_METRICS, metric_file
from tests.unit.model.test_checkpoint import DAMAGES, damage_checkpoint
from tests.support.stage_runner import (
    REPO,
    assert_user_error,
    outputs_under,
    repo_params,
    run_stage,
    stage_commands,
    write_params,
)

TINY_MODEL = {"cell": "rnn", "nonlinearity": "tanh", "embedding_dim": 8, "hidden_size": 8, "head_size": 8, "dropout": 0.0}
VARIANTS = {
    "good": {},
    # Adam with lr 1e3 on a relu RNN: the loss turns NaN/inf within the first epoch.
    "blowup": {"model": {"nonlinearity": "relu"}, "train": {"lr": 1000.0}},
    # One step per epoch: the step that blows the weights up is the epoch's last one, so only the
    # validation loss shows it.
    "blowup_at_epoch_end": {"model": {"nonlinearity": "relu"}, "train": {"lr": 1000.0, "batch_size": 64}},
}


def write_xy(directory: Path, train_size: int = 64, length: int = 12, vocabulary: int = 30) -> None:
    generator = np.random.default_rng(0)
    for split, size in (("train", train_size), ("valid", 32), ("test", 32)):
        x = generator.integers(2, vocabulary, (size, length))
        save_split(directory / split, x, generator.integers(1, length + 1, size), generator.integers(0, 2, size))
    write_json(directory / "meta.json", {"input_size": vocabulary, "num_classes": 2, "class_names": ["neg", "pos"],
                                         "sequence_length": length, "pad_index": 1})


def tiny_params(**train: Any) -> dict[str, Any]:
    params = repo_params()
    params["model"] = {**params["model"], **TINY_MODEL}
    params["train"] = {**params["train"], "epochs": 2, "batch_size": 16, "lr": 0.01, "device": "cpu", **train}
    params["variants"] = copy.deepcopy(VARIANTS)
    return params


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNLAB_THREADS", "1")
    write_params(tmp_path, tiny_params())
    write_xy(tmp_path / "data/xy")
    return tmp_path


def run_variant(stage: str, variant: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    module, argv = stage_commands(variant)[stage]
    return run_stage(module, argv, capsys)


def outputs(directory: Path) -> set[str]:
    """Everything a stage wrote (inputs excluded), temporary files included."""
    return {name for name in outputs_under(directory) if not name.startswith("data/xy")}


def trained_outputs(variant: str) -> set[str]:
    """What a finished train stage leaves: checkpoint, DVCLive history (summary + one TSV per metric), timings."""
    history = {f"plots/history/{variant}/metrics.json"} | {f"plots/history/{variant}/plots/metrics/{name}.tsv" for name in HISTORY_METRICS}
    return {f"models/{variant}.pt", f"reports/timings/{variant}.json"} | history


def strict_json(path: Path) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_divergence_stops_cleanly_and_every_variant_still_gets_metrics(workdir, capsys):
    for variant in VARIANTS:
        code, out, err = run_variant("train", variant, capsys)
        assert code == 0, err
        if variant != "good":
            assert "diverged" in out
        code, _out, err = run_variant("evaluate", variant, capsys)
        assert code == 0, err
    metrics = {variant: strict_json(workdir / f"metrics/details/{variant}.json") for variant in VARIANTS}
    assert metrics["good"]["diverged"] is False
    for variant in ("blowup", "blowup_at_epoch_end"):
        assert metrics[variant]["diverged"] is True
        assert set(metrics[variant]) == set(metrics["good"])  # the same keys, so `dvc metrics diff` lines up
        assert set(strict_json(workdir / f"metrics/{variant}.json")) == set(strict_json(workdir / "metrics/good.json"))
        assert np.isfinite(metrics[variant]["loss"])  # the kept weights are from before the blow-up
        checkpoint = torch.load(workdir / f"models/{variant}.pt", weights_only=True)
        assert checkpoint["diverged"] is True
        assert all(torch.isfinite(tensor).all() for tensor in checkpoint["state_dict"].values())
        strict_json(workdir / f"plots/history/{variant}/metrics.json")
        history = metric_file(workdir / f"plots/history/{variant}", "valid_accuracy")  # absent: no epoch finished
        assert (len(history.read_text().splitlines()) - 1 if history.is_file() else 0) == metrics[variant]["epochs_trained"]
    assert not [name for name in outputs(workdir) if name.endswith(".tmp")]


def test_checkpoint_from_a_different_config_is_refused(workdir, capsys):
    assert run_variant("train", "good", capsys)[0] == 0
    params = tiny_params()
    params["variants"]["good"] = {"model": {"hidden_size": 16}}
    write_params(workdir, params)
    code, _out, err = run_variant("evaluate", "good", capsys)
    assert_user_error(code, err, "models/good.pt", "different model config", "hidden_size: checkpoint 8 vs params 16", "dvc repro")
    assert not (workdir / "metrics").exists()


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))  # full pickle would create the marker file


def test_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "config": {}, "payload": RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(UserError, match=r"weights_only=True") as raised:
        load_checkpoint(path)
    assert "\n" not in str(raised.value)
    assert not marker.exists()


def test_checkpoints_are_loaded_with_weights_only(workdir, capsys, monkeypatch):
    assert run_variant("train", "good", capsys)[0] == 0
    calls: list[dict[str, Any]] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model, checkpoint = load_checkpoint(workdir / "models/good.pt", expected=ModelConfig(**TINY_MODEL))
    assert calls and all(call.get("weights_only") is True for call in calls)
    assert checkpoint["variant"] == "good"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_cuda_requested_without_cuda_is_a_clear_error(workdir, capsys, stage):
    if stage == "evaluate":
        assert run_variant("train", "good", capsys)[0] == 0
    write_params(workdir, tiny_params(device="cuda"))
    before = outputs(workdir)
    code, _out, err = run_variant(stage, "good", capsys)
    assert_user_error(code, err, "train.device=cuda", "no CUDA GPU", "train.device=auto or cpu")
    assert outputs(workdir) == before


@pytest.mark.parametrize("where", ["inside the checkpoint write", "between checkpoint and history summary"])
def test_interrupt_while_saving_leaves_no_output(workdir, capsys, monkeypatch, where):
    from rnnlab.model import classifier as checkpoint
    from rnnlab.training import history

    def interrupted(*args: Any, **kwargs: Any) -> None:
        if where == "inside the checkpoint write":
            args[1].write(b"half a checkpoint")  # save_checkpoint hands torch.save an open file
        raise KeyboardInterrupt

    if where == "inside the checkpoint write":
        monkeypatch.setattr(checkpoint.torch, "save", interrupted)
    else:
        monkeypatch.setattr(history.EpochLog, "finish", interrupted)
    code, _out, err = run_variant("train", "good", capsys)
    assert code == 130 and "interrupted" in err
    assert outputs(workdir) == set()  # no checkpoint, no (partial) history, no temporary file
    monkeypatch.undo()
    monkeypatch.chdir(workdir)
    assert run_variant("train", "good", capsys)[0] == 0  # rerunning finishes the job
    assert outputs(workdir) == trained_outputs("good")


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_training_leaves_no_output_and_rerun_finishes(workdir, capsys, signal_number):
    # Enough work that training is surely still running when the signal lands (1000 epochs).
    write_params(workdir, tiny_params(epochs=1000))
    module, argv = stage_commands("good")["train"]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "RNNLAB_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", module, *argv], cwd=workdir, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:  # wait until an epoch has finished: training is under way
            if line.startswith("epoch 1/"):
                break
        process.send_signal(signal_number)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert outputs(workdir) == set()
    write_params(workdir, tiny_params())
    assert run_variant("train", "good", capsys)[0] == 0  # rerunning finishes the job
    assert outputs(workdir) == trained_outputs("good")


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto").type == expected


# --- issue 25: damaged arrays ---------------------------------------------------------------------


def empty(path: Path) -> None:
    path.write_bytes(b"")


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def zero_lengths(path: Path) -> None:
    np.save(path, np.zeros_like(np.load(path)))


@pytest.mark.parametrize(("stage", "name", "damage", "problem"), [
    ("evaluate", "X", truncated, "is truncated"),
    ("evaluate", "y", empty, "EOF: reading magic string"),
    ("evaluate", "lengths", truncated, "is truncated"),
    ("evaluate", "lengths", zero_lengths, "holds length 0 at row 0; lengths must be in 1..12"),
    ("train", "y", truncated, "is truncated"),
], ids=["truncated-X", "empty-y", "truncated-lengths", "all-lengths-0", "train-truncated-y"])
def test_damaged_arrays_are_one_line_naming_the_file_and_the_fix(workdir, capsys, stage, name, damage, problem):
    """The issue's ValueError/EOFError/RuntimeError tracebacks from evaluate, as one `error:` line each."""
    shutil.copy(REPO / "dvc.yaml", workdir / "dvc.yaml")  # the fix names the stage that writes data/xy
    if stage == "evaluate":
        assert run_variant("train", "good", capsys)[0] == 0
    split = "test" if stage == "evaluate" else "train"
    damage(workdir / f"data/xy/{split}/{name}.npy")
    before = outputs(workdir)
    code, _out, err = run_variant(stage, "good", capsys)
    assert_user_error(code, err, f"data/xy/{split}/{name}.npy is damaged", problem,
                      "Restore it with `dvc checkout data/xy`, or rebuild it: `dvc repro xy`.")
    assert outputs(workdir) == before


# --- boundaries: a damaged checkpoint at evaluate, a bad RNNLAB_THREADS ---------------------------


@pytest.mark.parametrize("damage", DAMAGES)
def test_evaluate_refuses_a_damaged_checkpoint_in_one_line(workdir, capsys, damage):
    assert run_variant("train", "good", capsys)[0] == 0
    damage_checkpoint(workdir / "models/good.pt", damage)
    before = outputs(workdir)
    code, _out, err = run_variant("evaluate", "good", capsys)
    assert_user_error(code, err, "models/good.pt", "dvc repro")
    assert outputs(workdir) == before  # no metrics, no .tmp left


def test_evaluate_refuses_a_checkpoint_without_the_run_entries_in_one_line(workdir, capsys):
    """A checkpoint saved before the train stage recorded epochs_trained and best_valid_accuracy."""
    assert run_variant("train", "good", capsys)[0] == 0
    path = workdir / "models/good.pt"
    raw = torch.load(path, weights_only=True)
    del raw["epochs_trained"], raw["best_valid_accuracy"]
    torch.save(raw, path)
    code, _out, err = run_variant("evaluate", "good", capsys)
    assert_user_error(code, err, "models/good.pt has no epochs_trained, best_valid_accuracy", "dvc repro")


@pytest.mark.parametrize("threads", ["abc", "1.5", "-1", "99999"])
def test_a_bad_thread_count_is_one_line_naming_the_range(workdir, capsys, monkeypatch, threads):
    monkeypatch.setenv("RNNLAB_THREADS", threads)
    code, _out, err = run_variant("train", "good", capsys)
    assert_user_error(code, err, f"RNNLAB_THREADS={threads} is not a thread count", f"1..{os.cpu_count()}")
    assert outputs(workdir) == set()
