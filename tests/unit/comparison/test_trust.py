"""rnnlab.comparison.revision.Freshness: results checked against their revision's own params and code through dvc.lock.

A copy of this pipeline's code (stages/, rnnlab/, params.yaml) in a git repository, with the dvc.lock
entries `dvc repro` would write for the code and params stages, relu's train and evaluate stages and the
xy stage above them (with the params.yaml values each ran with), and the params and code stages' committed
outputs; no data, no DVC run. Seconds: the check reruns the params and code stages.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.dvc_repo import copy_pipeline
from rnnlab.comparison.revision import OLDEST, Freshness, Revision
from rnnlab.core.errors import UserError

OUTPUTS = ["metrics/relu.json", "plots/predictions/relu.csv"]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def dep(path: str, data: bytes | str) -> dict[str, str]:
    return {"path": path, "hash": "md5", "md5": data if isinstance(data, str) else md5(data)}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trust") / "repo"
    copy_pipeline(root)
    for module, out in (("stages.code", "data/code"), ("stages.params", "data/params.checked")):
        subprocess.run([sys.executable, "-m", module, "--out", out], cwd=root, check=True, capture_output=True)
    files = {path.relative_to(root).as_posix(): path.read_bytes() for path in (root / "data").rglob("*") if path.is_file()}
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "metrics").mkdir()
    (root / "metrics" / "relu.json").write_text(json.dumps({"accuracy": 0.5}))
    (root / "plots" / "predictions").mkdir(parents=True)
    (root / "plots" / "predictions" / "relu.csv").write_text("actual,predicted,p_neg,p_pos\npos,neg,0.6,0.4\nneg,neg,0.7,0.3\n")
    model, history, xy = "a" * 32, "b" * 32 + ".dir", "c" * 32 + ".dir"
    checked = dep("data/params.checked", files["data/params.checked"])
    relu = {"params.yaml": {key: params[key] for key in ("model", "train", "runtime")} | {"variants.relu": params["variants"]["relu"]}}
    stages = {
        "code": {"cmd": "python -m stages.code --out data/code", "deps": [dep("rnnlab", "f" * 32 + ".dir"), dep("stages", "f" * 32 + ".dir")],
                 "outs": [dep("data/code", "f" * 32 + ".dir")]},
        "params": {"cmd": "python -m stages.params --out data/params.checked",
                   "deps": [dep("data/code/params.json", files["data/code/params.json"]), dep("params.yaml", (root / "params.yaml").read_bytes())],
                   "outs": [checked]},
        "xy": {"deps": [dep("data/code/xy.json", files["data/code/xy.json"]), checked],
               "params": {"params.yaml": {f"data.{key}": params["data"][key] for key in ("fix_length", "truncate", "pad")}},
               "outs": [dep("data/xy", xy)]},
        "train@relu": {"deps": [dep("data/code/train.json", files["data/code/train.json"]), checked, dep("data/xy", xy)],
                       "params": relu, "outs": [dep("models/relu.pt", model), dep("plots/history/relu/plots", history)]},
        "evaluate@relu": {"deps": [dep("data/code/evaluate.json", files["data/code/evaluate.json"]), checked,
                                   dep("models/relu.pt", model), dep("data/xy", xy)],
                          "params": relu, "outs": [dep(path, (root / path).read_bytes()) for path in OUTPUTS]},
    }
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}, sort_keys=False))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "pipeline as run")
    git(root, "tag", "as-run")
    return root


@pytest.fixture()
def repo(pipeline: Path) -> Path:
    """The module's repository, back as it was run (copying the pipeline once is what takes time)."""
    git(pipeline, "reset", "-q", "--hard", "as-run")
    return pipeline


def reasons(repo: Path, commit: str | None = None) -> list[str]:
    return Freshness(Revision(repo, commit or "workspace", commit)).reasons(OUTPUTS)


def edit_params(repo: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_results_of_the_revisions_own_params_and_code_pass(repo: Path) -> None:
    assert reasons(repo) == []
    assert reasons(repo, git(repo, "rev-parse", "HEAD")) == []  # the commit, from a copy git writes of it


def test_a_param_changed_since_the_run_is_named(repo: Path) -> None:
    edit_params(repo, "train", "lr", 0.01)
    found = reasons(repo)
    assert found[0] == "`train@relu` ran with other params than the revision's: train.lr: 0.0001 → 0.01"
    assert found[1] == "`evaluate@relu` ran with other params than the revision's: train.lr: 0.0001 → 0.01"
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "lr without a rerun")
    assert reasons(repo, git(repo, "rev-parse", "HEAD"))[0].startswith("`train@relu` ran with other params")


def test_a_data_param_reaches_the_variant_through_its_upstream_stage(repo: Path) -> None:
    edit_params(repo, "data", "fix_length", 100)
    assert reasons(repo) == ["`xy` ran with other params than the revision's: data.fix_length: 200 → 100"]


def test_a_code_change_without_a_rerun_names_the_file(repo: Path) -> None:
    loop = repo / "rnnlab" / "training" / "train.py"
    loop.write_text(loop.read_text() + "\n# edited\n")
    found = reasons(repo)
    assert "`train@relu` ran with other code than the revision's: rnnlab/training/train.py" in found
    assert not any(reason.startswith("`xy`") for reason in found)  # xy does not run the training loop


def test_an_output_not_written_by_its_stage_and_a_stale_model(repo: Path) -> None:
    (repo / "metrics" / "relu.json").write_text(json.dumps({"accuracy": 0.6}))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock["stages"]["evaluate@relu"]["deps"][2]["md5"] = "d" * 32  # evaluated another model than train@relu wrote
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    found = reasons(repo)
    assert found[0].startswith("metrics/relu.json is not the file its stage wrote (dvc.lock records another md5)")
    assert "`evaluate@relu` ran on another models/relu.pt than `train@relu` last wrote" in found


def test_a_lock_from_before_the_params_and_code_stages_is_not_read(repo: Path) -> None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for name in ("code", "params"):
        del lock["stages"][name]
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    with pytest.raises(UserError, match=rf"^workspace predates the pipeline layout the review reads .*compare against {OLDEST} or a later"):
        reasons(repo)


def test_a_variant_no_stage_writes(repo: Path) -> None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    del lock["stages"]["evaluate@relu"]
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    assert reasons(repo)[0].startswith("no stage in dvc.lock writes metrics/relu.json")


def test_a_commit_is_checked_from_its_own_params_and_code(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    loop = repo / "rnnlab" / "training" / "train.py"
    loop.write_text(loop.read_text() + "\n# edited\n")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "code without a rerun")
    assert reasons(repo, base) == []
    assert "`train@relu` ran with other code than the revision's: rnnlab/training/train.py" in reasons(repo, git(repo, "rev-parse", "HEAD"))
