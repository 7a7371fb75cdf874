"""Issue 6, data source: damaged, odd or hostile archives and a bad IMDB_ARCHIVE fail clearly or are ignored.

Each test builds its archive on purpose (bench/archive.py plus hand-made tar members) and runs the
real code: `read_reviews` for what is kept, the download CLI for exit code and message.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from rnnlab.config.params import DataConfig
from rnnlab.core.memory import size_text
from bench.archive import add_file, make_archive, make_bomb
from rnnlab.text import archive as imdb_archive
from rnnlab.text.archive import read_reviews, write_reviews
from rnnlab.text.encode import TokenIds, encode_split
from rnnlab.text.prepare import preprocess
from rnnlab.text.tokenize import PAD
from rnnlab.text.vocab import read_vocab
from tests.support.stage_runner import (
    REPO,
    assert_user_error,
    files_under,
    outputs_under,
    repo_params,
    run_stage,
    stage_commands,
    write_params,
)

PER_FOLDER = 4  # 16 reviews: enough for every code path, fast to build and read


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stage's working directory (params.yaml inside), apart from the archives in tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    write_params(work, repo_params())
    monkeypatch.chdir(work)
    monkeypatch.delenv("IMDB_ARCHIVE", raising=False)
    return work


def run_download(archive: Path | str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setenv("IMDB_ARCHIVE", str(archive))
    return run_stage(*stage_commands()["download"], capsys)


def test_truncated_archive_is_a_clear_error_and_writes_nothing(tmp_path, workdir, monkeypatch, capsys):
    whole = make_archive(tmp_path / "whole.tar.gz", per_folder=PER_FOLDER).read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    code, _out, err = run_download(truncated, monkeypatch, capsys)
    assert_user_error(code, err, str(truncated), "truncated", "IMDB_ARCHIVE")
    assert outputs_under(workdir) == set()


@pytest.mark.parametrize("content", [b"<html>Not Found</html>\n", gzip.compress(b"plain text, gzipped, no tar inside\n" * 40)],
                         ids=["not-gzip", "gzip-not-tar"])
def test_file_that_is_not_a_tar_gz_is_a_clear_error(tmp_path, workdir, monkeypatch, capsys, content):
    fake = tmp_path / "aclImdb_v1.tar.gz"
    fake.write_bytes(content)
    code, _out, err = run_download(fake, monkeypatch, capsys)
    assert_user_error(code, err, str(fake), "not a readable .tar.gz")
    assert outputs_under(workdir) == set()


@pytest.mark.parametrize("present, missing", [(("train",), "test"), (("test",), "train")])
def test_archive_without_a_split_names_the_missing_folder(tmp_path, workdir, monkeypatch, capsys, present, missing):
    archive = make_archive(tmp_path / "one_split.tar.gz", per_folder=PER_FOLDER, splits=present)
    code, _out, err = run_download(archive, monkeypatch, capsys)
    assert_user_error(code, err, f"aclImdb/{missing}/", "official layout")
    assert outputs_under(workdir) == set()


def test_official_extras_are_ignored_and_the_output_is_byte_identical(tmp_path):
    plain = make_archive(tmp_path / "labeled.tar.gz", per_folder=PER_FOLDER)
    official = make_archive(tmp_path / "official.tar.gz", per_folder=PER_FOLDER, official_extras=True)
    with tarfile.open(official) as tar:  # the extras really are in there
        assert {"aclImdb/train/unsup/0_0.txt", "aclImdb/imdb.vocab", "aclImdb/train/urls_pos.txt"} <= set(tar.getnames())
    write_reviews(read_reviews(plain), tmp_path / "plain.jsonl")
    write_reviews(read_reviews(official), tmp_path / "official.jsonl")
    assert (tmp_path / "plain.jsonl").read_bytes() == (tmp_path / "official.jsonl").read_bytes()
    assert len((tmp_path / "plain.jsonl").read_text().splitlines()) == 4 * PER_FOLDER


def hostile_archive(path: Path, outside: Path, secret: Path) -> Path:
    """A valid archive plus members that try to escape: absolute, `..`, symlinks and hard links."""
    make_archive(path.with_suffix(".base.tar.gz"), per_folder=PER_FOLDER)
    with tarfile.open(path.with_suffix(".base.tar.gz")) as source, tarfile.open(path, "w:gz") as tar:
        for member in source:
            tar.addfile(member, source.extractfile(member))
        add_file(tar, str(outside / "aclImdb/train/pos/900_9.txt"), b"EVIL absolute path")  # absolute
        add_file(tar, "../aclImdb/train/pos/901_9.txt", b"EVIL parent path")
        add_file(tar, "aclImdb/train/pos/../../../902_9.txt", b"EVIL dotdot inside")
        add_file(tar, "aclImdb/train/pos/..", b"EVIL member named ..")
        add_file(tar, str(outside / "escaped.txt"), b"EVIL written outside")
        for name, kind in (("aclImdb/train/pos/903_9.txt", tarfile.SYMTYPE), ("aclImdb/test/neg/904_1.txt", tarfile.LNKTYPE),
                           ("aclImdb/test/pos/905_9.txt", tarfile.SYMTYPE)):
            link = tarfile.TarInfo(name)
            link.type = kind
            link.linkname = str(secret) if name != "aclImdb/test/pos/905_9.txt" else "../../../../secret.txt"
            tar.addfile(link)
        directory_link = tarfile.TarInfo("aclImdb/train/neg")  # the folder itself replaced by a link
        directory_link.type = tarfile.SYMTYPE
        directory_link.linkname = str(outside)
        tar.addfile(directory_link)
    path.with_suffix(".base.tar.gz").unlink()
    return path


def test_absolute_dotdot_and_link_members_are_never_read_or_written(tmp_path, workdir, monkeypatch, capsys):
    outside = tmp_path / "outside"
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET outside the archive")
    archive = hostile_archive(tmp_path / "hostile.tar.gz", outside, secret)
    before = files_under(tmp_path)

    code, _out, err = run_download(archive, monkeypatch, capsys)

    assert code == 0, err
    # Only the stage's own output appeared, anywhere under tmp (nothing extracted, nothing escaped).
    assert files_under(tmp_path) - before == {"work/data/reviews.jsonl"}
    assert not outside.exists()
    assert secret.read_text() == "SECRET outside the archive"
    text = (workdir / "data/reviews.jsonl").read_text(encoding="utf-8")
    assert "EVIL" not in text and "SECRET" not in text
    clean = make_archive(tmp_path / "clean.tar.gz", per_folder=PER_FOLDER)
    assert [review.sort_key() for review in read_reviews(archive)] == [review.sort_key() for review in read_reviews(clean)]


def archive_with(tmp_path: Path, members: list[tuple[str, bytes]]) -> Path:
    return make_archive(tmp_path / "extra.tar.gz", per_folder=PER_FOLDER, extra_members=members)


def test_invalid_utf8_review_is_kept_with_a_warning(tmp_path, capsys):
    archive = archive_with(tmp_path, [("aclImdb/train/pos/500_8.txt", b"caf\xe9 was great \xff fine")])
    reviews = read_reviews(archive)
    kept = [review for review in reviews if review.id == 500]
    assert len(kept) == 1 and kept[0].text == "caf\ufffd was great \ufffd fine"
    warning = capsys.readouterr().err
    assert "warning: aclImdb/train/pos/500_8.txt has invalid UTF-8 at byte 3" in warning


@pytest.mark.parametrize("content", [b"", b"<br /><br /> !!! ..."], ids=["empty-file", "no-tokens-left"])
def test_empty_review_is_kept_and_becomes_one_pad_step(tmp_path, content):
    archive = archive_with(tmp_path, [("aclImdb/test/neg/500_2.txt", content)])
    reviews = [review.__dict__ for review in read_reviews(archive)]
    assert any(review["id"] == 500 and review["text"] == content.decode() for review in reviews)
    config = DataConfig(min_freq=1, vocab_size=100, fix_length=8)
    preprocess(reviews, config, tmp_path / "prepared", tmp_path / "vocab.tsv")
    vocab = read_vocab(tmp_path / "vocab.tsv")
    x, lengths, y = encode_split(tmp_path / "prepared/test.tsv", TokenIds(vocab), config.fix_length)
    ids = [int(line.split("\t")[2]) for line in (tmp_path / "prepared/test.tsv").read_text().splitlines()]
    row = [position for position, (review_id, label) in enumerate(zip(ids, y.tolist(), strict=True)) if review_id == 500 and label == 0]
    assert len(row) == 1
    assert lengths[row[0]] == 1
    assert np.all(x[row[0]] == vocab.index(PAD))


@pytest.mark.parametrize("name", ["aclImdb/train/pos/great_movie.txt", "aclImdb/test/neg/12-3.txt", "aclImdb/train/neg/7_8.text"])
def test_member_not_named_id_rating_is_a_clear_error(tmp_path, workdir, monkeypatch, capsys, name):
    archive = archive_with(tmp_path, [(name, b"a review")])
    code, _out, err = run_download(archive, monkeypatch, capsys)
    assert_user_error(code, err, name, "<id>_<rating>.txt")
    assert outputs_under(workdir) == set()


def test_imdb_archive_pointing_at_a_missing_file(tmp_path, workdir, monkeypatch, capsys):
    missing = tmp_path / "nowhere" / "aclImdb_v1.tar.gz"
    code, _out, err = run_download(missing, monkeypatch, capsys)
    assert_user_error(code, err, f"IMDB_ARCHIVE={missing}", "does not exist", "unset it")
    assert outputs_under(workdir) == set()


def test_imdb_archive_pointing_at_a_directory(tmp_path, workdir, monkeypatch, capsys):
    folder = tmp_path / "aclImdb"
    folder.mkdir()
    code, _out, err = run_download(folder, monkeypatch, capsys)
    assert_user_error(code, err, f"IMDB_ARCHIVE={folder}", "is a directory", "archive file itself")
    assert outputs_under(workdir) == set()


def test_dot_slash_prefixed_members_are_read(tmp_path) -> None:
    """`tar -C dir .` writes members as ./aclImdb/...; they are the official layout all the same."""
    import tarfile

    from rnnlab.text.archive import read_reviews

    archive = tmp_path / "dotted.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("./aclImdb/train/pos/1_9.txt", "./aclImdb/test/neg/2_1.txt"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"good"))
    reviews = read_reviews(archive)
    assert [(review.split, review.label, review.id) for review in reviews] == [("train", 1, 1), ("test", 0, 2)]


# --- issue 25: gzip bombs -------------------------------------------------------------------------

GiB, MiB = 2**30, 2**20


def read_bounded(archive: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                 workdir: Path) -> tuple[str, float, float]:
    """The download stage on `archive`, over an earlier good output: its one error line, seconds, and the
    peak of Python's allocations (MiB) meanwhile. The earlier output must be left as it was."""
    previous = workdir / "data/reviews.jsonl"
    previous.parent.mkdir(parents=True, exist_ok=True)
    previous.write_text('{"earlier": "good output"}\n')
    tracemalloc.start()
    started = time.perf_counter()
    try:
        code, _out, err = run_download(archive, monkeypatch, capsys)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / MiB
    finally:
        tracemalloc.stop()
    message = assert_user_error(code, err, str(archive), "is not the IMDB archive or is hostile", "IMDB_ARCHIVE")
    assert previous.read_text() == '{"earlier": "good output"}\n'
    assert outputs_under(workdir) == {"data/reviews.jsonl"}
    return message, seconds, peak


def test_the_issues_bomb_is_refused_from_its_header_in_a_moment(tmp_path, workdir, monkeypatch, capsys):
    """21 MB whose one review member inflates to 20 GiB (the issue: 6.35 GB of memory in 35 s, then a
    MemoryError traceback). The header declares the size, so none of the zeros is inflated."""
    bomb = make_bomb(tmp_path / "bomb.tar.gz", [("aclImdb/train/pos/12500_10.txt", 20 * GiB)])
    assert 20 * MiB < bomb.stat().st_size < 22 * MiB
    message, seconds, peak = read_bounded(bomb, monkeypatch, capsys, workdir)
    assert "member aclImdb/train/pos/12500_10.txt declares 20 GiB, more than the 256 MiB any member may have" in message
    assert "MEMBER_BYTES in rnnlab/text/archive.py" in message
    assert seconds < 5 and peak < 16, (seconds, peak)


def test_a_long_review_is_refused_from_its_header(tmp_path, workdir, monkeypatch, capsys):
    bomb = make_bomb(tmp_path / "long.tar.gz", [("aclImdb/test/neg/7_1.txt", 32 * MiB)])
    message, _seconds, peak = read_bounded(bomb, monkeypatch, capsys, workdir)
    assert "review aclImdb/test/neg/7_1.txt declares 32 MiB, more than the 16 MiB a review may have (REVIEW_BYTES" in message
    assert peak < 16, peak


def test_a_bomb_spread_over_skipped_members_stops_at_the_total(tmp_path, workdir, monkeypatch, capsys):
    """Members the reader skips (unsup/) are inflated all the same to get past them: their bytes count.
    The total is lowered to 64 MiB so the test inflates little; the real limit is 1 GiB."""
    monkeypatch.setattr(imdb_archive, "ARCHIVE_BYTES", 64 * MiB)
    bomb = make_bomb(tmp_path / "spread.tar.gz", [(f"aclImdb/train/unsup/{number}_0.txt", 16 * MiB) for number in range(8)])
    message, seconds, peak = read_bounded(bomb, monkeypatch, capsys, workdir)
    assert "it expands to more than 64 MiB (ARCHIVE_BYTES in rnnlab/text/archive.py)" in message
    assert seconds < 10 and peak < 16, (seconds, peak)


def test_an_oversized_long_name_header_is_refused_before_tarfile_reads_it(tmp_path, workdir, monkeypatch, capsys):
    """tarfile reads a GNU long-name (or pax) header member whole before returning the member it names."""
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, 2 * GiB
    bomb = tmp_path / "longname.tar.gz"
    with gzip.open(bomb, "wb") as handle:
        handle.write(header.tobuf(tarfile.GNU_FORMAT) + bytes(MiB))  # the rest of its 2 GiB never comes
    message, _seconds, peak = read_bounded(bomb, monkeypatch, capsys, workdir)
    assert "a long-name or pax header member declares 2.0 GiB, more than the 1.0 MiB such a header may have" in message
    assert peak < 16, peak


def test_a_review_is_read_in_chunks_and_cut_off_at_the_limit(monkeypatch):
    """Whatever a header says (a sparse member expands past it), no more than REVIEW_BYTES is read."""
    monkeypatch.setattr(imdb_archive, "REVIEW_BYTES", 100_000)
    reads: list[int] = []
    endless = io.BytesIO(bytes(10**6))
    real_read = endless.read
    endless.read = lambda size=-1: reads.append(size) or real_read(size)  # type: ignore[method-assign, func-returns-value, arg-type]
    with pytest.raises(imdb_archive.ArchiveLimitError, match=r"member is longer than 97.7 KiB, the longest review"):
        imdb_archive.read_review_bytes(endless, "member")
    assert set(reads) == {imdb_archive.CHUNK} and len(reads) * imdb_archive.CHUNK <= 100_000 + imdb_archive.CHUNK


def test_the_limits_are_far_above_the_real_archive_and_in_the_docs():
    """Measured on the labeled copy of the real archive: longest review 13,704 bytes, largest member
    845,980 bytes (imdb.vocab), the whole tar 104,857,600 bytes; the docs quote the limits."""
    assert imdb_archive.REVIEW_BYTES >= 1000 * 13_704 and imdb_archive.MEMBER_BYTES >= 100 * 845_980
    assert imdb_archive.ARCHIVE_BYTES >= 10 * 104_857_600
    troubleshooting = (REPO / "docs/troubleshooting.md").read_text(encoding="utf-8")
    for name in ("REVIEW_BYTES", "MEMBER_BYTES", "ARCHIVE_BYTES", "HEADER_BYTES"):
        assert f"{name}` ({size_text(getattr(imdb_archive, name))})" in troubleshooting, name


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"], ids=["with-byte-order-mark", "without"])
def test_utf16_reviews_are_one_line_naming_the_encoding(tmp_path, workdir, monkeypatch, capsys, encoding):
    reviews = [(f"aclImdb/{split}/{label}/{number}_{7 if label == 'pos' else 2}.txt", f"A {label} film, take {number}.".encode(encoding))
               for split in ("train", "test") for label in ("pos", "neg") for number in range(PER_FOLDER)]
    archive = make_archive(tmp_path / "utf16.tar.gz", splits=(), extra_members=reviews)
    code, _out, err = run_download(archive, monkeypatch, capsys)
    assert_user_error(code, err, "UTF-16", "not UTF-8", "iconv -f UTF-16 -t UTF-8")
    assert "warning" not in err and outputs_under(workdir) == set()
