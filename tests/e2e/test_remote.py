"""Shared cache: outputs pushed to a DVC remote come back in a fresh clone without recomputing."""

from __future__ import annotations

import filecmp
import sys
from pathlib import Path

import pytest

from bench.dvc_repo import make_pipeline_repo, stages_run
from bench.archive import make_archive

ONE_VARIANT = {"relu": {"model": {"activation": "relu"}}}
ONE_ORDER_VARIANT = {"order_rnn": {"model": {"cell": "rnn"}}}
# Every stage's cached outputs for the variants above (dvc.yaml outs).
OUTPUTS = ("data/reviews.jsonl", "data/prepared/train.tsv", "data/vocab.tsv", "data/xy/train/X.npy",
           "data/xy/meta.json", "models/relu.pt", "data/order/test/y.npy", "models/order_rnn.pt")


@pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX paths for the local remote")
def test_push_then_fresh_clone_pulls_every_output_without_recomputing(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "archive.tar.gz", per_folder=20)
    origin = make_pipeline_repo(tmp_path / "origin", archive, variants=ONE_VARIANT, order_variants=ONE_ORDER_VARIANT)
    origin.run("remote", "add", "-d", "shared", str(tmp_path / "remote"))
    # code, params, download, preprocess, xy, order_data, 2 x (train, evaluate), baseline, report, gradient_figure
    assert len(stages_run(origin.run("repro").stdout)) == 13
    origin.commit("results")
    origin.run("push")

    clone = tmp_path / "clone"
    origin.run("git", "clone", "-q", str(origin.root), str(clone), cwd=tmp_path)
    # A recomputed download stage would fail here: the clone can only get its data from the remote.
    origin.environment["IMDB_ARCHIVE"] = str(tmp_path / "no-such-archive.tar.gz")
    output = origin.run("repro", "--pull", cwd=clone).stdout
    assert stages_run(output) == [], output
    assert "up to date" in origin.run("status", cwd=clone).stdout
    for relative in OUTPUTS:
        assert filecmp.cmp(origin.root / relative, clone / relative, shallow=False), relative
