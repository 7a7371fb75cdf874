"""The vocabulary file: `<unk>`, `<pad>`, then the kept train tokens, most frequent first."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rnnlab.core.errors import UserError
from rnnlab.core.files import atomic_path
from rnnlab.text.tokenize import SPECIALS


def build_vocab(counts: Counter[str], vocab_size: int, min_freq: int) -> list[tuple[str, int]]:
    for special in SPECIALS:
        counts.pop(special, None)
    ranked = sorted((item for item in counts.items() if item[1] >= min_freq), key=lambda item: (-item[1], item[0]))
    return ranked[:vocab_size]


def write_vocab(path: Path, vocab: list[tuple[str, int]]) -> None:
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("index\ttoken\ttrain_count\n")
        for index, special in enumerate(SPECIALS):
            handle.write(f"{index}\t{special}\t0\n")
        for index, (token, count) in enumerate(vocab, start=len(SPECIALS)):
            handle.write(f"{index}\t{token}\t{count}\n")


def read_vocab(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"Vocabulary {path} not found; run the preprocess stage first (`dvc repro preprocess`).")
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[1] for line in lines]
