"""Issue 6, data source: damaged, odd or hostile archives and a bad IMDB_ARCHIVE fail clearly or are ignored.

Each test builds its archive on purpose (tests/fixtures.py plus hand-made tar members) and runs the
real code: `read_reviews` for what is kept, the download CLI for exit code and message.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from rnnlab.config.sections import DataConfig
from rnnlab.text.archive import read_reviews, write_reviews
from rnnlab.text.encode import encode_split
from rnnlab.text.prepare import preprocess
from rnnlab.testing.archive import add_file, make_archive
from rnnlab.text.tokenize import PAD
from rnnlab.text.vocab import read_vocab
from tests.support.stage_runner import (assert_user_error, files_under, outputs_under, repo_params, run_stage, stage_commands,
                                        write_params)

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
    index = {token: position for position, token in enumerate(vocab)}
    x, lengths, y = encode_split(tmp_path / "prepared/test.tsv", index, config.fix_length)
    ids = [int(line.split("\t")[2]) for line in (tmp_path / "prepared/test.tsv").read_text().splitlines()]
    row = [position for position, (review_id, label) in enumerate(zip(ids, y.tolist())) if review_id == 500 and label == 0]
    assert len(row) == 1
    assert lengths[row[0]] == 1
    assert np.all(x[row[0]] == index[PAD])


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
