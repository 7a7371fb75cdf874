"""Unit tests for the download stage's archive reading (no network: synthetic archives only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnlab.config.params import DownloadConfig
from rnnlab.core.errors import UserError
from bench.archive import make_archive
from rnnlab.text.archive import read_reviews, write_reviews
from rnnlab.text.fetch import ARCHIVE_ENV, resolve_archive


def canonical_bytes(archive: Path, output: Path) -> bytes:
    write_reviews(read_reviews(archive), output)
    return output.read_bytes()


def test_official_layout_with_extras_is_byte_identical_to_labeled_only(tmp_path: Path) -> None:
    labeled = make_archive(tmp_path / "labeled.tar.gz", per_folder=6, seed=3)
    official = make_archive(tmp_path / "official.tar.gz", per_folder=6, seed=3, official_extras=True)
    assert labeled.read_bytes() != official.read_bytes()  # the archives really differ
    assert canonical_bytes(labeled, tmp_path / "a.jsonl") == canonical_bytes(official, tmp_path / "b.jsonl")


def test_different_content_gives_different_output(tmp_path: Path) -> None:
    # Guards the identity test above against an output that ignores the archive.
    first = make_archive(tmp_path / "first.tar.gz", per_folder=4, seed=1)
    second = make_archive(tmp_path / "second.tar.gz", per_folder=4, seed=2)
    assert canonical_bytes(first, tmp_path / "a.jsonl") != canonical_bytes(second, tmp_path / "b.jsonl")


def test_reviews_sorted_by_split_label_id_and_parsed(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "official.tar.gz", per_folder=12, official_extras=True)
    reviews = read_reviews(archive)
    assert len(reviews) == 4 * 12  # unsup/ and the other extras are ignored
    keys = [(review.split, review.label, review.id) for review in reviews]
    # Numeric ids: 2 sorts before 10 (a string sort would not).
    expected = [(split, label, review_id) for split in ("train", "test") for label in (0, 1) for review_id in range(12)]
    assert keys == expected
    for review in reviews:
        assert (review.label == 1) == (review.rating >= 7)
        assert 1 <= review.rating <= 10 and review.text


def test_output_lines_hold_the_canonical_fields(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "a.tar.gz", per_folder=2)
    output = tmp_path / "reviews.jsonl"
    write_reviews(read_reviews(archive), output)
    first = json.loads(output.read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["split", "label", "rating", "id", "text"]
    assert (first["split"], first["label"], first["id"]) == ("train", 0, 0)


def test_rating_and_text_come_from_the_member(tmp_path: Path) -> None:
    extra = [("aclImdb/test/pos/777_8.txt", "Ünïcode <br />text".encode())]
    archive = make_archive(tmp_path / "a.tar.gz", per_folder=1, extra_members=extra)
    review = next(r for r in read_reviews(archive) if r.id == 777)
    assert (review.split, review.label, review.rating, review.text) == ("test", 1, 8, "Ünïcode <br />text")


def test_missing_split_is_an_error(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "train_only.tar.gz", per_folder=2, splits=("train",))
    with pytest.raises(UserError, match="test"):
        read_reviews(archive)


def test_badly_named_review_is_an_error(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "a.tar.gz", per_folder=1, extra_members=[("aclImdb/train/pos/notes.txt", b"x")])
    with pytest.raises(UserError, match="<id>_<rating>"):
        read_reviews(archive)


def test_truncated_archive_is_an_error(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "a.tar.gz", per_folder=20)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated"):
        read_reviews(truncated)


def test_archive_env_variable_is_used_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_archive(tmp_path / "a.tar.gz", per_folder=1)
    monkeypatch.setenv(ARCHIVE_ENV, str(archive))
    # An unreachable URL proves nothing is fetched.
    assert resolve_archive(DownloadConfig(url="http://127.0.0.1:9/none.tar.gz")) == archive


@pytest.mark.parametrize("make_bad", ["missing", "directory"])
def test_archive_env_variable_must_name_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_bad: str) -> None:
    target = tmp_path / "unpacked"
    if make_bad == "directory":
        target.mkdir()
    monkeypatch.setenv(ARCHIVE_ENV, str(target))
    with pytest.raises(UserError, match=ARCHIVE_ENV):
        resolve_archive(DownloadConfig())
