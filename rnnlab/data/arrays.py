"""The X/lengths/y arrays every task writes and train/evaluate read (one format for all datasets)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from rnnlab.core.errors import UserError
from rnnlab.core.files import atomic_path, read_json

if TYPE_CHECKING:  # torch is imported where tensors are made: `xy` only writes arrays, and torch's import costs ~1.4 s
    import torch

ARRAYS = ("X", "lengths", "y")


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, T) token ids
    lengths: torch.Tensor  # (N,) true lengths, >= 1
    y: torch.Tensor  # (N,) class index

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sequence_length(self) -> int:
        return int(self.x.shape[1])


@dataclass(frozen=True)
class Meta:
    input_size: int
    num_classes: int
    class_names: tuple[str, ...]
    sequence_length: int
    pad: str = "post"  # data.pad: X is stored post-padded; "pre" is applied inside the model


class WriteThrough:
    """A file handle numpy does not recognise as a file, so np.save writes through `write()`.

    Given a real file, np.save uses ndarray.tofile, which reports a full disk as a bare
    "N requested and M written" OSError without errno; `write()` keeps ENOSPC/EFBIG, so the
    stage can say what happened. Same bytes, same speed (np.save writes 16 MiB chunks).
    """

    def __init__(self, handle: BinaryIO) -> None:
        self.write = handle.write


def save_split(directory: Path, x: np.ndarray, lengths: np.ndarray, y: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in zip(ARRAYS, (x, lengths, y)):
        with atomic_path(directory / f"{name}.npy") as temporary, temporary.open("wb") as handle:
            np.save(WriteThrough(handle), array)


def load_split(data_dir: Path, split: str) -> Split:
    import torch

    directory = Path(data_dir) / split
    arrays = []
    for name in ARRAYS:
        path = directory / f"{name}.npy"
        if not path.is_file():
            raise UserError(f"{path} not found; run the stage that writes {data_dir} first (`dvc repro`).")
        arrays.append(torch.from_numpy(np.load(path)))
    x, lengths, y = arrays
    if not (x.ndim == 2 and lengths.shape == y.shape == (x.shape[0],)):
        raise UserError(f"{directory}: X, lengths and y disagree in shape; rerun the stage that writes it.")
    return Split(x=x.long(), lengths=lengths.long(), y=y.long())


def load_meta(data_dir: Path) -> Meta:
    raw = read_json(Path(data_dir) / "meta.json", "dataset metadata", "Run the stage that writes it first (`dvc repro`).")
    return Meta(
        input_size=int(raw["input_size"]),
        num_classes=int(raw["num_classes"]),
        class_names=tuple(raw["class_names"]),
        sequence_length=int(raw["sequence_length"]),
        pad=str(raw.get("pad", "post")),
    )
