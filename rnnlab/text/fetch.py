"""Where the IMDB archive comes from: `$IMDB_ARCHIVE` (a local copy) when set, else `download.url`,
fetched with resume on dropped connections and verified by md5."""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from rnnlab.config.params import DownloadConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import disk_full_error, is_disk_full

ARCHIVE_ENV = "IMDB_ARCHIVE"
LOCAL_COPY = f"set {ARCHIVE_ENV}=/path/to/aclImdb_v1.tar.gz to use a local copy"
CHUNK = 1 << 20


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnn-lab"


def file_md5(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def download(config: DownloadConfig, destination: Path, attempts: int = 4, timeout: float = 30.0) -> Path:
    """Fetch the archive with resume on dropped connections; return it only once its md5 matches."""
    if destination.is_file() and file_md5(destination) == config.md5:
        print(f"using cached download {destination}")
        return destination
    partial = destination.with_name(destination.name + ".part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        try:
            _fetch(config.url, partial, timeout)
            break
        except urllib.error.HTTPError as error:
            if error.code < 500:  # 416: the partial file is whole or longer than the server's; start over
                partial.unlink(missing_ok=True)
            if error.code < 500 and error.code != 416:
                raise UserError(
                    f"Download of {config.url} failed: HTTP {error.code} {error.reason}. Check download.url in "
                    f"params.yaml, or {LOCAL_COPY}."
                ) from error
            last_error: Exception = error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            # HTTPException: IncompleteRead or BadStatusLine; the bytes in `partial` are resumed from.
            if isinstance(error, OSError) and is_disk_full(error):  # retrying cannot free space
                raise disk_full_error(
                    partial, error, "the part downloaded so far is kept, and the next run resumes from it"
                ) from error
            last_error = error
        if attempt < attempts:
            wait = min(2.0 ** (attempt - 1), 8.0) * float(os.environ.get("RNNLAB_RETRY_SCALE", "1"))
            print(f"download attempt {attempt} failed ({last_error}); retrying in {wait:.1f}s", file=sys.stderr)
            time.sleep(wait)
    else:
        raise UserError(
            f"Could not download {config.url} after {attempts} attempts ({last_error}). If this machine has no "
            f"internet, {LOCAL_COPY} of the archive."
        )
    actual = file_md5(partial)
    if actual != config.md5:
        partial.unlink(missing_ok=True)
        raise UserError(
            f"md5 mismatch for {config.url}: expected {config.md5} (download.md5), got {actual}. The partial "
            f"file was deleted; rerun to download again, or fix download.md5 if the archive changed upstream."
        )
    os.replace(partial, destination)
    return destination


def _fetch(url: str, partial: Path, timeout: float) -> None:
    """Download into `partial`, resuming from its size with an HTTP Range request when possible."""
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "rnn-lab"} | ({"Range": f"bytes={offset}-"} if offset else {}))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.status != 206:
            offset = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = 0
        with (
            partial.open("ab" if offset else "wb") as handle,
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc="download", disable=None) as progress,
        ):
            for block in iter(lambda: response.read(CHUNK), b""):
                handle.write(block)
                received += len(block)
                progress.update(len(block))
        if length is not None and received != int(length):
            raise ConnectionError(f"connection closed after {offset + received} of {total} bytes")


def resolve_archive(config: DownloadConfig) -> Path:
    value = os.environ.get(ARCHIVE_ENV)
    if not value:
        return download(config, cache_dir() / Path(config.url).name)
    path = Path(value).expanduser()
    if not path.exists():
        raise UserError(f"{ARCHIVE_ENV}={value} does not exist. Point it at the .tar.gz archive, or unset it to download.")
    if path.is_dir():
        raise UserError(
            f"{ARCHIVE_ENV}={value} is a directory. Point it at the archive file itself "
            f"(e.g. aclImdb_v1.tar.gz), not an unpacked folder."
        )
    print(f"using {ARCHIVE_ENV}={path}")
    return path
