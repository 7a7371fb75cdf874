"""The fast text paths of `preprocess` and `xy` against their plain per-token specifications."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from rnnlab.text import encode as xy
from rnnlab.text.tokenize import PAD, UNK, tokenize
from tests.unit.text.test_prepare import tokenize_reference

WORDS = ["Hello", "world!!", "<br />", "café", "ÉCOLE", "naïve", "--", "a", "ΣΑΣ", "x\u00a0y", "end.", "\u2028", "it's", "<BR>"]


def test_tokenize_matches_reference() -> None:
    rng = random.Random(0)
    texts = ["", "!!! ...", "\ud800 lone surrogate."] + [" ".join(rng.choices(WORDS, k=rng.randint(0, 40))) for _ in range(300)]
    for text in texts:
        assert tokenize(text) == tokenize_reference(text)


@pytest.mark.parametrize("chunk_rows", [1, 3, 1000])
def test_encode_split_matches_per_row_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int) -> None:
    monkeypatch.setattr(xy, "CHUNK_ROWS", chunk_rows)
    vocab = [UNK, PAD, "a", "b", "c"]
    texts = ["a b c", "", "c c zz a b a b a", "b"]
    path = tmp_path / "split.tsv"
    path.write_text("".join(f"{i % 2}\t{i}\t{i}\t{text}\n" for i, text in enumerate(texts)), encoding="utf-8")
    x, lengths, y = xy.encode_split(path, xy.TokenIds(vocab), fix_length=4)
    expected = np.full((len(texts), 4), 1, dtype=np.int64)
    for row, text in enumerate(texts):
        ids = [vocab.index(t) if t in vocab else 0 for t in text.split()][:4]
        expected[row, : len(ids)] = ids
    assert x.dtype == np.int64 and np.array_equal(x, expected)
    assert lengths.tolist() == [3, 1, 4, 1] and y.tolist() == [0, 1, 0, 1]
