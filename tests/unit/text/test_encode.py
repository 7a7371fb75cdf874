"""Unit tests for the xy stage: token files -> fixed-length id arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnlab.core.errors import UserError
from rnnlab.core.files import write_json
from rnnlab.data.arrays import load_split, save_split
from rnnlab.text.encode import TokenIds, encode_split, kept_tokens
from rnnlab.text.prepare import write_split
from rnnlab.text.tokenize import PAD, UNK

VOCAB = [UNK, PAD, "good", "bad", "movie"]
INDEX = TokenIds(VOCAB)
UNK_ID, PAD_ID = INDEX[UNK], INDEX[PAD]


def encode(tmp_path: Path, rows: list[tuple[int, list[str]]], fix_length: int, truncate: str = "head") -> tuple[np.ndarray, ...]:
    path = tmp_path / "split.tsv"
    write_split(path, [(label, 5, row_id, " ".join(tokens)) for row_id, (label, tokens) in enumerate(rows)])
    return encode_split(path, INDEX, fix_length, truncate)


def test_post_padding_with_pad(tmp_path: Path) -> None:
    x, lengths, y = encode(tmp_path, [(1, ["good", "movie"])], fix_length=5)
    assert x.tolist() == [[INDEX["good"], INDEX["movie"], PAD_ID, PAD_ID, PAD_ID]]
    assert lengths.tolist() == [2] and y.tolist() == [1]


def test_truncation_keeps_the_first_fix_length_tokens(tmp_path: Path) -> None:
    x, lengths, _ = encode(tmp_path, [(0, ["bad", "good", "movie", "bad", "good"])], fix_length=3)
    assert x.tolist() == [[INDEX["bad"], INDEX["good"], INDEX["movie"]]]
    assert lengths.tolist() == [3]


@pytest.mark.parametrize(
    ("truncate", "fix_length", "kept"),
    [
        ("head", 3, "a b c"),
        ("tail", 3, "e f g"),
        ("head_tail", 4, "a b f g"),
        ("head_tail", 3, "a b g"),  # the odd token goes to the beginning
        ("head_tail", 1, "a"),
    ],
)
def test_kept_tokens_per_truncate_mode(truncate: str, fix_length: int, kept: str) -> None:
    assert kept_tokens(["a", "b", "c", "d", "e", "f", "g"], fix_length, truncate) == kept.split()


@pytest.mark.parametrize("truncate", ["head", "tail", "head_tail"])
def test_short_reviews_are_kept_whole_in_every_mode(truncate: str) -> None:
    assert kept_tokens(["a", "b"], 3, truncate) == ["a", "b"]
    assert kept_tokens([], 3, truncate) == []


@pytest.mark.parametrize("truncate", ["tail", "head_tail"])
def test_encode_split_applies_the_truncate_mode(tmp_path: Path, truncate: str) -> None:
    tokens = ["bad", "movie", "good", "movie", "good"]
    x, lengths, _ = encode(tmp_path, [(1, tokens), (0, ["good"])], fix_length=2, truncate=truncate)
    expected = kept_tokens(tokens, 2, truncate)
    assert x.tolist() == [[INDEX[token] for token in expected], [INDEX["good"], PAD_ID]]
    assert lengths.tolist() == [2, 1]


def test_exact_fix_length_is_neither_padded_nor_truncated(tmp_path: Path) -> None:
    x, lengths, _ = encode(tmp_path, [(0, ["bad", "good", "movie"])], fix_length=3)
    assert x.tolist() == [[INDEX["bad"], INDEX["good"], INDEX["movie"]]]
    assert lengths.tolist() == [3]


def test_out_of_vocabulary_tokens_become_unk(tmp_path: Path) -> None:
    x, _, _ = encode(tmp_path, [(1, ["unseen", "good", "alsounseen"])], fix_length=4)
    assert x.tolist() == [[UNK_ID, INDEX["good"], UNK_ID, PAD_ID]]


def test_empty_review_is_one_pad_step(tmp_path: Path) -> None:
    x, lengths, y = encode(tmp_path, [(0, []), (1, ["good"])], fix_length=3)
    assert x[0].tolist() == [PAD_ID] * 3
    assert lengths.tolist() == [1, 1]
    assert y.tolist() == [0, 1]


def test_arrays_types_and_shapes(tmp_path: Path) -> None:
    x, lengths, y = encode(tmp_path, [(index % 2, ["good"] * index) for index in range(6)], fix_length=4)
    assert x.shape == (6, 4) and lengths.shape == (6,) and y.shape == (6,)
    assert x.dtype == lengths.dtype == y.dtype == np.int64
    assert lengths.tolist() == [1, 1, 2, 3, 4, 4]


def test_missing_split_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="preprocess"):
        encode_split(tmp_path / "absent.tsv", INDEX, 5)


def test_saved_split_loads_back(tmp_path: Path) -> None:
    x, lengths, y = encode(tmp_path, [(1, ["good", "movie"]), (0, ["bad"])], fix_length=3)
    save_split(tmp_path / "train", x, lengths, y)
    write_json(tmp_path / "meta.json", {"input_size": len(VOCAB), "num_classes": 2, "class_names": ["neg", "pos"],
                                        "sequence_length": 3})  # what load_split checks the arrays against
    split = load_split(tmp_path, "train")
    assert split.x.tolist() == x.tolist() and split.lengths.tolist() == lengths.tolist()
    assert split.y.tolist() == y.tolist() and len(split) == 2 and split.sequence_length == 3
