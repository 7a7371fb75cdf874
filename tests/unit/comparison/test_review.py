"""tools.review on small hand-made git repositories (fast, no training): the report, the trust checks it
shows, metrics against predictions, revisions in an older layout, and where the output goes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from rnnlab.comparison import verdicts
from rnnlab.comparison.render import MARKER, build_report
from rnnlab.comparison.revision import OLDEST, resolve
from rnnlab.experiments.seed_bands import config_key
from rnnlab.core.cli import run_cli
from rnnlab.core.errors import UserError
from tools import review as review_tool

ROOT = Path(__file__).resolve().parents[3]
VARS = {"metrics": "metrics", "details": "metrics/details", "predictions": "plots/predictions", "live": "plots/history",
        "gradients": "plots/gradients", "timings": "reports/timings", "seed_bands": "reports/seed_bands.json"}
ENVIRONMENT = {"reproducible": True, "cpu_capability": "AVX2", "torch": "2.13.0", "device": "cpu"}
ACTUAL = ["pos", "neg"] * 100
# The code and params stages, as small as the check needs: what they write from the revision's files.
GENERATE = """import json, sys, pathlib, yaml
stage = sys.argv[1]
out = pathlib.Path("data", stage)
out.mkdir(parents=True, exist_ok=True)
value = {"files": {"generate.py": "1"}} if stage == "code" else yaml.safe_load(open("params.yaml"))
(out / "evaluate.json").write_text(json.dumps(value, sort_keys=True))
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def write_variant(repo: Path, variant: str, actual: list[str], predicted: list[str], environment: dict | None = None,
                  loss: float = 0.69, roc_auc: float = 0.5) -> None:
    correct = float(np.mean([a == p for a, p in zip(actual, predicted, strict=True)]))
    metrics = {"variant": variant, "study": "imdb", "accuracy": correct, "f1": correct, "roc_auc": roc_auc,
               "loss": loss, "environment": environment or ENVIRONMENT}
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics" / f"{variant}.json").write_text(json.dumps(metrics))
    (repo / "metrics" / "details").mkdir(exist_ok=True)
    (repo / "metrics" / "details" / f"{variant}.json").write_text(json.dumps({"seed": 0}))  # what the seed band key checks
    lines = ["actual,predicted,p_neg,p_pos"] + [f"{a},{p},{0.9 if p == 'neg' else 0.1:.6f},{0.1 if p == 'neg' else 0.9:.6f}"
                                                for a, p in zip(actual, predicted, strict=True)]
    (repo / "plots" / "predictions").mkdir(parents=True, exist_ok=True)
    (repo / "plots" / "predictions" / f"{variant}.csv").write_text("\n".join(lines) + "\n")
    history = repo / "plots" / "history" / variant / "plots" / "metrics"
    history.mkdir(parents=True, exist_ok=True)
    (history / "valid_accuracy.tsv").write_text("step\tvalid_accuracy\n" + "".join(f"{epoch}\t{correct - 0.1 / epoch}\n" for epoch in (1, 2, 3)))
    (repo / "reports" / "timings").mkdir(parents=True, exist_ok=True)
    (repo / "reports" / "timings" / f"{variant}.json").write_text(json.dumps({"train_seconds_per_epoch": 2.5, "machine": {"cpu_model": "Xeon"}}))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_lock(repo: Path, variants: list[str]) -> None:
    """The dvc.lock `dvc repro` would write: the code and params stages, then each variant's evaluate stage."""
    for stage in ("code", "params"):
        subprocess.run([sys.executable, "generate.py", stage], cwd=repo, check=True)
    stages = {stage: {"cmd": f"python generate.py {stage}", "deps": [{"path": path, "md5": md5(repo / path)} for path in deps],
                      "outs": [{"path": f"data/{stage}", "md5": "0" * 32 + ".dir"}]}
              for stage, deps in (("code", ["generate.py"]), ("params", ["generate.py", "params.yaml"]))}
    for variant in variants:
        deps = ["data/code/evaluate.json", "data/params/evaluate.json"]
        outs = [f"metrics/{variant}.json", f"plots/predictions/{variant}.csv"]
        stages[f"evaluate@{variant}"] = {"cmd": f"python -m stages.evaluate --variant {variant}",
                                         "deps": [{"path": path, "md5": md5(repo / path)} for path in deps],
                                         "outs": [{"path": path, "md5": md5(repo / path)} for path in outs]}
    (repo / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def table_rows(markdown: str) -> dict[str, str]:
    """variant -> its table row (main table or the collapsed one)."""
    return {line.split("|")[1].strip().strip("`"): line for line in markdown.splitlines() if line.startswith("| `") and line.endswith("** |")}


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / ".dvc").mkdir()  # a DVC repository (what `dvc init` makes, less its seconds): the review asks DVC for the params diff
    (tmp_path / ".dvc" / "config").write_text("")
    stages = {stage: {"cmd": f"python generate.py {stage}"} for stage in ("code", "params")}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"vars": [VARS], "stages": stages}))
    (tmp_path / "generate.py").write_text(GENERATE)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.01}, "variants": {"relu": {}, "tanh": {}}}))
    write_variant(tmp_path, "relu", ACTUAL, ACTUAL[:150] + ["pos"] * 50)
    write_variant(tmp_path, "tanh", ACTUAL, ["pos"] * 200)
    write_lock(tmp_path, ["relu", "tanh"])
    commit_all(tmp_path, "base")
    return tmp_path


def review(repo: Path, *args: str) -> str:
    out = repo / "review"
    review_tool.main([*args, "--repo", str(repo), "--out", str(out)])
    return (out / "review.md").read_text()


# -- the report ------------------------------------------------------------------------------------

def test_report_with_a_seed_band_and_a_changed_environment(repo: Path) -> None:
    # relu: 25 more examples right (87.5 % -> 100 %), above all 10 runs of its band, in another environment, but one
    # run; tanh: one example differs, no band; gru: added.
    write_variant(repo, "relu", ACTUAL, ACTUAL, environment={**ENVIRONMENT, "cpu_capability": "AVX512"})
    write_variant(repo, "tanh", ACTUAL, ["neg"] + ["pos"] * 199)
    write_variant(repo, "gru", ACTUAL, ACTUAL)
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.01, "seed": 1}}))
    write_lock(repo, ["relu", "tanh", "gru"])
    (repo / "reports").mkdir(exist_ok=True)
    accuracies = (0.86 + 0.002 * np.arange(10)).tolist()
    entry = {"key": config_key(resolve(repo, "main"), "relu"), "seeds": list(range(10)), "accuracies": accuracies,
             "runs": ["(committed)", *(f"default-seed{seed}" for seed in range(1, 10))]}
    (repo / "reports" / "seed_bands.json").write_text(json.dumps({"commit": "f" * 40, "variants": {"relu": entry}}))
    markdown = review(repo, "main")
    assert markdown.startswith(MARKER)
    summary = markdown.splitlines()[3]
    assert summary.startswith(f"**Summary: 0 of 2 beyond seed noise.** Also 1 *{verdicts.CANNOT_TELL}* (`relu`)") and "1 *within test-sampling noise" in summary
    rows = table_rows(markdown)
    assert rows["relu"].endswith(f"**{verdicts.CANNOT_TELL}** |")
    # One run above all ten is p = 2/11; two judged variants (Holm) need p <= 0.025: three head seeds.
    assert "| head 100.00 (1 run) vs band 86.00–87.80, median 86.90 (10 runs) | – (needs 3 head seeds) |" in rows["relu"]
    assert "  - `relu`: band (committed), default-seed1, default-seed2" in markdown
    assert "87.50 % → 100.00 %" in rows["relu"] and "(25 vs 0)" in rows["relu"]
    assert rows["tanh"].endswith(f"**{verdicts.WITHIN_TEST_SAMPLING}** |")
    assert "**Variants added:** `gru` (100.00 %)." in markdown
    assert "| params.yaml | `train.seed` | (absent) | `1` |" in markdown
    assert "**⚠ Environment differs** for 1 of 2 variants: `relu` (cpu_capability)" in markdown
    for name in ("deltas.png", "relu.png", "gru.png"):  # relu may have moved, gru was added
        assert f"![{name}]({name})" in markdown
        assert (repo / "review" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # tanh's one example is within noise: no curves (its chart, started before the verdict, is not left behind)
    assert "tanh.png" not in markdown and not (repo / "review" / "tanh.png").exists()
    head_commit = git(repo, "rev-parse", "--short=7", "main")
    assert f"Training curves of the changes within noise (`tanh`) are not drawn: `dvc plots diff {head_commit}` draws every variant's." in markdown


@pytest.mark.parametrize("key", ["another model's inputs", None])
def test_a_band_of_other_inputs_or_an_older_band_elsewhere_is_not_used(repo: Path, key: str | None) -> None:
    """A band measured on another config cannot judge this one: it is used only with the base's key, and one
    without a key (an older file) only at its own commit."""
    write_variant(repo, "relu", ACTUAL, ACTUAL)
    write_lock(repo, ["relu", "tanh"])
    entry = {"seeds": [0, 1, 2], "runs": ["(committed)", "s1", "s2"], "accuracies": [0.86, 0.87, 0.88], **({"key": key} if key else {})}
    (repo / "reports").mkdir(exist_ok=True)
    (repo / "reports" / "seed_bands.json").write_text(json.dumps({"commit": "f" * 40, "variants": {"relu": entry}}))
    relu = table_rows(review(repo, "main"))["relu"]
    assert "| – (no seed band) |" in relu and relu.endswith("(no seed band)** |"), relu


def test_the_environment_is_read_from_the_details_file(repo: Path) -> None:
    """metrics/<variant>.json holds what is compared; the stamp and the rest are in metrics/details/<variant>.json."""
    for variant in ("relu", "tanh"):
        metrics = json.loads((repo / "metrics" / f"{variant}.json").read_text())
        details = {**metrics, "environment": {**ENVIRONMENT, "cpu_capability": "AVX512"}}
        (repo / "metrics" / "details" / f"{variant}.json").write_text(json.dumps(details))
        (repo / "metrics" / f"{variant}.json").write_text(json.dumps({key: metrics[key] for key in ("accuracy", "f1", "roc_auc", "loss")}))
    write_lock(repo, ["relu", "tanh"])
    markdown = review(repo, "main")
    assert "**⚠ Environment differs** for 2 of 2 variants: `relu`, `tanh` (cpu_capability)" in markdown


def test_unchanged_rows_are_collapsed_and_last_digit_losses_are_no_change(repo: Path) -> None:
    write_variant(repo, "tanh", ACTUAL, ["pos"] * 200, loss=0.69 + 4e-15)  # the same predictions, another summation order
    write_lock(repo, ["relu", "tanh"])
    markdown = review(repo, "main")
    assert "**Summary: 0 of 2 beyond seed noise.** Also 2 *no change*." in markdown
    assert "<details><summary>2 variants with no change (relu, tanh)</summary>" in markdown
    assert "**Charts:** none (no variant changed)." in markdown and not (repo / "review" / "deltas.png").exists()


def test_results_never_rerun_are_not_rerun_not_no_change(repo: Path) -> None:
    """The workspace's params.yaml moved on (train.lr), the results did not: the lock says they ran with the old value."""
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.02}}))
    markdown = review(repo, "main")
    rows = table_rows(markdown)
    assert all(row.endswith(f"**{verdicts.NOT_RERUN}** |") for row in rows.values()), markdown
    assert "2 *not rerun* (`relu`, `tanh`)" in markdown
    assert "- `relu`: head (workspace): `evaluate@relu` ran with other params than the revision's: train.lr: 0.01 → 0.02" in markdown
    assert "| params.yaml | `train.lr` | `0.01` | `0.02` |" in markdown


def test_an_output_edited_after_its_stage_ran_is_not_rerun(repo: Path) -> None:
    (repo / "plots" / "predictions" / "tanh.csv").write_text((repo / "plots" / "predictions" / "tanh.csv").read_text() + "\n")
    rows = table_rows(review(repo, "main"))
    assert rows["tanh"].endswith(f"**{verdicts.NOT_RERUN}** |") and rows["relu"].endswith(f"**{verdicts.NO_CHANGE}** |")


def test_a_revision_without_dvc_lock_is_said_to_be_unchecked(repo: Path) -> None:
    (repo / "dvc.lock").unlink()
    markdown = review(repo, "main")
    assert "**Not checked:** head (workspace) has no dvc.lock" in markdown


def test_metrics_that_do_not_match_their_predictions_are_an_error(repo: Path) -> None:
    """20 of 200 predictions flipped with the metrics file untouched: no verdict can rest on them."""
    path = repo / "plots" / "predictions" / "tanh.csv"
    lines = path.read_text().splitlines()
    lines[1:41] = [line.replace("pos,pos", "pos,neg", 1) for line in lines[1:41]]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"plots/predictions/tanh\.csv at workspace gives test accuracy 40\.00 % but "
                                        r"metrics/tanh\.json says 50\.00 %: they are not from the same run"):
        build_report(resolve(repo, "main"), resolve(repo, None), repo / "charts")


@pytest.mark.parametrize("older", ["dvc.yaml", "dvc.lock"])
def test_a_revision_before_the_code_and_params_stages_names_the_oldest_to_compare(repo: Path, older: str) -> None:
    if older == "dvc.yaml":  # per-example predictions came with a layout whose dvc.yaml had no code or params stage
        (repo / "dvc.yaml").write_text(yaml.safe_dump({"vars": [{"metrics": "metrics", "confusion": "plots/confusion"}], "stages": {}}))
    else:  # a lock from before the code and params stages ran
        lock = yaml.safe_load((repo / "dvc.lock").read_text())
        del lock["stages"]["code"], lock["stages"]["params"]
        (repo / "dvc.lock").write_text(yaml.safe_dump(lock))
    commit_all(repo, "older layout")
    with pytest.raises(UserError, match=rf"^`HEAD` \(\w{{7}}\) predates the pipeline layout the review reads \(code and params stages, "
                                        rf"per-example predictions\); compare against {OLDEST} or a later commit\.$"):
        build_report(resolve(repo, "main~1"), resolve(repo, "HEAD"), repo / "charts")


def test_timings_are_shown_per_side_and_labelled_machine_dependent(repo: Path) -> None:
    write_variant(repo, "tanh", ACTUAL, ACTUAL)
    write_lock(repo, ["relu", "tanh"])
    markdown = review(repo, "main")
    assert "<details><summary>Timings: seconds per training epoch (machine-dependent: not comparable across machines)" in markdown
    assert "| `tanh` | 2.5 (Xeon) | 2.5 (Xeon) |" in markdown


# -- errors and the output folder ------------------------------------------------------------------

def test_unknown_revision_is_a_one_line_error(repo: Path) -> None:
    with pytest.raises(UserError, match=r"unknown revision 'nosuch'.*`git branch -a` and `dvc exp list -A`"):
        resolve(repo, "nosuch")


def test_revision_without_metrics_names_the_fix(repo: Path) -> None:
    git(repo, "rm", "-q", "-r", "metrics")
    commit_all(repo, "no metrics")
    with pytest.raises(UserError, match=r"`HEAD` \(\w{7}\) has no metrics \(metrics/\*\.json\): run `dvc repro` there"):
        build_report(resolve(repo, "HEAD"), resolve(repo, None), repo / "charts")


def test_variant_without_predictions_names_the_fix(repo: Path) -> None:
    (repo / "plots" / "predictions" / "tanh.csv").unlink()
    with pytest.raises(UserError, match=r"variant tanh has metrics but no predictions at workspace:plots/predictions/tanh\.csv; rerun"):
        build_report(resolve(repo, "main"), resolve(repo, None), repo / "charts")


def test_experiment_name_resolves_to_its_commit(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/default-seed1", base)
    assert resolve(repo, "default-seed1").commit == base


def run_tool(capsys: pytest.CaptureFixture[str], repo: Path, *args: str) -> tuple[int, str]:
    """tools.review under the CLI contract (rnnlab.core.cli.run_cli), in this process: (exit status, stderr)."""
    capsys.readouterr()
    try:
        run_cli(review_tool.main, [*args, "--repo", str(repo)])
        status = 0
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


def test_cli_error_is_one_line_with_exit_2(repo: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tools.review", "nosuch", "--repo", str(repo), "--out", str(repo / "r")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: unknown revision 'nosuch'")
    assert not (repo / "r").exists()


@pytest.mark.parametrize(("setup", "message"), [
    ("file", r"error: --out .*/taken is a file; name a folder"),
    ("foreign", r"error: --out .*/taken holds files a review did not write \(notes\.txt\); it is replaced whole"),
    ("unwritable", r"error: cannot write the review to .*/review \((Permission denied|Operation not permitted|Read-only file system)\); "
                   r"name a folder you can write"),
    ("under_a_file", r"error: cannot write the review to .*/taken/review \(.*\); name a folder you can write"),
])
def test_a_bad_out_is_one_line_and_leaves_nothing(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str,
                                                  message: str) -> None:
    taken = tmp_path / "taken"
    out = {"file": taken, "foreign": taken, "unwritable": tmp_path / "locked" / "review", "under_a_file": taken / "review"}[setup]
    if setup in ("file", "under_a_file"):
        taken.write_text("not a folder")
    elif setup == "foreign":
        taken.mkdir()
        (taken / "notes.txt").write_text("mine")
    elif os.geteuid() == 0:  # root writes into a read-only folder; not into sysfs
        out = Path("/sys/rnnlab-review-test/review")
    else:
        (tmp_path / "locked").mkdir(mode=0o500)
    before = sorted(path.name for path in tmp_path.rglob("*"))
    status, stderr = run_tool(capsys, repo, "main", "--out", str(out))
    assert status == 2 and stderr.count("\n") == 1, stderr
    assert re.match(message, stderr), stderr
    assert sorted(path.name for path in tmp_path.rglob("*")) == before  # nothing left behind


def test_a_failed_review_leaves_the_earlier_one_and_a_rerun_clears_stale_charts(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = repo / "review"
    write_variant(repo, "tanh", ACTUAL, ACTUAL)  # 100 more right: beyond noise, so it has curves
    write_lock(repo, ["relu", "tanh"])
    review(repo, "main")
    assert (out / "tanh.png").is_file()
    earlier = (out / "review.md").read_text()
    (repo / "plots" / "predictions" / "relu.csv").write_text("actual,predicted\n")  # the next review fails after drawing tanh's chart
    status, stderr = run_tool(capsys, repo, "main", "--out", str(out))
    assert status == 2 and "relu.csv at workspace" in stderr
    assert (out / "review.md").read_text() == earlier and not list(repo.glob(".review.*"))
    git(repo, "checkout", "--", "plots", "metrics", "dvc.lock")  # tanh back to the base: nothing changed any more
    review(repo, "main")
    assert sorted(path.name for path in out.iterdir()) == ["review.md"]  # no tanh.png beside "Charts: none"
