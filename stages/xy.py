"""Stage `xy`: token files + vocabulary -> fixed-length id arrays for train, valid and test.

Per split, a directory with X.npy (N, fix_length) int64 token ids, post-padded with `<pad>` and
truncated after fix_length tokens (torchtext-legacy `fix_length`), lengths.npy (N,) true lengths
clamped to >= 1 (an empty review is read as a single `<pad>` step), and y.npy (N,) with
0 = neg, 1 = pos. meta.json tells the model what it needs (input size, classes, length), so
train and evaluate never special-case the dataset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stages.common import StageError, run_cli, write_json
from stages.config import load_params
from stages.dataset import save_split
from stages.preprocess import PAD, SPLIT_FILES, UNK, read_vocab

CLASS_NAMES = ("neg", "pos")


def encode_split(path: Path, index: dict[str, int], fix_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not path.is_file():
        raise StageError(f"{path} not found; run the preprocess stage first (`dvc repro preprocess`).")
    unk, pad = index[UNK], index[PAD]
    labels: list[int] = []
    rows: list[list[int]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            label, _rating, _id, text = line.rstrip("\n").split("\t", 3)
            # Only the first fix_length tokens survive, so only they are looked up.
            tokens = text.split(" ", fix_length)[:fix_length] if text else []
            labels.append(int(label))
            rows.append([index.get(token, unk) for token in tokens])
    x = np.full((len(rows), fix_length), pad, dtype=np.int64)
    lengths = np.empty(len(rows), dtype=np.int64)
    for row_index, ids in enumerate(rows):
        x[row_index, : len(ids)] = ids
        lengths[row_index] = max(len(ids), 1)
    return x, lengths, np.asarray(labels, dtype=np.int64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--vocab", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = load_params().data
    vocab = read_vocab(args.vocab)
    index = {token: position for position, token in enumerate(vocab)}
    for split in SPLIT_FILES:
        x, lengths, y = encode_split(args.prepared / f"{split}.tsv", index, config.fix_length)
        save_split(args.out / split, x, lengths, y)
        print(f"xy {split}: X {x.shape}, mean length {lengths.mean():.1f}, positive {y.mean():.3f}")
    write_json(
        args.out / "meta.json",
        {"input_size": len(vocab), "num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES),
         "sequence_length": config.fix_length, "pad_index": index[PAD]},
    )


if __name__ == "__main__":
    run_cli(main)
