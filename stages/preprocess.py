"""Stage `preprocess`: tokenize like torchtext-legacy, split train/valid, build the vocabulary.

torchtext is discontinued (its last release fails to load with current torch), so its legacy
semantics are reproduced here:

    tokens = str.split(text) -> lowercase -> remove "<br" -> delete punctuation characters -> drop empty

`tokenize` does the same in whole-string C-level operations: "<br" and punctuation contain no
whitespace, so removing them before or after splitting gives identical tokens (tests check this
against the per-token reference).

The vocabulary is built from the train split only: `<unk>`, `<pad>`, then tokens with count
>= data.min_freq, most frequent first, ties broken alphabetically (as torchtext-legacy did),
at most data.vocab_size tokens besides the two specials.
"""

from __future__ import annotations

import argparse
import json
import string
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from stages.common import StageError, atomic_path, run_cli
from stages.config import DataConfig, load_params

UNK, PAD = "<unk>", "<pad>"
SPECIALS = (UNK, PAD)
SPLIT_FILES = ("train", "valid", "test")
_DELETE_PUNCTUATION = str.maketrans("", "", string.punctuation)


def tokenize(text: str) -> list[str]:
    return text.lower().replace("<br", "").translate(_DELETE_PUNCTUATION).split()


def tokenize_reference(text: str) -> list[str]:
    """The legacy per-token pipeline, kept as the executable specification of `tokenize`."""
    tokens = [token.lower() for token in text.split()]
    tokens = [token.replace("<br", "") for token in tokens]
    tokens = ["".join(char for char in token if char not in string.punctuation) for token in tokens]
    return [token for token in tokens if token]


def split_indices(count: int, valid_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle once with `seed`; the first round(count * valid_ratio) go to valid. Sorted for stable files."""
    permutation = np.random.default_rng(seed).permutation(count)
    valid_count = int(round(count * valid_ratio))
    if valid_count == 0 or valid_count == count:
        raise StageError(
            f"data.valid_ratio={valid_ratio} leaves an empty split of {count} training reviews; choose a ratio "
            f"that keeps at least one review on each side."
        )
    return np.sort(permutation[valid_count:]), np.sort(permutation[:valid_count])


def build_vocab(token_lists: Iterable[list[str]], vocab_size: int, min_freq: int) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    for special in SPECIALS:
        counts.pop(special, None)
    ranked = sorted((item for item in counts.items() if item[1] >= min_freq), key=lambda item: (-item[1], item[0]))
    return ranked[:vocab_size]


def read_reviews(path: Path) -> list[dict]:
    if not path.is_file():
        raise StageError(f"Reviews file {path} not found; run the download stage first (`dvc repro download`).")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def write_split(path: Path, rows: list[tuple[int, int, int, list[str]]]) -> None:
    """One review per line: label, rating, id, space-joined tokens (tokens never hold whitespace)."""
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        for label, rating, review_id, tokens in rows:
            handle.write(f"{label}\t{rating}\t{review_id}\t{' '.join(tokens)}\n")


def write_vocab(path: Path, vocab: list[tuple[str, int]]) -> None:
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("index\ttoken\ttrain_count\n")
        for index, special in enumerate(SPECIALS):
            handle.write(f"{index}\t{special}\t0\n")
        for index, (token, count) in enumerate(vocab, start=len(SPECIALS)):
            handle.write(f"{index}\t{token}\t{count}\n")


def read_vocab(path: Path) -> list[str]:
    if not path.is_file():
        raise StageError(f"Vocabulary {path} not found; run the preprocess stage first (`dvc repro preprocess`).")
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[1] for line in lines]


def preprocess(reviews: list[dict], config: DataConfig, out_dir: Path, vocab_path: Path) -> dict[str, int]:
    rows = {"train": [], "test": []}
    for review in reviews:
        rows[review["split"]].append((review["label"], review["rating"], review["id"], tokenize(review["text"])))
    if not rows["train"] or not rows["test"]:
        raise StageError("The reviews file has no train or no test reviews; rerun the download stage.")
    train_index, valid_index = split_indices(len(rows["train"]), config.valid_ratio, config.split_seed)
    splits = {
        "train": [rows["train"][i] for i in train_index],
        "valid": [rows["train"][i] for i in valid_index],
        "test": rows["test"],
    }
    vocab = build_vocab((row[3] for row in splits["train"]), config.vocab_size, config.min_freq)
    for name in SPLIT_FILES:
        write_split(out_dir / f"{name}.tsv", splits[name])
    write_vocab(vocab_path, vocab)
    return {name: len(splits[name]) for name in SPLIT_FILES} | {"vocab": len(vocab) + len(SPECIALS)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for train/valid/test .tsv")
    parser.add_argument("--vocab", type=Path, required=True, help="vocabulary file (tsv)")
    args = parser.parse_args(argv)
    config = load_params().data
    counts = preprocess(read_reviews(args.reviews), config, args.out, args.vocab)
    print("preprocess: " + ", ".join(f"{key} {value}" for key, value in counts.items()))


if __name__ == "__main__":
    run_cli(main)
