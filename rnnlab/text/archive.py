"""The IMDB archive -> one JSON-lines file of the 50k labeled reviews, sorted by (split, label, id).

Only regular files at `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` are read (streamed, never
unpacked), so the official archive and a labeled-only copy give the same bytes. A .tar.gz can inflate
to far more than its size, so reading is bounded; each limit is far above the real archive (longest
review 13,704 bytes, largest member 845,980 bytes, the official tar about 300 MB).
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
import sys
import tarfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from rnnlab.config.params import DownloadConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import atomic_path, check_writable
from rnnlab.core.memory import size_text
from rnnlab.text.fetch import ARCHIVE_ENV, resolve_archive

MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
IN_A_SPLIT = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/([^/]+)$")
LABELS = {"neg": 0, "pos": 1}
SPLITS = ("train", "test")

MiB = 2**20
REVIEW_BYTES = 16 * MiB  # one review (also what tools.predict reads from a file or stdin)
MEMBER_BYTES = 256 * MiB  # any member, read or skipped, refused from its tar header
ARCHIVE_BYTES = 1024 * MiB  # the whole decompressed tar stream, skipped members included
HEADER_BYTES = 1 * MiB  # long-name and pax header members, which tarfile reads whole
HEADER_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
CHUNK = 64 * 1024
INFLATE_BYTES = 1 * MiB
FIX = f"Download it again, or point {ARCHIVE_ENV} at the official archive"
REVIEW_NOTE = "REVIEW_BYTES in rnnlab/text/archive.py; the longest real one is 13,704 bytes"


class ArchiveLimitError(Exception):
    """The archive would expand past a limit; read_reviews names the archive and the fix."""


def _too_big(kind: str, member: tarfile.TarInfo, limit: int, whose: str, note: str) -> ArchiveLimitError:
    size, most = size_text(member.size), size_text(limit)
    return ArchiveLimitError(f"{kind} {member.name} declares {size}, more than the {most} {whose} may have ({note})")


@dataclass(frozen=True)
class Review:
    split: str
    label: int
    rating: int
    id: int
    text: str

    def sort_key(self) -> tuple[int, int, int]:
        return (SPLITS.index(self.split), self.label, self.id)


class CountedStream:
    """The decompressed tar stream, refused past ARCHIVE_BYTES: tarfile reads every byte through here, skipped
    members too, so a bomb spread over many small members stops at the total. Inflating 1 MiB at a time and
    serving tarfile's small reads from it is a fifth faster than inflating each read."""

    def __init__(self, decompressed: gzip.GzipFile) -> None:
        self.decompressed, self.count, self.buffer, self.position = decompressed, 0, b"", 0

    def read(self, size: int = -1) -> bytes:
        if self.position == len(self.buffer):
            self.buffer, self.position = self.decompressed.read(INFLATE_BYTES), 0
            self.count += len(self.buffer)
            if self.count > ARCHIVE_BYTES:
                raise ArchiveLimitError(
                    f"it expands to more than {size_text(ARCHIVE_BYTES)} (ARCHIVE_BYTES in rnnlab/text/archive.py)"
                )
        end = len(self.buffer) if size < 0 else self.position + size
        data = self.buffer[self.position : end]  # fewer bytes than asked is fine: tarfile reads on
        self.position += len(data)
        return data


class BoundedTarInfo(tarfile.TarInfo):
    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:  # tarfile's hook for every header
        if self.type in HEADER_TYPES and self.size > HEADER_BYTES:
            raise ArchiveLimitError(
                f"a long-name or pax header member declares {size_text(self.size)}, more than the "
                f"{size_text(HEADER_BYTES)} such a header may have (HEADER_BYTES in rnnlab/text/archive.py)"
            )
        return super()._proc_member(archive)  # type: ignore[misc]  # private, so not in typeshed


def read_reviews(archive: Path) -> list[Review]:
    reviews: list[Review] = []
    try:
        # gzip and tarfile separately, not "r|gz", so every inflated byte passes CountedStream.
        with archive.open("rb") as compressed, gzip.GzipFile(fileobj=compressed, mode="rb") as decompressed:
            stream: IO[bytes] = CountedStream(decompressed)  # type: ignore[assignment]  # read() is all tarfile uses
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=BoundedTarInfo) as tar:
                for member in tar:
                    if member.size > MEMBER_BYTES:  # before its data is read or skipped
                        raise _too_big("member", member, MEMBER_BYTES, "any member", "MEMBER_BYTES in rnnlab/text/archive.py")
                    review = _review_from_member(tar, member)
                    if review is not None:
                        reviews.append(review)
    except ArchiveLimitError as error:
        raise UserError(f"{archive} is not the IMDB archive or is hostile: {error}. {FIX}.") from error
    except (tarfile.ReadError, EOFError, zlib.error, OSError) as error:
        raise UserError(
            f"{archive} is not a readable .tar.gz archive or is truncated ({error}). "
            f"Download it again, or point {ARCHIVE_ENV} at a complete copy."
        ) from error
    missing = [split for split in SPLITS if not any(review.split == split for review in reviews)]
    if missing:
        raise UserError(
            f"{archive} has no reviews under aclImdb/{'/ and aclImdb/'.join(missing)}/ (pos/ and neg/). "
            f"Expected the official layout aclImdb/{{train,test}}/{{pos,neg}}/<id>_<rating>.txt."
        )
    reviews.sort(key=Review.sort_key)
    duplicates = len(reviews) - len({review.sort_key() for review in reviews})
    if duplicates:
        raise UserError(f"{archive} holds {duplicates} duplicate review files; the archive is damaged. Download it again.")
    return reviews


def read_review_bytes(handle: IO[bytes], name: str) -> bytes:
    """All of `handle`, in chunks, refused past REVIEW_BYTES."""
    chunks: list[bytes] = []
    count = 0
    while chunk := handle.read(CHUNK):
        count += len(chunk)
        if count > REVIEW_BYTES:
            raise ArchiveLimitError(
                f"{name} is longer than {size_text(REVIEW_BYTES)}, the longest review this pipeline reads ({REVIEW_NOTE})"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def decode_review(raw: bytes, name: str) -> str:
    # UTF-16 passes as UTF-8 with warnings and would feed tokens of interleaved NULs to the vocabulary.
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in raw:
        raise UserError(
            f"{name} is UTF-16 (a byte-order mark or NUL bytes), not UTF-8 as in the official IMDB archive. "
            f"Convert it to UTF-8, e.g. `iconv -f UTF-16 -t UTF-8`."
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:  # keep the review: U+FFFD is text to the tokenizer
        print(f"warning: {name} has invalid UTF-8 at byte {error.start}; replaced it", file=sys.stderr)
        return raw.decode("utf-8", errors="replace")


def _review_from_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Review | None:
    # Only regular files at exactly the expected place; links, devices, absolute or `..` paths never match.
    place = IN_A_SPLIT.match(member.name)
    if place is None or not member.isfile() or place[3] in (".", ".."):
        return None
    match = MEMBER.match(member.name)
    if match is None:
        raise UserError(
            f"Archive member {member.name} is not named <id>_<rating>.txt. The archive is not in the official "
            f"layout; download it again or remove that file."
        )
    if member.size > REVIEW_BYTES:
        raise _too_big("review", member, REVIEW_BYTES, "a review", REVIEW_NOTE)
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file
    split, label, review_id, rating = match.groups()
    text = decode_review(read_review_bytes(handle, member.name), member.name)
    return Review(split, LABELS[label], int(rating), int(review_id), text)


def write_reviews(reviews: list[Review], output: Path) -> None:
    with atomic_path(output) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(json.dumps(asdict(review), ensure_ascii=False) + "\n" for review in reviews)


def export_reviews(config: DownloadConfig, output: Path) -> None:
    """The archive (local or downloaded) -> `output`, one review per line, sorted."""
    check_writable(output)  # before the download and the read, not after them
    reviews = read_reviews(resolve_archive(config))
    write_reviews(reviews, output)
    train = sum(review.split == "train" for review in reviews)
    print(f"wrote {len(reviews)} reviews ({train} train, {len(reviews) - train} test) to {output}")
