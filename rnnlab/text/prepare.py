"""Reviews -> tokenized train/valid/test files and the train split's vocabulary (torchtext-legacy semantics)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from rnnlab.config.params import DataConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import outputs_together
from rnnlab.core.parallel import ForkedCall, gc_paused
from rnnlab.text.tokenize import SPECIALS, tokenize
from rnnlab.text.vocab import build_vocab, write_vocab

SPLIT_FILES = ("train", "valid", "test")
Row = tuple[int, int, int, str]  # label, rating, id, space-joined tokens (tokens never hold whitespace)


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
    # raw_decode is json.loads without its two whitespace scans per line; text after the object is checked here.
    decode = json.JSONDecoder().raw_decode
    reviews = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            review, end = decode(line)
            if line[end:].strip():
                raise UserError(f"{path}:{number} holds more than one JSON object; rerun the download stage.")
            reviews.append(review)
    return reviews


def write_split(path: Path, rows: list[Row]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(f"{label}\t{rating}\t{review_id}\t{text}\n" for label, rating, review_id, text in rows)


def as_row(review: dict, tokens: list[str]) -> Row:
    return review["label"], review["rating"], review["id"], " ".join(tokens)


def write_tokenized(out_dir: Path, splits: dict[str, list[dict]]) -> None:
    for name, reviews in splits.items():
        write_split(out_dir / f"{name}.tsv", [as_row(review, tokenize(review["text"])) for review in reviews])


def preprocess(reviews: list[dict], config: DataConfig, out_dir: Path, vocab_path: Path) -> dict[str, int]:
    """Writes the three splits into `out_dir` and the vocabulary; returns their sizes."""
    by_split: dict[str, list[dict]] = {"train": [], "test": []}
    for review in reviews:
        by_split[review["split"]].append(review)
    if not by_split["train"] or not by_split["test"]:
        raise UserError("The reviews file has no train or no test reviews; rerun the download stage.")
    train_index, valid_index = split_indices(len(by_split["train"]), config.valid_ratio, config.split_seed)
    train = [by_split["train"][i] for i in train_index]
    others = {"valid": [by_split["train"][i] for i in valid_index], "test": by_split["test"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    # Valid and test do not feed the vocabulary: a forked worker writes them while this process does train.
    with ForkedCall(write_tokenized, out_dir, others) as others_written:
        counts: Counter[str] = Counter()
        rows: list[Row] = []
        for review in train:
            # Counted and dropped at once: reusing a token list's memory beats holding millions of strings.
            tokens = tokenize(review["text"])
            counts.update(tokens)
            rows.append(as_row(review, tokens))
        write_split(out_dir / "train.tsv", rows)
        vocab = build_vocab(counts, config.vocab_size, config.min_freq)
        others_written.result()  # re-raises the worker's error, if any
    write_vocab(vocab_path, vocab)
    return {"train": len(train), "valid": len(others["valid"]), "test": len(others["test"]), "vocab": len(vocab) + len(SPECIALS)}


def prepare(reviews_path: Path, out: Path, vocab_path: Path, config: DataConfig) -> None:
    """All three split files and their vocabulary, or none of them (gc_paused is inherited by the worker)."""
    with gc_paused(), outputs_together(out, vocab_path) as staged:
        reviews = read_reviews(reviews_path)
        counts = preprocess(reviews, config, staged[out], staged[vocab_path])
    print("preprocess: " + ", ".join(f"{key} {value}" for key, value in counts.items()))
