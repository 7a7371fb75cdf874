"""End-to-end: `python -m tools.review` on a tiny real pipeline repo with three commits, offline.

1. the pipeline run (relu, tanh, leaky_relu; one order variant; the linear baseline);
2. a change to one variant (relu's learning rate), one variant removed (leaky_relu), one added (sigmoid);
3. a change that touches no model (a README).
The review of 1 → 2 must see relu change and nothing else, and the review of 2 → 3 no change at all.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from bench.dvc_repo import copy_pipeline
from rnnlab.testing.archive import make_archive
from tests.e2e.test_pipeline import PipelineRepo, patch_params

pytestmark = pytest.mark.e2e

REVIEWS_PER_FOLDER = 40  # 160 reviews: 80 in the test split
BASE_VARIANTS = {"relu": {"model": {"activation": "relu"}}, "tanh": {"model": {"activation": "tanh"}},
                 "leaky_relu": {"model": {"activation": "leaky_relu"}}}
INTERVAL = re.compile(r"\| ([+-]\d+\.\d\d) \[([+-]\d+\.\d\d), ([+-]\d+\.\d\d)\] \|")


@dataclass(frozen=True)
class Reviews:
    repo: PipelineRepo
    change: str      # markdown of commit 1 -> commit 2
    no_change: str   # markdown of commit 2 -> commit 3
    out: Path        # where the first review wrote its charts


def edit_params(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def rows(markdown: str) -> dict[str, str]:
    """variant -> its table row."""
    return {line.split("|")[1].strip().strip("`"): line for line in markdown.splitlines() if line.startswith("| `") and line.endswith("** |")}


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Reviews:
    base = tmp_path_factory.mktemp("review")
    archive = make_archive(base / "archive" / "aclImdb_v1.tar.gz", per_folder=REVIEWS_PER_FOLDER)
    path = base / "repo"
    path.mkdir()
    copy_pipeline(path)
    patch_params(path / "params.yaml")

    def tiny_studies(raw: dict) -> None:
        raw["variants"] = BASE_VARIANTS
        raw["order"]["variants"] = {"order_rnn": {"model": {"cell": "rnn"}}}
        raw["baseline"]["c_grid"] = [0, 0]

    edit_params(path / "params.yaml", tiny_studies)
    repo = PipelineRepo(path, archive)
    repo.git("init", "-q", "-b", "main")
    repo.dvc("init", "-q")
    repo.dvc("config", "core.analytics", "false")
    repo.commit("pipeline under test")  # DVCLive reads the git HEAD: a repository without commits has none
    repo.dvc("repro")
    repo.commit("first run")
    repo.git("tag", "first")

    def change_relu_swap_leaky_for_sigmoid(raw: dict) -> None:
        raw["variants"]["relu"]["train"] = {"lr": 0.05}
        del raw["variants"]["leaky_relu"]
        raw["variants"]["sigmoid"] = {"model": {"activation": "sigmoid"}}

    edit_params(path / "params.yaml", change_relu_swap_leaky_for_sigmoid)
    repo.dvc("repro")
    # DVC leaves a removed stage's outputs on disk; a pull request removes them with the variant.
    for stale in ("metrics/leaky_relu.json", "plots/predictions/leaky_relu.csv", "plots/gradients/leaky_relu.json",
                  "plots/history/leaky_relu.json", "reports/timings/leaky_relu.json"):
        (path / stale).unlink(missing_ok=True)
    repo.commit("relu: lr 0.05; leaky_relu out, sigmoid in")
    repo.git("tag", "second")
    (path / "README.md").write_text("A tiny RNN Lab for the review test.\n", encoding="utf-8")
    repo.commit("docs only")

    review = [sys.executable, "-m", "tools.review"]
    repo.run(*review, "first", "second", "--out", "review-change")
    repo.run(*review, "second", "--out", "review-none")  # head: the workspace, as committed in commit 3
    return Reviews(repo, (path / "review-change" / "review.md").read_text(encoding="utf-8"),
                   (path / "review-none" / "review.md").read_text(encoding="utf-8"), path / "review-change")


def test_changed_variant_is_not_no_change_and_untouched_ones_are(reviews: Reviews) -> None:
    table = rows(reviews.change)
    assert set(table) == {"relu", "tanh", "order_rnn", "linear_tfidf"}
    assert not table["relu"].endswith("**no change** |")
    assert re.search(r"\*\*(within test-sampling noise|changed beyond test-sampling noise \(no seed band\))\*\* \|$", table["relu"])
    for untouched in ("tanh", "order_rnn", "linear_tfidf"):
        assert table[untouched].endswith("**no change** |"), table[untouched]
        assert "+0.00 [+0.00, +0.00]" in table[untouched] and "no seed band" in table[untouched]


def test_paired_interval_brackets_the_accuracy_delta(reviews: Reviews) -> None:
    relu = rows(reviews.change)["relu"]
    difference, low, high = map(float, INTERVAL.search(relu).groups())
    assert low <= difference <= high and low < high
    accuracies = re.search(r"\| (\d+\.\d\d) % → (\d+\.\d\d) % \(([+-]\d+\.\d\d)\) \|", relu)
    if accuracies:  # the accuracy itself may be equal while predictions differ
        assert float(accuracies.group(3)) == pytest.approx(difference)
    assert "paired bootstrap over the test examples (10,000 resamples, seed 0, percentile 95 % interval)" in reviews.change
    assert "McNemar: exact two-sided test" in reviews.change


def test_added_and_removed_variants_and_params(reviews: Reviews) -> None:
    assert re.search(r"^\*\*Variants added:\*\* `sigmoid` \(\d+\.\d\d %\)\.$", reviews.change, re.MULTILINE)
    assert re.search(r"^\*\*Variants removed:\*\* `leaky_relu` \(was \d+\.\d\d %\)\.$", reviews.change, re.MULTILINE)
    assert "`variants.relu.train.lr`" in reviews.change or "`variants.relu`" in reviews.change
    assert (reviews.out / "relu.png").is_file() and "![relu.png](relu.png)" in reviews.change
    assert (reviews.out / "sigmoid.png").is_file() and not (reviews.out / "tanh.png").exists()


def test_environment_line_names_the_shared_environment(reviews: Reviews) -> None:
    line = next(line for line in reviews.change.splitlines() if line.startswith("**Environment"))
    # Every variant shares one environment (the thread count is not part of it in reproducible mode).
    assert re.fullmatch(r"\*\*Environment:\*\* same on both sides: cpu, \w+, torch [\w.+]+, reproducible\.", line), line


def test_a_change_that_touches_no_model_is_no_change_everywhere(reviews: Reviews) -> None:
    table = rows(reviews.no_change)
    assert set(table) == {"relu", "tanh", "sigmoid", "order_rnn", "linear_tfidf"}
    assert all(row.endswith("**no change** |") for row in table.values()), reviews.no_change
    assert "**Variants added or removed:** none." in reviews.no_change
    assert "**Params changed** (`dvc params diff`): none." in reviews.no_change
    assert "`second`" in reviews.no_change and "→ workspace" in reviews.no_change
    assert "**Charts:** none (no variant changed)." in reviews.no_change
