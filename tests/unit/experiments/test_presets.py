"""Named experiment definitions (presets/*.yaml, `python -m tools.preset`): the committed strong
preset is the selected experiment, typos fail before DVC runs, and the default pipeline never runs it."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rnnlab.config.params import load_params
from rnnlab.core.errors import ConfigError
from rnnlab.experiments import presets as preset_tool
from tests.support.stage_runner import REPO, assert_user_error, repo_params, run_stage, write_params


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the committed params.yaml, dvc.yaml and presets/ to edit freely."""
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, repo_params())
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets/strong.yaml").write_text((REPO / "presets/strong.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


def edit_preset(project: Path, change) -> None:
    path = project / "presets/strong.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(raw)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")


def dry_run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, list[str], str]:
    code, out, err = run_stage("tools.preset", ["strong", "--dry-run", *arguments], capsys)
    return code, shlex.split(out.strip()) if code == 0 else [], err


def test_strong_preset_is_the_selected_experiment(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, command, err = dry_run(capsys)
    assert code == 0, err
    assert command[:5] == ["dvc", "exp", "run", "-n", "strong-tail-ens3"]
    settings = [command[index + 1] for index, word in enumerate(command) if word == "-S"]
    # The overrides DVC recorded for the selected experiment (reports/studies.json), no more, no less.
    studies = json.loads((REPO / "reports/studies.json").read_text(encoding="utf-8"))
    recorded = next(entry for entry in studies["experiments"] if entry["name"] == "strong-tail-ens3")["overrides"]
    assert sorted(settings) == sorted(preset_tool.setting(key, value) for key, value in recorded.items())
    assert command[-2:] == ["evaluate@strong", "baseline"]


def test_queue_name_and_extra_settings_come_after_the_presets(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, command, err = dry_run(capsys, "--queue", "--name", "strong-s1", "-S", "train.seed=1")
    assert code == 0, err
    assert command[:6] == ["dvc", "exp", "run", "--queue", "-n", "strong-s1"]
    assert command[-4:] == ["-S", "train.seed=1", "evaluate@strong", "baseline"]


@pytest.mark.parametrize(
    ("arguments", "change", "needles"),
    [
        (["-S", "model.hiden_size=3"], None, ("model.hiden_size", "Did you mean 'hidden_size'")),
        (["-S", "train.lr=-1"], None, ("train.lr must be > 0",)),
        ([], lambda raw: raw["params"]["variants"]["strong"]["model"].update(cel="gru"), ("cel", "Did you mean 'cell'")),
        ([], lambda raw: raw["params"]["data"].update(truncate="tial"), ("Invalid data.truncate", "Did you mean 'tail'")),
        ([], lambda raw: raw.update(target=["x"]), ("Unknown key 'target'", "Did you mean 'targets'")),
        ([], lambda raw: raw.update(targets=["evaluate@stong"]), ("no variant 'stong'", "Did you mean 'strong'")),
        ([], lambda raw: raw.update(targets=["evalute@strong"]), ("not a stage", "Did you mean 'evaluate'")),
    ],
)
def test_mistakes_fail_before_dvc_runs(project, capsys, monkeypatch, arguments, change, needles) -> None:
    if change is not None:
        edit_preset(project, change)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("dvc must not run"))
    code, _out, err = run_stage("tools.preset", ["strong", *arguments], capsys)
    assert_user_error(code, err, *needles)


def test_unknown_preset_names_the_known_ones(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_stage("tools.preset", ["strogn"], capsys)
    assert_user_error(code, err, "No preset 'strogn'", "Did you mean 'strong'", "Presets: strong")


def test_runs_this_interpreters_dvc_and_passes_its_exit_code(project, capsys, monkeypatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], *args, **kwargs) -> subprocess.CompletedProcess:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 3)

    monkeypatch.setattr(subprocess, "run", fake_run)
    code, out, _err = run_stage("tools.preset", ["strong"], capsys)
    assert code == 3
    assert calls and calls[0][:5] == [sys.executable, "-m", "dvc", "exp", "run"]
    assert shlex.split(out.strip().splitlines()[0])[1:] == calls[0][3:]  # printed = run


def test_the_default_pipeline_does_not_run_the_preset() -> None:
    params = load_params(REPO / "params.yaml")
    assert "strong" not in params.task("imdb").variants
    assert params.data.truncate == "head"
    assert "presets" not in (REPO / "dvc.yaml").read_text(encoding="utf-8")


def test_apply_setting_follows_dvc() -> None:
    base = {"train": {"seed": 0}}
    assert preset_tool.apply_setting(base, "train.seed=2") == {"train": {"seed": 2}}
    assert preset_tool.apply_setting(base, "+variants.x={model: {cell: gru}}")["variants"] == {"x": {"model": {"cell": "gru"}}}
    assert preset_tool.apply_setting(base, "~train.seed") == {"train": {}}
    with pytest.raises(ConfigError, match="Use -S \\+train.sed"):
        preset_tool.apply_setting(base, "train.sed=1")
    assert base == {"train": {"seed": 0}}  # not modified in place
