"""The X/lengths/y arrays every task writes and train/evaluate read (one format for all datasets)."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from rnnlab.core.errors import UserError
from rnnlab.core.files import PIPELINE_FILE, atomic_path, load_yaml, pipeline_vars, read_json

if TYPE_CHECKING:  # torch is imported where tensors are made: `xy` only writes arrays, and torch's import costs ~1.4 s
    import torch

ARRAYS = ("X", "lengths", "y")
# The .npy header versions np.save writes (3.0 only for non-Latin-1 field names, which int arrays lack).
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


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
    """A handle numpy does not take for a file, so np.save calls `write()`, which keeps a full disk's errno
    (ndarray.tofile, used for real files, raises a bare "N requested and M written"). Same bytes, same speed."""

    def __init__(self, handle: BinaryIO) -> None:
        self.write = handle.write


def save_split(directory: Path, x: np.ndarray, lengths: np.ndarray, y: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in zip(ARRAYS, (x, lengths, y), strict=True):
        with atomic_path(directory / f"{name}.npy") as temporary, temporary.open("wb") as handle:
            np.save(WriteThrough(handle), array)


def repair_hint(data_dir: Path) -> str:
    """How to get good arrays back: from the DVC cache, or by rerunning the dvc.yaml stage whose outs name them."""
    stage = None
    with contextlib.suppress(OSError, UserError, AttributeError, TypeError, ValueError):
        document = load_yaml(PIPELINE_FILE.read_text(encoding="utf-8"), str(PIPELINE_FILE))
        variables = pipeline_vars(document)
        for name, body in (document.get("stages") or {}).items():
            for out in body.get("outs") or [] if "foreach" not in body else []:
                resolved = Template(str(next(iter(out)) if isinstance(out, dict) else out)).safe_substitute(variables)
                stage = name if os.path.abspath(resolved) == os.path.abspath(data_dir) else stage
    rebuild = f"`dvc repro {stage}`" if stage else "rerun the stage that writes it (`dvc repro`)"
    return f"Restore it with `dvc checkout {data_dir}`, or rebuild it: {rebuild}."


def read_array(path: Path, dimensions: int, hint: str) -> np.ndarray:
    """One .npy file as int64, refused with one line unless header, dtype, dimensions and size on disk are right."""
    if not path.is_file():
        raise UserError(f"{path} not found. {hint}")
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in HEADER_READERS:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran_order, dtype = HEADER_READERS[version](handle)
            if dtype.kind not in "iu":
                raise ValueError(f"it holds {dtype} values, not integers")
            if len(shape) != dimensions:
                raise ValueError(f"it has {len(shape)} dimensions {tuple(shape)}, not {dimensions}")
            count = math.prod(shape)
            expected, actual = handle.tell() + count * dtype.itemsize, os.fstat(handle.fileno()).st_size
            if actual != expected:
                raise ValueError(
                    f"it is truncated ({actual:,} of {expected:,} bytes)"
                    if actual < expected
                    else f"it has {actual - expected:,} bytes past its data"
                )
            array = np.fromfile(handle, dtype=dtype, count=count)
    except ValueError as error:  # numpy's own header checks raise ValueError too (bad magic, short header)
        raise UserError(f"{path} is damaged: {error}. {hint}") from error
    return array.reshape(shape, order="F" if fortran_order else "C").astype(np.int64, copy=False)


def check_range(path: Path, array: np.ndarray, low: int, high: int, what: str, hint: str) -> None:
    """Every value of `array` in low..high (inclusive), else one line naming the first one outside."""
    if array.size and (int(array.min()) < low or int(array.max()) > high):
        position = int(np.flatnonzero((array.ravel() < low) | (array.ravel() > high))[0])
        where = np.unravel_index(position, array.shape)
        raise UserError(
            f"{path} is damaged: it holds {what} {int(array.ravel()[position])} at "
            f"{'row' if array.ndim == 1 else 'row, step'} {', '.join(map(str, where))}; {what}s must be "
            f"in {low}..{high}. {hint}"
        )


def load_split(data_dir: Path, split: str) -> Split:
    """One split's arrays, checked against meta.json (vectorised: ~20 ms for 25,000 x 200): X (N, T) token ids in
    0..input_size-1, lengths in 1..T, y in 0..classes-1. A damaged file is one line naming it and the fix."""
    import torch

    meta = load_meta(data_dir)
    hint = repair_hint(Path(data_dir))
    directory = Path(data_dir) / split
    x, lengths, y = (read_array(directory / f"{name}.npy", 2 if name == "X" else 1, hint) for name in ARRAYS)
    rows = x.shape[0]
    if rows == 0:
        raise UserError(f"{directory / 'X.npy'} is damaged: it holds no examples. {hint}")
    if x.shape[1] != meta.sequence_length:
        raise UserError(
            f"{directory / 'X.npy'} is damaged: its rows have {x.shape[1]} steps but meta.json says "
            f"{meta.sequence_length}. {hint}"
        )
    for name, array in (("lengths", lengths), ("y", y)):
        if array.shape != (rows,):
            raise UserError(
                f"{directory / f'{name}.npy'} is damaged: it holds {array.shape[0]} values for {rows} rows of X.npy. {hint}"
            )
    check_range(directory / "X.npy", x, 0, meta.input_size - 1, "token id", hint)
    check_range(directory / "lengths.npy", lengths, 1, meta.sequence_length, "length", hint)
    check_range(directory / "y.npy", y, 0, meta.num_classes - 1, "label", hint)
    return Split(x=torch.from_numpy(x), lengths=torch.from_numpy(lengths), y=torch.from_numpy(y))


def load_meta(data_dir: Path) -> Meta:
    """meta.json, checked: positive sizes, a class name per class, a known padding side."""
    path = Path(data_dir) / "meta.json"
    hint = repair_hint(Path(data_dir))
    raw = read_json(path, "dataset metadata", hint)
    try:
        input_size, num_classes, steps = (_count(raw[key]) for key in ("input_size", "num_classes", "sequence_length"))
        meta = Meta(input_size, num_classes, tuple(str(name) for name in raw["class_names"]), steps, str(raw.get("pad", "post")))
    except (KeyError, TypeError, ValueError) as error:
        missing = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise UserError(f"{path} is damaged ({missing}). {hint}") from error
    if meta.num_classes < 2 or len(meta.class_names) != meta.num_classes or meta.pad not in ("post", "pre"):
        raise UserError(
            f"{path} is damaged ({meta.num_classes} classes named {list(meta.class_names)}, pad {meta.pad!r}). {hint}"
        )
    return meta


def _count(value: object) -> int:
    """A size from meta.json: a whole number >= 1 (JSON true or 2.5 are not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} where a whole number >= 1 belongs")
    return value
