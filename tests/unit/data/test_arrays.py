"""Every array read checks the .npy header, dtype, shape and value ranges (rnnlab/data/arrays.py): a
damaged file is one line naming it and the fix (`dvc checkout`, or rerunning the stage that writes it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from rnnlab.core.errors import UserError
from rnnlab.data.arrays import load_meta, load_split, save_split
from tests.support.stage_runner import REPO

STEPS, VOCABULARY = 6, 20


def write_data(directory: Path, rows: int = 8) -> Path:
    """A valid dataset like the xy stage's: train/ with X, lengths, y, and meta.json."""
    generator = np.random.default_rng(0)
    save_split(directory / "train", generator.integers(0, VOCABULARY, (rows, STEPS)), generator.integers(1, STEPS + 1, rows),
               generator.integers(0, 2, rows))
    meta = {"input_size": VOCABULARY, "num_classes": 2, "class_names": ["neg", "pos"], "sequence_length": STEPS, "pad": "post"}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data/xy in a folder holding the project's dvc.yaml, so the fix can name the stage that writes it."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    return write_data(Path("data/xy"))


def resave(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    np.save(path, change(np.load(path)))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


CORRUPTIONS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated X": ("X", truncate, "is truncated (492 of 512 bytes)"),
    "empty y": ("y", lambda path: path.write_bytes(b""), "EOF: reading magic string"),
    "not a .npy": ("lengths", lambda path: path.write_text("<html>not found</html>"), "the magic string is not correct"),
    "trailing bytes": ("y", lambda path: path.write_bytes(path.read_bytes() + b"junk"), "has 4 bytes past its data"),
    "float X": ("X", lambda path: resave(path, lambda x: x.astype(np.float32)), "holds float32 values, not integers"),
    "1-D X": ("X", lambda path: resave(path, np.ravel), "has 1 dimensions (48,), not 2"),
    "token id past the vocabulary": ("X", lambda path: resave(path, lambda x: np.where(np.arange(x.size).reshape(x.shape) == 13, VOCABULARY, x)),
                                     "holds token id 20 at row, step 2, 1; token ids must be in 0..19"),
    "negative token id": ("X", lambda path: resave(path, lambda x: x - 30), "token ids must be in 0..19"),
    "all lengths 0": ("lengths", lambda path: resave(path, np.zeros_like), "holds length 0 at row 0; lengths must be in 1..6"),
    "length past the steps": ("lengths", lambda path: resave(path, lambda lengths: lengths + STEPS), "lengths must be in 1..6"),
    "label 2": ("y", lambda path: resave(path, lambda y: y + 2), "labels must be in 0..1"),
    "fewer labels": ("y", lambda path: resave(path, lambda y: y[:-1]), "holds 7 values for 8 rows of X.npy"),
    "no rows": ("X", lambda path: resave(path, lambda x: x[:0]), "holds no examples"),
    "missing": ("X", lambda path: path.unlink(), "not found."),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_damaged_array_is_one_line_naming_it_and_the_fix(data: Path, name: str) -> None:
    array, damage, problem = CORRUPTIONS[name]
    damage(data / "train" / f"{array}.npy")
    with pytest.raises(UserError) as raised:
        load_split(data, "train")
    message = str(raised.value)
    assert message.startswith(f"data/xy/train/{array}.npy ") and problem in message, message
    assert message.endswith("Restore it with `dvc checkout data/xy`, or rebuild it: `dvc repro xy`.") and "\n" not in message


def test_the_order_task_data_names_its_own_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    order = write_data(Path("data/order"))
    truncate(order / "train/y.npy")
    with pytest.raises(UserError, match=r"`dvc checkout data/order`, or rebuild it: `dvc repro order_data`\.$"):
        load_split(order, "train")


def test_away_from_the_repository_the_fix_is_generic(tmp_path: Path) -> None:
    write_data(tmp_path)
    (tmp_path / "train/y.npy").write_bytes(b"")
    with pytest.raises(UserError, match=r"or rebuild it: rerun the stage that writes it \(`dvc repro`\)\.$"):
        load_split(tmp_path, "train")


@pytest.mark.parametrize(("change", "problem"), [
    (lambda meta: meta.pop("input_size"), "(no 'input_size')"),
    (lambda meta: meta.update(num_classes="2"), "('2' where a whole number >= 1 belongs)"),
    (lambda meta: meta.update(sequence_length=0), "(0 where a whole number >= 1 belongs)"),
    (lambda meta: meta.update(class_names=["neg"]), "(2 classes named ['neg'], pad 'post')"),
    (lambda meta: meta.update(pad="middle"), "pad 'middle'"),
])
def test_a_damaged_meta_json_is_one_line(data: Path, change: Callable[[dict], object], problem: str) -> None:
    meta = json.loads((data / "meta.json").read_text())
    change(meta)
    (data / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError) as raised:
        load_meta(data)
    assert str(raised.value).startswith("data/xy/meta.json is damaged ") and problem in str(raised.value)


def test_a_good_split_loads_as_int64_tensors(data: Path) -> None:
    np.save(data / "train/y.npy", np.load(data / "train/y.npy").astype(">i4"))  # another integer type loads too
    split = load_split(data, "train")
    assert {split.x.dtype, split.lengths.dtype, split.y.dtype} == {torch.int64}
    assert tuple(split.x.shape) == (8, STEPS) and len(split) == 8
