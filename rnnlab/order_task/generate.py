"""The temporal-order task (Hochreiter & Schmidhuber 1997, experiment 6a), in the xy stage's array format.

A sequence is E, random a/b/c/d, B, with one X-or-Y in the early window and one in the late window
(0-based, inclusive); the class is the pair: XX -> Q, XY -> R, YX -> S, YY -> U. Lengths vary from
min_length to max_length; classes are balanced exactly; everything follows from `order.data.seed`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnlab.config.params import OrderDataConfig
from rnnlab.core.files import atomic_directory, write_json
from rnnlab.data.arrays import save_split

SYMBOLS = ("<pad>", "E", "B", "a", "b", "c", "d", "X", "Y")
INDEX = {symbol: position for position, symbol in enumerate(SYMBOLS)}
CLASS_NAMES = ("Q", "R", "S", "U")  # XX, XY, YX, YY
SPLIT_NAMES = ("train", "valid", "test")


def generate(count: int, config: OrderDataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return X (count, max_length) symbol ids post-padded with <pad>, lengths (count,), y (count,)."""
    lengths = rng.integers(config.min_length, config.max_length + 1, size=count)
    x = rng.integers(INDEX["a"], INDEX["d"] + 1, size=(count, config.max_length))
    steps = np.arange(config.max_length)
    x[steps >= lengths[:, None]] = INDEX["<pad>"]
    rows = np.arange(count)
    x[:, 0] = INDEX["E"]
    x[rows, lengths - 1] = INDEX["B"]
    y = rng.permutation(np.arange(count) % len(CLASS_NAMES))
    early = rng.integers(config.early_window[0], config.early_window[1] + 1, size=count)
    late = rng.integers(config.late_window[0], config.late_window[1] + 1, size=count)
    # Class bits: first symbol is Y for S and U (y >= 2), second is Y for R and U (odd y).
    x[rows, early] = np.where(y >= 2, INDEX["Y"], INDEX["X"])
    x[rows, late] = np.where(y % 2 == 1, INDEX["Y"], INDEX["X"])
    return x.astype(np.int64), lengths.astype(np.int64), y.astype(np.int64)


def write_order_data(config: OrderDataConfig, out_dir: Path) -> None:
    """All splits and meta.json in `out_dir`, or nothing."""
    sizes = {"train": config.train_size, "valid": config.valid_size, "test": config.test_size}
    summaries = []
    with atomic_directory(out_dir) as out:
        for split_index, split in enumerate(SPLIT_NAMES):
            # One independent stream per split, so changing one split's size leaves the others intact.
            rng = np.random.default_rng([config.seed, split_index])
            x, lengths, y = generate(sizes[split], config, rng)
            save_split(out / split, x, lengths, y)
            summaries.append(
                f"order {split}: {len(y)} sequences, lengths {lengths.min()}-{lengths.max()}, "
                f"e.g. {''.join(SYMBOLS[symbol] for symbol in x[0, : lengths[0]])} -> {CLASS_NAMES[y[0]]}"
            )
        meta = {"input_size": len(SYMBOLS), "num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES)}
        write_json(out / "meta.json", meta | {"sequence_length": config.max_length, "pad_index": INDEX["<pad>"]})
    print("\n".join(summaries))
