"""The IMDB archive -> one canonical JSON-lines file of the 50k labeled reviews.

Source: `$IMDB_ARCHIVE` (a local copy) when set, else the official URL from params (`download`),
verified by md5. The archive is streamed member by member; nothing is unpacked into the workspace.
Only regular files named `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` are read, so the
official archive's extra content (unsup/, urls_*.txt, *.feat, imdbEr.txt, imdb.vocab, README) and
any link or oddly placed member are ignored, and the output is byte-identical for the official
archive and the labeled-only copy.

Output lines, sorted by (split, label, id):
    {"split": "train", "label": 1, "rating": 9, "id": 0, "text": "..."}
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from rnnlab.config.sections import DownloadConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import atomic_path
from rnnlab.text.fetch import ARCHIVE_ENV, resolve_archive

MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg)/([^/]+)$")
FILE_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
LABELS = {"neg": 0, "pos": 1}
SPLITS = ("train", "test")


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
    seen_splits: set[str] = set()
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                review = _review_from_member(tar, member)
                if review is not None:
                    seen_splits.add(review.split)
                    reviews.append(review)
    except (tarfile.ReadError, EOFError, zlib.error, OSError) as error:
        raise UserError(
            f"{archive} is not a readable .tar.gz archive or is truncated ({error}). "
            f"Download it again, or point {ARCHIVE_ENV} at a complete copy."
        ) from error
    missing = [split for split in SPLITS if split not in seen_splits]
    if missing:
        raise UserError(
            f"{archive} has no reviews under aclImdb/{'/ and aclImdb/'.join(missing)}/ (pos/ and neg/). "
            f"Expected the official layout aclImdb/{{train,test}}/{{pos,neg}}/<id>_<rating>.txt."
        )
    reviews.sort(key=Review.sort_key)
    _check_unique(reviews, archive)
    return reviews


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
    handle = tar.extractfile(member)
    assert handle is not None  # regular file
    raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        # Keep the review: undecodable bytes become U+FFFD, which the tokenizer treats as text.
        print(f"warning: {member.name} has invalid UTF-8 at byte {error.start}; replaced it", file=sys.stderr)
        text = raw.decode("utf-8", errors="replace")
    review_id, rating = (int(part) for part in name_match.groups())
    return Review(split=split, label=LABELS[label_name], rating=rating, id=review_id, text=text)


def _check_unique(reviews: list[Review], archive: Path) -> None:
    keys = [review.sort_key() for review in reviews]
    duplicates = len(keys) - len(set(keys))
    if duplicates:
        raise UserError(f"{archive} holds {duplicates} duplicate review files; the archive is damaged. Download it again.")


def write_reviews(reviews: list[Review], output: Path) -> None:
    with atomic_path(output) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        for review in reviews:
            handle.write(json.dumps(review.__dict__, ensure_ascii=False) + "\n")


def export_reviews(config: DownloadConfig, output: Path) -> None:
    """The archive (local or downloaded) -> `output`, one review per line, sorted."""
    archive = resolve_archive(config)
    reviews = read_reviews(archive)
    write_reviews(reviews, output)
    counts = {split: sum(review.split == split for review in reviews) for split in SPLITS}
    print(f"wrote {len(reviews)} reviews ({counts['train']} train, {counts['test']} test) to {output}")
