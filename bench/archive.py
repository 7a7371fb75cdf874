"""Small synthetic IMDB-layout archives for tests and benchmarks: no review text from the real dataset."""

from __future__ import annotations

import io
import random
import tarfile
import zlib
from pathlib import Path

POSITIVE = ["great", "wonderful", "superb", "moving", "brilliant", "loved", "charming", "delightful"]
NEGATIVE = ["awful", "boring", "dreadful", "dull", "terrible", "hated", "clumsy", "tedious"]
NEUTRAL = ["the", "movie", "film", "plot", "actor", "scene", "story", "it", "was", "and", "a", "of", "to"]


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
    path: Path,
    per_folder: int = 50,
    seed: int = 0,
    official_extras: bool = False,
    extra_members: list[tuple[str, bytes]] | None = None,
    splits: tuple[str, ...] = ("train", "test"),
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


ZERO_RUN = 1 << 20  # a bomb's members are written as repeats of one compressed run of this many zeros


def make_bomb(path: Path, zero_members: list[tuple[str, int]], per_folder: int = 4) -> Path:
    """A .tar.gz of a small IMDB-layout archive followed by members of `size` zero bytes each (a gzip bomb).

    Built in a moment whatever the sizes: after a full flush, deflate's output for a run of zeros does
    not depend on what came before, so one compressed run (about 1 KB per MiB) is repeated. Sizes are
    whole MiB. The gzip trailer's CRC is left 0: a reader must refuse the archive long before it.
    """
    rng = random.Random(0)
    body = io.BytesIO()
    tar = tarfile.open(fileobj=body, mode="w", format=tarfile.GNU_FORMAT)  # noqa: SIM115 (left open: see below)  GNU: sizes past 8 GiB in the header
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            for review_id in range(per_folder):
                rating = 8 if label == "pos" else 2
                add_file(
                    tar, f"aclImdb/{split}/{label}/{review_id}_{rating}.txt", review_text(rng, label == "pos").encode("utf-8")
                )
    reviews = body.getvalue()  # the members only: closing would add the end-of-archive blocks, and more members follow
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zero_run = compressor.compress(bytes(ZERO_RUN)) + compressor.flush(zlib.Z_FULL_FLUSH)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip header: deflate, no name, mtime 0
        handle.write(compressor.compress(reviews) + compressor.flush(zlib.Z_FULL_FLUSH))
        for name, size in zero_members:
            assert size % ZERO_RUN == 0, "bomb members are whole MiB"
            info = tarfile.TarInfo(name)
            info.size, info.mtime = size, 0
            handle.write(compressor.compress(info.tobuf(tarfile.GNU_FORMAT)) + compressor.flush(zlib.Z_FULL_FLUSH))
            for _ in range(size // ZERO_RUN):
                handle.write(zero_run)
        handle.write(compressor.compress(bytes(2 * tarfile.BLOCKSIZE)) + compressor.flush(zlib.Z_FINISH))
        handle.write(bytes(8))  # CRC-32 and length: never reached
    return path
