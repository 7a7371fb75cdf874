"""End-to-end: `python -m tools.review` on a tiny real pipeline repo, offline.

Commits:
1. the pipeline run (relu, tanh, leaky_relu; one order variant; the linear baseline), tagged `first`;
2. a change to one variant (relu's learning rate), one variant removed (leaky_relu), one added (sigmoid), `second`;
3. a change that touches no model (a README).
The review of 1 → 2 must see relu change and nothing else, 2 → 3 no change at all; a workspace whose
params moved on without a rerun shows *not rerun*; flipped predictions are an error naming the file;
and the CI workflow's review step, run as GitHub would, answers with a comment also when the review fails.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.dvc_repo import copy_pipeline
from rnnlab.comparison import verdicts
from rnnlab.comparison.render import MARKER
from bench.archive import make_archive
from tests.e2e.test_pipeline import PipelineRepo, patch_params
from tests.pipeline.test_review_workflow import WORKFLOW, run_step

pytestmark = pytest.mark.e2e

REVIEWS_PER_FOLDER = 40  # 160 reviews: 80 in the test split
BASE_VARIANTS = {"relu": {"model": {"activation": "relu"}}, "tanh": {"model": {"activation": "tanh"}},
                 "leaky_relu": {"model": {"activation": "leaky_relu"}}}
SAMPLING = re.compile(r"\| ([+-]\d+\.\d\d) \[([+-]\d+\.\d\d), ([+-]\d+\.\d\d)\], p ")
REVIEW = [sys.executable, "-m", "tools.review"]


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
    """variant -> its table row (the main table or the collapsed *no change* one)."""
    return {line.split("|")[1].strip().strip("`"): line for line in markdown.splitlines() if line.startswith("| `") and line.endswith("** |")}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


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
                  "reports/timings/leaky_relu.json"):
        (path / stale).unlink(missing_ok=True)
    shutil.rmtree(path / "plots" / "history" / "leaky_relu", ignore_errors=True)
    repo.commit("relu: lr 0.05; leaky_relu out, sigmoid in")
    repo.git("tag", "second")
    (path / "README.md").write_text("A tiny RNN Lab for the review test.\n", encoding="utf-8")
    repo.commit("docs only")

    repo.run(*REVIEW, "first", "second", "--out", "review-change")
    repo.run(*REVIEW, "second", "--out", "review-none")  # head: the workspace, as committed in commit 3
    return Reviews(repo, (path / "review-change" / "review.md").read_text(encoding="utf-8"),
                   (path / "review-none" / "review.md").read_text(encoding="utf-8"), path / "review-change")


def test_changed_variant_is_not_no_change_and_untouched_ones_are(reviews: Reviews) -> None:
    table = rows(reviews.change)
    assert set(table) == {"relu", "tanh", "order_rnn", "linear_tfidf"}
    assert re.search(r"\*\*(within|changed beyond) test-sampling noise \(no seed band\)\*\* \|$", table["relu"]), table["relu"]
    for untouched in ("tanh", "order_rnn", "linear_tfidf"):
        assert table[untouched].endswith("**no change** |"), table[untouched]
    assert "<details><summary>3 variants with no change (linear_tfidf, tanh, order_rnn)</summary>" in reviews.change
    assert re.search(r"^\*\*Summary: 0 of 4 beyond seed noise\.\*\* Also 1 \*(within|changed beyond) test-sampling noise .*3 \*no change\*\.$",
                     reviews.change, re.MULTILINE)


def test_paired_interval_brackets_the_accuracy_delta(reviews: Reviews) -> None:
    relu = rows(reviews.change)["relu"]
    difference, low, high = map(float, SAMPLING.search(relu).groups())
    assert low <= difference <= high and low < high
    accuracies = re.search(r"\| (\d+\.\d\d) % → (\d+\.\d\d) % \|", relu)
    if accuracies:  # the accuracy itself may be equal while predictions differ
        assert float(accuracies.group(2)) - float(accuracies.group(1)) == pytest.approx(difference, abs=0.011)
    assert "Newcombe's paired score interval" in reviews.change and "McNemar's exact test" in reviews.change


def test_added_and_removed_variants_and_params(reviews: Reviews) -> None:
    assert re.search(r"^\*\*Variants added:\*\* `sigmoid` \(\d+\.\d\d %\)\.$", reviews.change, re.MULTILINE)
    assert re.search(r"^\*\*Variants removed:\*\* `leaky_relu` \(was \d+\.\d\d %\)\.$", reviews.change, re.MULTILINE)
    assert "| params.yaml | `variants.relu.train.lr` | (absent) | `0.05` |" in reviews.change
    # relu's curves are drawn when it moved beyond noise (tiny data: either verdict), else the report says how to see them
    relu_moved = rows(reviews.change)["relu"].endswith(f"**{verdicts.CHANGED_WITHOUT_BAND}** |")
    assert (reviews.out / "relu.png").is_file() == relu_moved == ("![relu.png](relu.png)" in reviews.change)
    assert relu_moved or "Training curves of the changes within noise (`relu`) are not drawn: `dvc plots diff " in reviews.change
    assert (reviews.out / "deltas.png").is_file() and "![deltas.png](deltas.png)" in reviews.change
    assert (reviews.out / "sigmoid.png").is_file() and not (reviews.out / "tanh.png").exists()


def test_environment_line_says_both_sides_share_one(reviews: Reviews) -> None:
    line = next(line for line in reviews.change.splitlines() if line.startswith("**Environment") or line.startswith("**⚠ Environment"))
    assert re.fullmatch(r"\*\*Environment:\*\* the same on both sides for every variant \(.*torch [\w.+]+.*\)\.", line), line


def test_timings_are_shown_and_labelled_machine_dependent(reviews: Reviews) -> None:
    assert "<summary>Timings: seconds per training epoch (machine-dependent: not comparable across machines)</summary>" in reviews.change
    assert re.search(r"^\| `relu` \| \d+\.\d \(.+\) \| \d+\.\d \(.+\) \|$", reviews.change, re.MULTILINE), reviews.change


def test_a_change_that_touches_no_model_is_no_change_everywhere(reviews: Reviews) -> None:
    table = rows(reviews.no_change)
    assert set(table) == {"relu", "tanh", "sigmoid", "order_rnn", "linear_tfidf"}
    assert all(row.endswith("**no change** |") for row in table.values()), reviews.no_change
    assert "**Summary: 0 of 5 beyond seed noise.** Also 5 *no change*." in reviews.no_change
    assert "**Variants added or removed:** none." in reviews.no_change
    assert "**Params changed:** none." in reviews.no_change
    assert "`second`" in reviews.no_change and "→ workspace" in reviews.no_change
    assert "**Charts:** none (no variant changed)." in reviews.no_change
    assert "Not rerun" not in reviews.no_change and "Not checked" not in reviews.no_change


def test_params_changed_without_a_rerun_are_not_rerun(reviews: Reviews) -> None:
    """train.lr edited in the workspace, `dvc repro` not run: every IMDB variant's stages list `train`, relu's too
    (it overrides lr, but DVC tracks the key, not the merged value: `dvc status` names it as well)."""
    repo, params = reviews.repo, reviews.repo.path / "params.yaml"
    committed = params.read_text(encoding="utf-8")
    try:
        edit_params(params, lambda raw: raw["train"].update(lr=0.02))
        repo.run(*REVIEW, "HEAD", "--out", "review-stale")
        markdown = (repo.path / "review-stale" / "review.md").read_text(encoding="utf-8")
    finally:
        params.write_text(committed, encoding="utf-8")
    table = rows(markdown)
    assert all(table[name].endswith("**not rerun** |") for name in ("relu", "tanh", "sigmoid"))
    assert all(table[name].endswith("**no change** |") for name in ("order_rnn", "linear_tfidf"))
    assert "3 *not rerun* (`relu`, `sigmoid`, `tanh`)" in markdown
    assert re.search(r"^- `tanh`: head \(workspace\): `train@tanh` ran with other params than the revision's: train\.lr: 0\.01 → 0\.02",
                     markdown, re.MULTILINE), markdown


def test_predictions_that_do_not_match_their_metrics_are_an_error(reviews: Reviews) -> None:
    repo, predictions = reviews.repo, reviews.repo.path / "plots" / "predictions" / "tanh.csv"
    committed = predictions.read_text(encoding="utf-8")
    table = [line.split(",") for line in committed.splitlines()]
    right = [number for number, row in enumerate(table[1:], start=1) if row[0] == row[1]][:20]
    for number in right:  # 20 right predictions made wrong, the metrics file untouched
        table[number][1] = "neg" if table[number][1] == "pos" else "pos"
    try:
        predictions.write_text("".join(",".join(row) + "\n" for row in table), encoding="utf-8")
        result = repo.run(*REVIEW, "HEAD", "--out", "review-mismatch", check=False)
    finally:
        predictions.write_text(committed, encoding="utf-8")
    assert result.output.count("\n") == 1, result.output
    assert re.fullmatch(r"error: plots/predictions/tanh\.csv at workspace gives test accuracy \d+\.\d\d % but metrics/tanh\.json "
                        r"says \d+\.\d\d %: they are not from the same run.*\n", result.output), result.output
    assert not (repo.path / "review-mismatch").exists()


def test_ci_review_step_answers_with_a_comment_when_the_review_fails(reviews: Reviews) -> None:
    """The workflow's own step scripts, run as GitHub would: a review that fails still writes the comment."""
    repo = reviews.repo
    repo.git("update-ref", "refs/remotes/origin/second", "second")  # what `actions/checkout` fetches as origin/<base>
    env = {**repo.env, "RUN_URL": "https://example.invalid/run/1", "NOTE": "No DVC remote is configured.",
           "GITHUB_OUTPUT": str(repo.path / "github-output")}
    shutil.rmtree(repo.path / "comment", ignore_errors=True)

    failed = run_step(WORKFLOW, "Review against the base branch", repo.path, {**env, "BASE_REF": "nosuch"}, base_env=repo.env)
    assert failed.returncode == 2
    comment = (repo.path / "comment" / "comment.md").read_text(encoding="utf-8")
    assert comment.startswith(f"{MARKER}\n## RNN Lab review failed\n")
    assert "\nerror: unknown revision 'origin/nosuch': neither a git revision nor a DVC experiment name;" in comment
    fallback = run_step(WORKFLOW, "Say which step failed", repo.path, env, base_env=repo.env)
    assert fallback.returncode == 0 and (repo.path / "comment" / "comment.md").read_text(encoding="utf-8") == comment  # kept

    (repo.path / "comment" / "comment.md").unlink()  # as when installing or `dvc repro` failed before the review
    run_step(WORKFLOW, "Say which step failed", repo.path, env, base_env=repo.env)
    assert "A step before the review failed" in (repo.path / "comment" / "comment.md").read_text(encoding="utf-8")

    passed = run_step(WORKFLOW, "Review against the base branch", repo.path, {**env, "BASE_REF": "second"}, base_env=repo.env)
    assert passed.returncode == 0, passed.stderr
    comment = (repo.path / "comment" / "comment.md").read_text(encoding="utf-8")
    assert comment.startswith(MARKER) and "**Summary: 0 of 5 beyond seed noise.**" in comment
    assert comment.endswith("_No DVC remote is configured._\n")


def test_a_reseed_against_a_seed_band_asks_for_more_seeds(reviews: Reviews) -> None:
    """relu's seed 1 joins the band (`tools.seed_bands`), seed 2 is reviewed against the commit: a pure reseed, one
    run against two, which no rank rule can judge: the review says so and how many seeds it would take. (Last
    in this module: it commits.)"""
    repo = reviews.repo
    for seed in (1, 2):
        repo.dvc("exp", "run", "--temp", "-n", f"relu-s{seed}", "-S", f"train.seed={seed}", "evaluate@relu")
    repo.run(sys.executable, "-m", "tools.seed_bands", "--seeds", "0", "1")
    band = yaml.safe_load((repo.path / "reports" / "seed_bands.json").read_text(encoding="utf-8"))["variants"]["relu"]
    assert band["runs"] == ["(committed)", "relu-s1"] and band["seeds"] == [0, 1]
    repo.commit("relu's seed band")
    repo.run(*REVIEW, "HEAD", "relu-s2", "--out", "review-reseed")
    markdown = (repo.path / "review-reseed" / "review.md").read_text(encoding="utf-8")
    relu = rows(markdown)["relu"]
    assert relu.endswith(f"**{verdicts.CANNOT_TELL}** |") and "| – (needs 8 head seeds) |" in relu, relu  # 2 / C(10, 2) < 0.05
    assert "  - `relu`: band (committed), relu-s1; head relu-s2" in markdown
