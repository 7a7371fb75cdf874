"""The IMDB archive -> one canonical JSON-lines file of the 50k labeled reviews.

Source: `$IMDB_ARCHIVE` (a local copy) when set, else the official URL from params (`download`),
verified by md5. The archive is streamed member by member; nothing is unpacked into the workspace.
Only regular files named `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` are read, so the
official archive's extra content (unsup/, urls_*.txt, *.feat, imdbEr.txt, imdb.vocab, README) and
any link or oddly placed member are ignored, and the output is byte-identical for the official
archive and the labeled-only copy.

Output lines, sorted by (split, label, id):
    {"split": "train", "label": 1, "rating": 9, "id": 0, "text": "..."}

Limits: a .tar.gz can expand to far more than its size (a gzip bomb: 21 MB that inflate to 20 GiB of
zeros), so the stream is read in chunks and bounded three ways, each far above the real archive
(measured on the labeled copy: longest review 13,704 bytes, largest member 845,980 bytes
(imdb.vocab), the whole tar 100 MiB; the official archive adds unsup/ and *.feat, about 300 MB):
- REVIEW_BYTES, one review (also what `tools.predict` reads from a file or stdin);
- MEMBER_BYTES, any member, read or skipped, refused from its tar header before its data is read;
- ARCHIVE_BYTES, the whole decompressed tar stream, skipped members included.
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rnnlab.config.params import DownloadConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import atomic_path, check_writable
from rnnlab.core.memory import size_text
from rnnlab.text.fetch import ARCHIVE_ENV, resolve_archive

MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg)/([^/]+)$")
FILE_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
LABELS = {"neg": 0, "pos": 1}
SPLITS = ("train", "test")

MiB = 2**20
REVIEW_BYTES = 16 * MiB  # 1,200x the longest real review; a review of a million tokens fits
MEMBER_BYTES = 256 * MiB  # the official archive's largest member (train/unsupBow.feat) is about 40 MB
ARCHIVE_BYTES = 1024 * MiB  # the decompressed tar: 100 MiB labeled-only, about 300 MB official
# Long-name and pax header members: tarfile reads these whole before it returns the member they name.
HEADER_BYTES = 1 * MiB
HEADER_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
CHUNK = 64 * 1024  # a review is read in pieces of this size
INFLATE_BYTES = 1 * MiB  # the tar stream is inflated in pieces of this size
FIX = f"Download it again, or point {ARCHIVE_ENV} at the official archive"


class ArchiveLimitError(Exception):
    """The archive would expand past one of the limits above; read_reviews names the archive and the fix."""


@dataclass(frozen=True)
class Review:
    split: str
    label: int
    rating: int
    id: int
    text: str

    def sort_key(self) -> tuple[int, int, int]:
        return (SPLITS.index(self.split), self.label, self.id)


def read_reviews(archive: Path) -> list[Review]:
    """Stream the archive and return the labeled reviews sorted by (split, label, id)."""
    reviews: list[Review] = []
    try:
        # gzip and tarfile separately, not tarfile's "r|gz": GzipFile inflates a bounded amount per
        # read, so the tar layer only ever sees small chunks, and every one of them is counted.
        with (
            archive.open("rb") as compressed,
            gzip.GzipFile(fileobj=compressed, mode="rb") as decompressed,
            tarfile.open(fileobj=CountedStream(decompressed), mode="r|", tarinfo=BoundedTarInfo) as tar,
        ):  # type: ignore[call-overload, arg-type]
            for member in tar:
                check_member_size(member)  # before its data is read, or skipped by the next step
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
    counts = {split: sum(review.split == split for review in reviews) for split in SPLITS}
    missing = [split for split, count in counts.items() if count == 0]
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


class CountedStream:
    """The decompressed tar stream, refused once more than ARCHIVE_BYTES have come out of it.

    Every byte tarfile reads passes here, also the data of members it skips, so a bomb spread over
    many members within MEMBER_BYTES each stops at the total, with memory flat. It inflates 1 MiB at a
    time and hands tarfile its small reads from that (a fifth faster than inflating each 10 KiB read).
    """

    def __init__(self, decompressed: IO[bytes]) -> None:
        self.decompressed = decompressed
        self.limit = ARCHIVE_BYTES
        self.count = 0
        self.buffer = b""
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        if self.position == len(self.buffer):
            self.buffer, self.position = self.decompressed.read(INFLATE_BYTES), 0
            self.count += len(self.buffer)
            if self.count > self.limit:
                raise ArchiveLimitError(
                    f"it expands to more than {size_text(self.limit)} (ARCHIVE_BYTES in rnnlab/text/archive.py)"
                )
        end = len(self.buffer) if size < 0 else self.position + size
        data = self.buffer[self.position : end]  # fewer bytes than asked is fine: tarfile reads on
        self.position += len(data)
        return data


class BoundedTarInfo(tarfile.TarInfo):
    """A tar header that refuses an oversized long-name or pax header member before tarfile reads it whole."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:  # tarfile's hook for every header it reads
        if self.type in HEADER_TYPES and self.size > HEADER_BYTES:
            raise ArchiveLimitError(
                f"a long-name or pax header member declares {size_text(self.size)}, more than the "
                f"{size_text(HEADER_BYTES)} such a header may have (HEADER_BYTES in rnnlab/text/archive.py)"
            )
        return super()._proc_member(archive)  # type: ignore[misc]  # private, so not in typeshed


def check_member_size(member: tarfile.TarInfo) -> None:
    """Refuse a member by the size its header declares (for a sparse file: its expanded size)."""
    if member.size > MEMBER_BYTES:
        raise ArchiveLimitError(
            f"member {member.name} declares {size_text(member.size)}, more than the {size_text(MEMBER_BYTES)} any "
            f"member may have (MEMBER_BYTES in rnnlab/text/archive.py)"
        )


def read_review_bytes(handle: IO[bytes], name: str) -> bytes:
    """All of `handle`, in chunks, refused past REVIEW_BYTES (a review no one wrote by hand)."""
    chunks: list[bytes] = []
    count = 0
    while chunk := handle.read(CHUNK):
        count += len(chunk)
        if count > REVIEW_BYTES:
            raise ArchiveLimitError(
                f"{name} is longer than {size_text(REVIEW_BYTES)}, the longest review this pipeline reads "
                f"(REVIEW_BYTES in rnnlab/text/archive.py; the longest real one is 13,704 bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def decode_review(raw: bytes, name: str) -> str:
    # UTF-16 (a byte-order mark, or ASCII text with a NUL after each letter) is valid enough UTF-8 to
    # pass with warnings, and would feed tokens of interleaved NULs to the vocabulary.
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in raw:
        raise UserError(
            f"{name} is UTF-16 (a byte-order mark or NUL bytes), not UTF-8 as in the official IMDB archive. "
            f"Convert it to UTF-8, e.g. `iconv -f UTF-16 -t UTF-8`."
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        # Keep the review: undecodable bytes become U+FFFD, which the tokenizer treats as text.
        print(f"warning: {name} has invalid UTF-8 at byte {error.start}; replaced it", file=sys.stderr)
        return raw.decode("utf-8", errors="replace")


def _review_from_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Review | None:
    # `tar -C dir .` style archives prefix every member with "./"; the layout is the same.
    name = member.name[2:] if member.name.startswith("./") else member.name
    match = MEMBER.match(name)
    # Only regular files at exactly the expected place; links, devices, absolute or `..` paths never match.
    if match is None or not member.isfile():
        return None
    split, label_name, file_name = match.groups()
    if file_name in (".", ".."):  # a path trick, not a review: never read it
        return None
    name_match = FILE_NAME.match(file_name)
    if name_match is None:
        raise UserError(
            f"Archive member {member.name} is not named <id>_<rating>.txt. The archive is not in the official "
            f"layout; download it again or remove that file."
        )
    if member.size > REVIEW_BYTES:  # refused before any of it is read
        raise ArchiveLimitError(
            f"review {member.name} declares {size_text(member.size)}, more than the {size_text(REVIEW_BYTES)} a "
            f"review may have (REVIEW_BYTES in rnnlab/text/archive.py; the longest real one is 13,704 bytes)"
        )
    handle = tar.extractfile(member)
    assert handle is not None  # regular file
    text = decode_review(read_review_bytes(handle, member.name), member.name)
    review_id, rating = (int(part) for part in name_match.groups())
    return Review(split=split, label=LABELS[label_name], rating=rating, id=review_id, text=text)


def write_reviews(reviews: list[Review], output: Path) -> None:
    with atomic_path(output) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        for review in reviews:
            handle.write(json.dumps(review.__dict__, ensure_ascii=False) + "\n")


def export_reviews(config: DownloadConfig, output: Path) -> None:
    """The archive (local or downloaded) -> `output`, one review per line, sorted."""
    check_writable(output)  # before the download and the read, not after them
    archive = resolve_archive(config)
    reviews = read_reviews(archive)
    write_reviews(reviews, output)
    counts = {split: sum(review.split == split for review in reviews) for split in SPLITS}
    print(f"wrote {len(reviews)} reviews ({counts['train']} train, {counts['test']} test) to {output}")
