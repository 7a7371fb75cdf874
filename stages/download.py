"""Stage `download`: the IMDB archive -> one canonical JSON-lines file of the 50k labeled reviews.

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

import argparse
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from stages.common import StageError, atomic_path, disk_full_error, is_disk_full, run_cli
from stages.config import DownloadConfig, load_params

ARCHIVE_ENV = "IMDB_ARCHIVE"
MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg)/([^/]+)$")
FILE_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
LABELS = {"neg": 0, "pos": 1}
SPLITS = ("train", "test")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Review:
    split: str
    label: int
    rating: int
    id: int
    text: str

    def sort_key(self) -> tuple[int, int, int]:
        return (SPLITS.index(self.split), self.label, self.id)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rnn-lab"


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def local_archive(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise StageError(f"{ARCHIVE_ENV}={value} does not exist. Point it at the .tar.gz archive, or unset it to download.")
    if path.is_dir():
        raise StageError(
            f"{ARCHIVE_ENV}={value} is a directory. Point it at the archive file itself "
            f"(e.g. aclImdb_v1.tar.gz), not an unpacked folder."
        )
    return path


def download(config: DownloadConfig, destination: Path, attempts: int = 4, timeout: float = 30.0) -> Path:
    """Fetch the archive with resume on dropped connections; return it only once its md5 matches."""
    if destination.is_file() and file_md5(destination) == config.md5:
        print(f"using cached download {destination}")
        return destination
    partial = destination.with_name(destination.name + ".part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            _fetch(config.url, partial, timeout)
            break
        except urllib.error.HTTPError as error:
            if error.code == 416:  # our partial file is already whole or longer than the server's file
                partial.unlink(missing_ok=True)
            elif error.code < 500:
                partial.unlink(missing_ok=True)
                raise StageError(
                    f"Download of {config.url} failed: HTTP {error.code} {error.reason}. Check download.url in "
                    f"params.yaml, or set {ARCHIVE_ENV}=/path/to/aclImdb_v1.tar.gz to use a local copy."
                ) from error
            last_error = error
        except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError, OSError) as error:
            if is_disk_full(error):  # retrying cannot help; the bytes so far stay for the next run to resume
                raise disk_full_error(partial, error, "the part downloaded so far is kept, and the next run resumes from it") from error
            last_error = error
        except http.client.HTTPException as error:
            # IncompleteRead (the server closed mid-body) and BadStatusLine are not OSErrors; the bytes
            # already written stay in `partial`, so the next attempt resumes from them.
            last_error = error
        if attempt < attempts:
            wait = min(2.0 ** (attempt - 1), 8.0) * float(os.environ.get("RNNLAB_RETRY_SCALE", "1"))
            print(f"download attempt {attempt} failed ({last_error}); retrying in {wait:.1f}s", file=sys.stderr)
            time.sleep(wait)
    else:
        raise StageError(
            f"Could not download {config.url} after {attempts} attempts ({last_error}). If this machine has no "
            f"internet, set {ARCHIVE_ENV}=/path/to/aclImdb_v1.tar.gz to use a local copy of the archive."
        )
    actual = file_md5(partial)
    if actual != config.md5:
        partial.unlink(missing_ok=True)
        raise StageError(
            f"md5 mismatch for {config.url}: expected {config.md5} (download.md5), got {actual}. The partial "
            f"file was deleted; rerun to download again, or fix download.md5 if the archive changed upstream."
        )
    os.replace(partial, destination)
    return destination


def _fetch(url: str, partial: Path, timeout: float) -> None:
    """Download into `partial`, resuming from its size with an HTTP Range request when possible."""
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "rnn-lab"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if offset and response.status != 206:
            offset = 0  # server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        mode = "ab" if offset else "wb"
        received = 0
        with partial.open(mode) as handle, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc="download", disable=None
        ) as progress:
            for block in iter(lambda: response.read(CHUNK), b""):
                handle.write(block)
                received += len(block)
                progress.update(len(block))
        if length is not None and received != int(length):
            raise ConnectionError(f"connection closed after {offset + received} of {total} bytes")


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
        raise StageError(
            f"{archive} is not a readable .tar.gz archive or is truncated ({error}). "
            f"Download it again, or point {ARCHIVE_ENV} at a complete copy."
        ) from error
    missing = [split for split in SPLITS if split not in seen_splits]
    if missing:
        raise StageError(
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
        raise StageError(
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
        raise StageError(f"{archive} holds {duplicates} duplicate review files; the archive is damaged. Download it again.")


def write_reviews(reviews: list[Review], output: Path) -> None:
    with atomic_path(output) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as handle:
        for review in reviews:
            handle.write(json.dumps(review.__dict__, ensure_ascii=False) + "\n")


def resolve_archive(config: DownloadConfig) -> Path:
    value = os.environ.get(ARCHIVE_ENV)
    if value:
        path = local_archive(value)
        print(f"using {ARCHIVE_ENV}={path}")
        return path
    return download(config, cache_dir() / Path(config.url).name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="canonical reviews file (JSON lines)")
    args = parser.parse_args(argv)
    config = load_params().download
    archive = resolve_archive(config)
    reviews = read_reviews(archive)
    write_reviews(reviews, args.out)
    counts = {split: sum(review.split == split for review in reviews) for split in SPLITS}
    print(f"wrote {len(reviews)} reviews ({counts['train']} train, {counts['test']} test) to {args.out}")


if __name__ == "__main__":
    run_cli(main)
