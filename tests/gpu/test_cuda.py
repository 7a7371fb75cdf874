"""The gpu tier: tiny train + evaluate through the stage modules on CUDA, twice, the same bits (issue 31).

Skipped without a CUDA GPU; on one, `python -m pytest -m gpu tests/gpu` or `python -m bench --only gpu`
(docs/reproducibility.md says how to carry its Python packages to a machine without network).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from tests.stages.test_training_faults import tiny_params, write_xy
from tests.support.stage_runner import run_stage, stage_commands, write_params

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch: the gpu tier runs on a GPU machine"),
]
BITS = ("models/good.pt", "metrics/good.json", "plots/predictions/good.csv")  # what must not move on a rerun


def train_and_evaluate(directory: Path, cell: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict:
    directory.mkdir()
    monkeypatch.chdir(directory)
    params = tiny_params(device="cuda")
    params["model"]["cell"], params["variants"] = cell, {"good": {}}
    write_params(directory, params)
    write_xy(directory / "data/xy")
    for stage in ("train", "evaluate"):
        module, argv = stage_commands("good")[stage]
        code, _out, err = run_stage(module, argv, capsys)
        assert code == 0, err
    return json.loads((directory / "metrics/details/good.json").read_text())


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_cuda_training_gives_the_same_bits_twice(cell: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    details = [train_and_evaluate(tmp_path / run, cell, monkeypatch, capsys) for run in ("first", "second")]
    digests = [{name: hashlib.md5((tmp_path / run / name).read_bytes()).hexdigest() for name in BITS} for run in ("first", "second")]
    assert digests[0] == digests[1]
    environment = details[0]["environment"]
    assert environment["device"] == "cuda" and environment["gpu"] == torch.cuda.get_device_name(0), environment
    assert environment["cuda"] == torch.version.cuda and environment["cudnn"] == torch.backends.cudnn.version(), environment
    assert environment["driver"] != "unknown", environment
