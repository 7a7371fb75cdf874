"""Token files + vocabulary -> fixed-length id arrays per split (the xy stage).

Per split: X.npy (N, fix_length) int64 ids, post-padded with `<pad>` even for `data.pad: pre` (the model
right-aligns; meta.json records it) and truncated per `data.truncate` (head = torchtext-legacy's
fix_length); lengths.npy (N,) clamped to >= 1 (an empty review is one `<pad>` step); y.npy (N,) 0 neg, 1 pos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnlab.config.params import DataConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import atomic_directory, write_json
from rnnlab.core.memory import TOKEN_BYTES, Need, Param, available_memory, check_fits
from rnnlab.core.parallel import ForkedCall, gc_paused
from rnnlab.data.arrays import save_split
from rnnlab.text.prepare import SPLIT_FILES
from rnnlab.text.tokenize import PAD, UNK
from rnnlab.text.vocab import read_vocab

CLASS_NAMES = ("neg", "pos")
# Reviews encoded at a time: each chunk's token strings are freed before the next, so their memory is
# reused instead of faulting in ~0.5 GB of fresh pages for a whole split.
CHUNK_ROWS = 1000


class TokenIds(dict):
    """token -> id; an unknown token maps to `<unk>` inside the C lookup (no Python call per hit)."""

    def __init__(self, vocab: list[str]) -> None:
        super().__init__((token, position) for position, token in enumerate(vocab))
        self.unk = self[UNK]

    def __missing__(self, token: str) -> int:
        return self.unk


def existing(path: Path) -> Path:
    if not path.is_file():
        raise UserError(f"{path} not found; run the preprocess stage first (`dvc repro preprocess`).")
    return path


def kept_tokens(tokens: list[str], fix_length: int, truncate: str) -> list[str]:
    """The at most fix_length tokens a review keeps under `data.truncate`."""
    if len(tokens) <= fix_length:
        return tokens
    if truncate == "head":
        return tokens[:fix_length]
    if truncate == "tail":
        return tokens[len(tokens) - fix_length :]
    head = (fix_length + 1) // 2  # head_tail: an odd token goes to the beginning
    return tokens[:head] + tokens[len(tokens) - (fix_length - head) :]


def truncated_tokens(lines: list[str], fix_length: int, truncate: str) -> tuple[list[str], list[int], list[int]]:
    """The lines' kept tokens as one flat list, plus each line's token count and label."""
    flat: list[str] = []
    counts: list[int] = []
    labels: list[int] = []
    for line in lines:
        label, _rating, _id, text = line.split("\t", 3)
        if truncate == "head":  # only the kept tokens are split off
            tokens = text.split(" ", fix_length) if text else []
            del tokens[fix_length:]
        else:
            tokens = kept_tokens(text.split(" ") if text else [], fix_length, truncate)
        flat += tokens
        counts.append(len(tokens))
        labels.append(int(label))
    return flat, counts, labels


def encode_split(
    path: Path, index: TokenIds, fix_length: int, truncate: str = "head"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Tokens hold no whitespace, so splitting the whole file on "\n" gives exactly its lines.
    lines = existing(path).read_text(encoding="utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    x = np.full((len(lines), fix_length), index[PAD], dtype=np.int64)
    token_counts = np.empty(len(lines), dtype=np.int64)
    labels = np.empty(len(lines), dtype=np.int64)
    positions = np.arange(fix_length)
    for start in range(0, len(lines), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        flat, token_counts[rows], labels[rows] = truncated_tokens(lines[rows], fix_length, truncate)
        ids = np.fromiter(map(index.__getitem__, flat), dtype=np.int64, count=len(flat))
        # Row-major boolean mask: True at each row's first count positions, in the order of `ids`.
        x[rows][positions < token_counts[rows, None]] = ids
    return x, np.maximum(token_counts, 1), labels


def encode_and_save(split: str, prepared: Path, out: Path, index: TokenIds, fix_length: int, truncate: str) -> str:
    """Writes one split's arrays; returns its summary line."""
    x, lengths, y = encode_split(prepared / f"{split}.tsv", index, fix_length, truncate)
    save_split(out / split, x, lengths, y)
    return f"xy {split}: X {x.shape}, mean length {lengths.mean():.1f}, positive {y.mean():.3f}"


def xy_needs(split_reviews: dict[str, int], fix_length: int) -> list[Need]:
    """The peak: test (forked worker) beside the larger of train/valid, plus one chunk mask per process."""
    length = Param("data.fix_length", fix_length, DataConfig.fix_length)
    concurrent_rows = split_reviews.get("test", 0) + max(split_reviews.get("train", 0), split_reviews.get("valid", 0))
    masks = 2 * min(CHUNK_ROWS, max(split_reviews.values(), default=0)) * fix_length  # 1 byte per cell
    return [
        Need("int64 token id arrays (reviews x fix_length)", concurrent_rows * fix_length * TOKEN_BYTES, (length,)),
        Need("padding masks", masks, (length,)),
    ]


def write_xy(prepared: Path, vocab_path: Path, out_dir: Path, config: DataConfig) -> None:
    """All of `out_dir` (train/, valid/, test/, meta.json) or nothing: train must never read a mix."""
    reviews = {}
    for split in SPLIT_FILES:  # newlines counted without decoding, to check memory before encoding
        with existing(prepared / f"{split}.tsv").open("rb") as handle:
            reviews[split] = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    check_fits(xy_needs(reviews, config.fix_length), available_memory(), "memory", "to encode the reviews")
    vocab = read_vocab(vocab_path)
    index = TokenIds(vocab)
    with atomic_directory(out_dir) as out:
        job = (prepared, out, index, config.fix_length, config.truncate)
        # test is half the reviews: a forked worker encodes it while this process does train and valid.
        with gc_paused(), ForkedCall(encode_and_save, "test", *job) as test:
            summaries = [encode_and_save(split, *job) for split in ("train", "valid")]
            summaries.append(test.result())  # re-raises the worker's error, if any
        meta = {"input_size": len(vocab), "num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES)}
        meta |= {"sequence_length": config.fix_length, "pad_index": index[PAD], "pad": config.pad}
        write_json(out / "meta.json", meta)
    print("\n".join(summaries))
