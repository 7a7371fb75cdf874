"""Unit tests for the preprocess stage: tokenizer, train/valid split, vocabulary."""

from __future__ import annotations

import string
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rnnlab.config.params import DataConfig
from rnnlab.core.errors import UserError
from rnnlab.text.prepare import preprocess, split_indices
from rnnlab.text.tokenize import PAD, SPECIALS, UNK, tokenize
from rnnlab.text.vocab import build_vocab, read_vocab, write_vocab


def tokenize_reference(text: str) -> list[str]:
    """torchtext-legacy's per-token pipeline, the specification `tokenize` reproduces."""
    tokens = [token.lower() for token in text.split()]
    tokens = [token.replace("<br", "") for token in tokens]
    tokens = ["".join(char for char in token if char not in string.punctuation) for token in tokens]
    return [token for token in tokens if token]


TRICKY_TEXTS = [
    "",
    "   ",
    "Hello, World!",
    "Great movie.<br /><br />Loved it",
    "a<br/>b",
    "A<BR>B",
    "<<brbr",
    "<br<br<br",
    "end<br",
    "... !!! ??? -- ''",  # punctuation-only tokens must vanish
    "don't stop-believing",
    "tabs\tand\nnewlines\r\nand\x0bvertical\x0cfeeds",
    "unicode: café naïve Straße ÉCOLE ΣΟΦΟΣ İstanbul",
    "non-breaking\u00a0space and\u2003em space",
    "smart “quotes” and ‘apostrophes’ — dashes…",
    "emoji 🎬🍿 stay 😀!",
    "numbers 10/10 3.5 1,000,000",
    "MiXeD CaSe <Br /> WORDS",
]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_tokenize_matches_reference(text: str) -> None:
    assert tokenize(text) == tokenize_reference(text)


def test_tokenize_matches_reference_around_every_whitespace_character() -> None:
    # The fast tokenizer lowercases the whole string; context-dependent lowercasing (Greek final
    # sigma) must not look across a whitespace character that the per-token reference splits on.
    whitespace = [chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace()]
    for space in whitespace:
        text = f"ΑΣ{space}Β <br{space}x{space}ΟΔΟΣ."
        assert tokenize(text) == tokenize_reference(text), repr(space)


def test_tokenize_semantics() -> None:
    assert tokenize("Great movie.<br /><br />Loved IT!") == ["great", "movie", "loved", "it"]
    assert tokenize("a<br/>b") == ["ab"]  # "<br" removed, then "/>" stripped as punctuation
    assert tokenize("<<brbr") == ["br"]  # one left-to-right pass, like str.replace
    assert tokenize("don't stop-believing") == ["dont", "stopbelieving"]
    assert tokenize("... !!! --") == []
    assert tokenize("café\tnaïve\nÉCOLE") == ["café", "naïve", "école"]


def test_split_indices_sizes_disjoint_and_complete() -> None:
    train, valid = split_indices(100, 0.2, seed=0)
    assert len(valid) == 20 and len(train) == 80
    assert set(train.tolist()).isdisjoint(valid.tolist())
    assert sorted(train.tolist() + valid.tolist()) == list(range(100))
    # Sorted so the written files keep the archive's stable order.
    assert np.all(np.diff(train) > 0) and np.all(np.diff(valid) > 0)


def test_split_indices_deterministic_and_seeded() -> None:
    first = split_indices(50, 0.3, seed=1)
    again = split_indices(50, 0.3, seed=1)
    other = split_indices(50, 0.3, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("ratio", [0.001, 0.999])
def test_split_indices_refuses_an_empty_side(ratio: float) -> None:
    with pytest.raises(UserError, match="valid_ratio"):
        split_indices(10, ratio, seed=0)


def counted(token_lists: list[list[str]]) -> Counter[str]:
    """build_vocab takes the train split's token counts (preprocess counts while tokenizing)."""
    return Counter(token for tokens in token_lists for token in tokens)


def test_build_vocab_orders_by_frequency_then_alphabetically() -> None:
    token_lists = [["b", "a", "c", "c"], ["a", "b", "c", "d"], ["zz", "zz", "zz"]]
    vocab = build_vocab(counted(token_lists), vocab_size=10, min_freq=1)
    # c and zz have 3, a and b have 2 (tie -> alphabetical), d has 1.
    assert vocab == [("c", 3), ("zz", 3), ("a", 2), ("b", 2), ("d", 1)]


def test_build_vocab_min_freq_and_size_cap() -> None:
    token_lists = [["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"]]
    assert [token for token, _ in build_vocab(counted(token_lists), vocab_size=10, min_freq=3)] == ["a", "b", "c"]
    assert [token for token, _ in build_vocab(counted(token_lists), vocab_size=2, min_freq=1)] == ["a", "b"]


def test_build_vocab_excludes_specials() -> None:
    token_lists = [[UNK, UNK, PAD, "x"]]
    assert build_vocab(counted(token_lists), vocab_size=10, min_freq=1) == [("x", 1)]


def test_vocab_file_round_trip_puts_specials_first(tmp_path: Path) -> None:
    path = tmp_path / "vocab.tsv"
    write_vocab(path, [("good", 7), ("bad", 3)])
    assert read_vocab(path) == [UNK, PAD, "good", "bad"]
    assert path.read_text(encoding="utf-8").splitlines()[0] == "index\ttoken\ttrain_count"


def test_preprocess_builds_vocab_from_train_split_only(tmp_path: Path) -> None:
    reviews = [
        {"split": "train", "label": index % 2, "rating": 1, "id": index, "text": f"shared word{index}"}
        for index in range(10)
    ] + [{"split": "test", "label": 1, "rating": 9, "id": 0, "text": "testonly testonly testonly"}]
    config = DataConfig(valid_ratio=0.2, split_seed=0, vocab_size=100, min_freq=1, fix_length=5)
    counts = preprocess(reviews, config, tmp_path / "prepared", tmp_path / "vocab.tsv")
    assert (counts["train"], counts["valid"], counts["test"]) == (8, 2, 1)
    vocab = read_vocab(tmp_path / "vocab.tsv")
    assert vocab[: len(SPECIALS)] == list(SPECIALS)
    assert "testonly" not in vocab
    valid_lines = (tmp_path / "prepared" / "valid.tsv").read_text(encoding="utf-8").splitlines()
    valid_words = {line.split("\t")[3].split()[1] for line in valid_lines}
    # Words seen only in validation reviews must not leak into the vocabulary.
    assert valid_words and valid_words.isdisjoint(vocab)
    assert vocab[len(SPECIALS)] == "shared"
