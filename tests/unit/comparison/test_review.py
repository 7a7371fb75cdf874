"""rnnlab.comparison (the statistics and the verdicts) and tools.review on small hand-made git repositories (fast, no training)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from rnnlab.comparison import paired, verdicts
from rnnlab.comparison.render import MARKER
from rnnlab.comparison.review import build_report
from rnnlab.comparison.revision import resolve
from rnnlab.core.errors import UserError
from tools import review as review_tool

VARS = {"metrics": "metrics", "predictions": "plots/predictions", "history": "plots/history",
        "gradients": "plots/gradients", "timings": "reports/timings", "seed_bands": "reports/seed_bands.json"}
ENVIRONMENT = {"reproducible": True, "cpu_capability": "AVX2", "torch": "2.13.0", "device": "cpu", "threads": 2}


# -- statistics -----------------------------------------------------------------------------------

def test_bootstrap_interval_contains_the_true_difference() -> None:
    rng = np.random.default_rng(1)
    # Paired, correlated outcomes: the head fixes 12 % of the base's errors and breaks 2 % of its hits.
    base = rng.random(4000) < 0.70
    flip = rng.random(4000)
    head = np.where(base, flip >= 0.02, flip < 0.12)
    true_difference = 0.30 * 0.12 - 0.70 * 0.02  # +0.022
    comparison = paired.compare(base, head)
    assert comparison.low < true_difference < comparison.high
    assert comparison.low > 0  # 4000 examples resolve a 2-point change
    assert comparison.difference == pytest.approx(head.mean() - base.mean())
    assert comparison.head_only_correct == int(np.sum(head & ~base)) and comparison.paired


def test_bootstrap_is_reproducible_and_pairing_narrows_the_interval() -> None:
    rng = np.random.default_rng(2)
    base = rng.random(1000) < 0.6
    head = base.copy()
    head[:30] = ~head[:30]
    first, second = paired.compare(base, head), paired.compare(base, head)
    assert (first.low, first.high) == (second.low, second.high)  # fixed seed: the report reproduces
    unpaired = paired.compare(base, head, paired=False)
    # Pairing removes the shared per-example variance: the paired interval is far narrower.
    assert (first.high - first.low) < 0.5 * (unpaired.high - unpaired.low)
    assert unpaired.mcnemar_p is None


def test_identical_outcomes_give_a_zero_interval_and_p_one() -> None:
    outcomes = np.array([True, False, True, True])
    comparison = paired.compare(outcomes, outcomes)
    assert (comparison.low, comparison.high, comparison.mcnemar_p) == (0.0, 0.0, 1.0)
    assert comparison.contains_zero


def test_mcnemar_exact_on_a_known_table() -> None:
    # 1 vs 9 discordant pairs: p = 2 * P(X <= 1 | n=10, 1/2) = 2 * 11 / 1024.
    assert paired.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert paired.mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert paired.mcnemar_exact(5, 5) == pytest.approx(1.0)


@pytest.mark.parametrize(("unchanged", "low", "high", "difference", "std", "expected"), [
    (True, 0.0, 0.0, 0.0, 0.02, verdicts.NO_CHANGE),
    (False, -0.01, 0.03, 0.01, 0.02, verdicts.WITHIN_TEST_SAMPLING),
    (False, 0.01, 0.05, 0.03, 0.02, verdicts.WITHIN_SEED_NOISE),      # 3 points <= 2 x 2 points
    (False, 0.03, 0.07, 0.05, 0.02, verdicts.CHANGED),                # 5 points > 2 x 2 points
    (False, -0.07, -0.03, -0.05, 0.02, verdicts.CHANGED),
    (False, 0.03, 0.07, 0.05, None, verdicts.CHANGED_WITHOUT_BAND),
])
def test_verdict_order(unchanged: bool, low: float, high: float, difference: float, std: float | None, expected: str) -> None:
    comparison = paired.Comparison(difference, low, high, True, 0, 0, 1.0)
    assert verdicts.verdict(unchanged, comparison, std) == expected


# -- a hand-made repository -----------------------------------------------------------------------

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def write_variant(repo: Path, variant: str, actual: list[str], predicted: list[str], environment: dict | None = None) -> None:
    correct = np.mean([a == p for a, p in zip(actual, predicted)])
    metrics = {"variant": variant, "study": "imdb", "accuracy": float(correct), "f1": float(correct), "roc_auc": 0.5,
               "loss": 0.69, "environment": environment or ENVIRONMENT}
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics" / f"{variant}.json").write_text(json.dumps(metrics))
    lines = ["actual,predicted,p_neg,p_pos"] + [f"{a},{p},{0.9 if p == 'neg' else 0.1:.6f},{0.1 if p == 'neg' else 0.9:.6f}"
                                                for a, p in zip(actual, predicted)]
    (repo / "plots" / "predictions").mkdir(parents=True, exist_ok=True)
    (repo / "plots" / "predictions" / f"{variant}.csv").write_text("\n".join(lines) + "\n")
    (repo / "plots" / "history").mkdir(parents=True, exist_ok=True)
    history = [{"epoch": epoch, "valid_accuracy": float(correct) - 0.1 / epoch} for epoch in (1, 2, 3)]
    (repo / "plots" / "history" / f"{variant}.json").write_text(json.dumps(history))


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


ACTUAL = ["pos", "neg"] * 100


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"vars": [VARS], "stages": {}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.01}}))
    write_variant(tmp_path, "relu", ACTUAL, ACTUAL[:150] + ["pos"] * 50)
    write_variant(tmp_path, "tanh", ACTUAL, ["pos"] * 200)
    commit_all(tmp_path, "base")
    return tmp_path


def test_unknown_revision_is_a_one_line_error(repo: Path) -> None:
    with pytest.raises(UserError, match=r"unknown revision 'nosuch'.*`git branch -a` and `dvc exp list -A`"):
        resolve(repo, "nosuch")


def test_revision_without_metrics_names_the_fix(repo: Path) -> None:
    git(repo, "rm", "-q", "-r", "metrics")
    commit_all(repo, "no metrics")
    base, head = resolve(repo, "HEAD"), resolve(repo, None)
    with pytest.raises(UserError, match=r"`HEAD` \(\w{7}\) has no metrics \(metrics/\*\.json\): run `dvc repro` there"):
        build_report(base, head, repo / "review")


def test_variant_without_predictions_names_the_fix(repo: Path) -> None:
    (repo / "plots" / "predictions" / "tanh.csv").unlink()
    with pytest.raises(UserError, match=r"variant tanh has metrics but no predictions at workspace:plots/predictions/tanh\.csv; rerun"):
        build_report(resolve(repo, "main"), resolve(repo, None), repo / "review")


def test_experiment_name_resolves_to_its_commit(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/default-seed1", base)
    assert resolve(repo, "default-seed1").commit == base


def test_cli_error_is_one_line_with_exit_2(repo: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tools.review", "nosuch", "--repo", str(repo), "--out", str(repo / "r")],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[3])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: unknown revision 'nosuch'")


def test_report_with_a_seed_band_and_a_changed_environment(repo: Path) -> None:
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    commit_all(repo, "dvc init")
    # relu: 25 more examples right (87.5 % -> 100 %), far beyond a 1-point seed std; tanh: one example differs.
    write_variant(repo, "relu", ACTUAL, ACTUAL, environment={**ENVIRONMENT, "cpu_capability": "AVX512"})
    write_variant(repo, "tanh", ACTUAL, ["neg"] + ["pos"] * 199)
    write_variant(repo, "gru", ACTUAL, ACTUAL)
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.02}}))
    (repo / "reports").mkdir()
    bands = {"commit": "f" * 40, "variants": {"relu": {"seeds": [0, 1, 2], "mean": 0.8, "std": 0.01, "accuracies": [0.79, 0.8, 0.81]}}}
    (repo / "reports" / "seed_bands.json").write_text(json.dumps(bands))
    out = repo / "review"
    review_tool.main(["main", "--repo", str(repo), "--out", str(out)])
    markdown = (out / "review.md").read_text()
    assert markdown.startswith(MARKER)
    rows = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| `") and line.endswith("** |")}
    assert rows["`relu`"].endswith(f"**{verdicts.CHANGED}** |") and "± 1.00 (seeds 0, 1, 2)" in rows["`relu`"]
    assert "87.50 % → 100.00 % (+12.50)" in rows["`relu`"] and "(25 vs 0)" in rows["`relu`"]
    assert rows["`tanh`"].endswith(f"**{verdicts.WITHIN_TEST_SAMPLING}** |") and "no seed band" in rows["`tanh`"]
    assert "**Variants added:** `gru` (100.00 %)." in markdown
    assert "| params.yaml | `train.lr` | `0.01` | `0.02` |" in markdown
    assert "**Environment differs**" in markdown and "AVX512" in markdown
    assert "paired bootstrap over the test examples (10,000 resamples, seed 0" in markdown
    for name in ("relu.png", "tanh.png", "gru.png"):
        assert f"![{name}]({name})" in markdown
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
