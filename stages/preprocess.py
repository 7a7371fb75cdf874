"""Stage `preprocess`: tokenize like torchtext-legacy, split train/valid, build the vocabulary.

torchtext is discontinued (its last release fails to load with current torch), so its legacy
semantics are reproduced here:

    tokens = str.split(text) -> lowercase -> remove "<br" -> delete punctuation characters -> drop empty

`tokenize` does the same in whole-string C-level operations: "<br" and punctuation contain no
whitespace, so removing them before or after splitting gives identical tokens (tests check this
against the per-token reference). Punctuation is deleted from the UTF-8 bytes: string.punctuation
is ASCII and UTF-8 never uses ASCII bytes inside a multi-byte character, so this equals
str.translate's deletion at about half the cost.

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

import numpy as np

from stages.common import ForkedCall, StageError, atomic_directory, atomic_path, gc_paused, run_cli
from stages.config import DataConfig, load_params

UNK, PAD = "<unk>", "<pad>"
SPECIALS = (UNK, PAD)
SPLIT_FILES = ("train", "valid", "test")
_PUNCTUATION_BYTES = string.punctuation.encode("ascii")


def clean(text: str) -> str:
    """Lowercase, drop "<br" and punctuation; whitespace is left for the caller to split on."""
    # surrogatepass: a lone surrogate (possible from a JSON escape) round-trips instead of raising.
    encoded = text.lower().replace("<br", "").encode("utf-8", "surrogatepass")
    return encoded.translate(None, _PUNCTUATION_BYTES).decode("utf-8", "surrogatepass")


def tokenize(text: str) -> list[str]:
    return clean(text).split()


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


def build_vocab(counts: Counter[str], vocab_size: int, min_freq: int) -> list[tuple[str, int]]:
    for special in SPECIALS:
        counts.pop(special, None)
    ranked = sorted((item for item in counts.items() if item[1] >= min_freq), key=lambda item: (-item[1], item[0]))
    return ranked[:vocab_size]


def read_reviews(path: Path) -> list[dict]:
    if not path.is_file():
        raise StageError(f"Reviews file {path} not found; run the download stage first (`dvc repro download`).")
    # raw_decode is json.loads without its two whitespace-regex scans per line (~0.1 s here);
    # what it would not reject, text after the object, is checked explicitly.
    decode = json.JSONDecoder().raw_decode
    reviews = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            review, end = decode(line)
            if line[end:].strip():
                raise StageError(f"{path}:{number} holds more than one JSON object; rerun the download stage.")
            reviews.append(review)
    return reviews


Row = tuple[int, int, int, str]  # label, rating, id, space-joined tokens


def write_split(path: Path, rows: list[Row]) -> None:
    """One review per line: label, rating, id, space-joined tokens (tokens never hold whitespace)."""
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(f"{label}\t{rating}\t{review_id}\t{text}\n" for label, rating, review_id, text in rows)


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
        raise StageError("The reviews file has no train or no test reviews; rerun the download stage.")
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for train/valid/test .tsv")
    parser.add_argument("--vocab", type=Path, required=True, help="vocabulary file (tsv)")
    args = parser.parse_args(argv)
    config = load_params().data
    with gc_paused():  # inherited by the forked worker
        reviews = read_reviews(args.reviews)
        # All three splits or none: a failure part-way must not leave a half-filled data/prepared.
        with atomic_directory(args.out) as out:
            counts = preprocess(reviews, config, out, args.vocab)
    print("preprocess: " + ", ".join(f"{key} {value}" for key, value in counts.items()))


if __name__ == "__main__":
    run_cli(main)
