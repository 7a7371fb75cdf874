"""The vocabulary file: `<unk>`, `<pad>`, then train tokens with count >= min_freq, most frequent first,
ties alphabetical (as torchtext-legacy), at most vocab_size besides the two specials."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rnnlab.core.errors import UserError
from rnnlab.text.tokenize import SPECIALS


def build_vocab(counts: Counter[str], vocab_size: int, min_freq: int) -> list[tuple[str, int]]:
    ranked = sorted(
        (item for item in counts.items() if item[1] >= min_freq and item[0] not in SPECIALS), key=lambda item: (-item[1], item[0])
    )
    return ranked[:vocab_size]


def write_vocab(path: Path, vocab: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [(special, 0) for special in SPECIALS] + vocab
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("index\ttoken\ttrain_count\n")
        handle.writelines(f"{index}\t{token}\t{count}\n" for index, (token, count) in enumerate(rows))


def read_vocab(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"Vocabulary {path} not found; run the preprocess stage first (`dvc repro preprocess`).")
    return [line.split("\t")[1] for line in path.read_text(encoding="utf-8").splitlines()[1:]]
