"""Small synthetic IMDB-layout archives for tests and benchmarks: no review text from the real dataset."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

POSITIVE = "great wonderful superb moving brilliant loved charming delightful".split()
NEGATIVE = "awful boring dreadful dull terrible hated clumsy tedious".split()
NEUTRAL = "the movie film plot actor scene story it was and a of to".split()


def review_text(rng: random.Random, positive: bool) -> str:
    cues = POSITIVE if positive else NEGATIVE
    words = [rng.choice(cues) if rng.random() < 0.3 else rng.choice(NEUTRAL) for _ in range(rng.randint(5, 40))]
    sentence = " ".join(words).capitalize()
    return f"{sentence}.<br /><br />{rng.choice(cues).upper()}!"


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def make_archive(
    path: Path, per_folder: int = 50, seed: int = 0, official_extras: bool = False,
    extra_members: list[tuple[str, bytes]] | None = None, splits: tuple[str, ...] = ("train", "test"),
) -> Path:
    """Write a .tar.gz in the official layout aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt."""
    rng = random.Random(seed)
    entries: list[tuple[str, bytes]] = []
    for split in splits:
        for label in ("pos", "neg"):
            for review_id in range(per_folder):
                rating = rng.randint(7, 10) if label == "pos" else rng.randint(1, 4)
                text = review_text(rng, label == "pos")
                entries.append((f"aclImdb/{split}/{label}/{review_id}_{rating}.txt", text.encode("utf-8")))
    if official_extras:
        entries += [
            ("aclImdb/README", b"Large Movie Review Dataset (synthetic stand-in)\n"),
            ("aclImdb/imdb.vocab", b"the\nmovie\n"),
            ("aclImdb/imdbEr.txt", b"0.1\n"),
            ("aclImdb/train/labeledBow.feat", b"1 0:1\n"),
            ("aclImdb/train/urls_pos.txt", b"http://example.invalid/\n"),
            ("aclImdb/train/unsup/0_0.txt", b"unlabeled text"),
            ("aclImdb/train/unsupBow.feat", b"0 0:1\n"),
        ]
        rng.shuffle(entries)  # a different member order must not change the output
    entries += extra_members or []
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries:
            add_file(tar, name, data)
    return path
