"""Reviews -> tokenized train/valid/test files and the vocabulary (torchtext-legacy semantics).

The vocabulary is built from the train split only: `<unk>`, `<pad>`, then tokens with count
>= data.min_freq, most frequent first, ties broken alphabetically (as torchtext-legacy did),
at most data.vocab_size tokens besides the two specials.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from rnnlab.config.params import DataConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import atomic_path, outputs_together
from rnnlab.core.parallel import ForkedCall, gc_paused
from rnnlab.text.tokenize import SPECIALS, tokenize
from rnnlab.text.vocab import build_vocab, write_vocab

SPLIT_FILES = ("train", "valid", "test")


def split_indices(count: int, valid_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle once with `seed`; the first round(count * valid_ratio) go to valid. Sorted for stable files."""
    permutation = np.random.default_rng(seed).permutation(count)
    valid_count = int(round(count * valid_ratio))
    if valid_count == 0 or valid_count == count:
        raise UserError(
            f"data.valid_ratio={valid_ratio} leaves an empty split of {count} training reviews; choose a ratio "
            f"that keeps at least one review on each side."
        )
    return np.sort(permutation[valid_count:]), np.sort(permutation[:valid_count])


def read_reviews(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"Reviews file {path} not found; run the download stage first (`dvc repro download`).")
    # raw_decode is json.loads without its two whitespace-regex scans per line (~0.1 s here);
    # what it would not reject, text after the object, is checked explicitly.
    decode = json.JSONDecoder().raw_decode
    reviews = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            review, end = decode(line)
            if line[end:].strip():
                raise UserError(f"{path}:{number} holds more than one JSON object; rerun the download stage.")
            reviews.append(review)
    return reviews


Row = tuple[int, int, int, str]  # label, rating, id, space-joined tokens


def write_split(path: Path, rows: list[Row]) -> None:
    """One review per line: label, rating, id, space-joined tokens (tokens never hold whitespace)."""
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(f"{label}\t{rating}\t{review_id}\t{text}\n" for label, rating, review_id, text in rows)


def as_row(review: dict, tokens: list[str]) -> Row:
    return review["label"], review["rating"], review["id"], " ".join(tokens)


def write_tokenized(out_dir: Path, splits: dict[str, list[dict]]) -> None:
    for name, reviews in splits.items():
        write_split(out_dir / f"{name}.tsv", [as_row(review, tokenize(review["text"])) for review in reviews])


def preprocess(reviews: list[dict], config: DataConfig, out_dir: Path, vocab_path: Path) -> dict[str, int]:
    by_split: dict[str, list[dict]] = {"train": [], "test": []}
    for review in reviews:
        by_split[review["split"]].append(review)
    if not by_split["train"] or not by_split["test"]:
        raise UserError("The reviews file has no train or no test reviews; rerun the download stage.")
    train_index, valid_index = split_indices(len(by_split["train"]), config.valid_ratio, config.split_seed)
    train = [by_split["train"][i] for i in train_index]
    others = {"valid": [by_split["train"][i] for i in valid_index], "test": by_split["test"]}
    # Valid and test do not feed the vocabulary, so a forked worker tokenizes and writes them while
    # this process tokenizes, counts and writes train: the two halves take about equal time.
    with ForkedCall(write_tokenized, out_dir, others) as others_written:
        counts: Counter[str] = Counter()
        rows: list[Row] = []
        for review in train:
            # Each token list is counted and dropped at once: reusing its memory for the next review
            # is faster than holding millions of strings (page faults).
            tokens = tokenize(review["text"])
            counts.update(tokens)
            rows.append(as_row(review, tokens))
        write_split(out_dir / "train.tsv", rows)
        vocab = build_vocab(counts, config.vocab_size, config.min_freq)
        others_written.result()  # re-raises the worker's error, if any
    write_vocab(vocab_path, vocab)
    sizes = {"train": len(train)} | {name: len(split) for name, split in others.items()}
    return {name: sizes[name] for name in SPLIT_FILES} | {"vocab": len(vocab) + len(SPECIALS)}


def prepare(reviews_path: Path, out: Path, vocab_path: Path, config: DataConfig) -> None:
    """The stage's work: all three split files and the vocabulary, or none of them."""
    # gc_paused is inherited by the forked worker. All three splits and their vocabulary or none: a failure
    # part-way must not leave a half-filled data/prepared, nor new splits beside an old vocabulary.
    with gc_paused(), outputs_together(out, vocab_path) as staged:
        reviews = read_reviews(reviews_path)
        staged[out].mkdir()
        counts = preprocess(reviews, config, staged[out], staged[vocab_path])
    print("preprocess: " + ", ".join(f"{key} {value}" for key, value in counts.items()))
