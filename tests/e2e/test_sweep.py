"""End-to-end: `python -m tools.sweep` on a real Ray cluster, with a real S3 remote and a bare git remote.

The cluster is a head and two worker nodes, separate process trees each with its own working folder,
the DVC remote a SeaweedFS S3 server, all in a network namespace that has only loopback
(bench/cluster.py). The project is this checkout's pipeline with tiny params; its results are
committed and pushed before the sweeps, as a user would. The nodes have no IMDB archive: a node that
downloaded or preprocessed again would fail.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bench.dvc_repo import DvcRepo, make_pipeline_repo, share
from rnnlab.core.git import experiment_refs
from bench.archive import make_archive
from bench.cluster import S3_ENDPOINT, Sandbox, running_commands, workers

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux's")  # e2e: tests/conftest.py

TARGET = "evaluate@relu"
NO_ARCHIVE = "/nonexistent/aclImdb.tar.gz"  # on the nodes: the download stage would fail if it ran
RUNNING = re.compile(r"sweep: (\S+): running on (\S+): (.*)")  # a progress line: experiment, node, step


@dataclass
class Project:
    repo: DvcRepo
    remote: Path  # the bare git repository every node clones
    cluster: Sandbox

    def environment(self, **extra: str) -> dict[str, str]:
        return self.cluster.environment(**self.repo.git_identity(), **extra)

    def sweep_command(self, *arguments: str) -> list[str]:
        return [sys.executable, "-m", "tools.sweep", "--address", self.cluster.head_address, *arguments]

    def sweep(self, *arguments: str, cwd: Path | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.run(self.sweep_command(*arguments), cwd or self.repo.root, self.environment(**extra), check=False)

    def start_sweep(self, *arguments: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.cluster.command(*self.sweep_command(*arguments)), cwd=self.repo.root,
                                env=self.environment(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def publish(folder: Path, s3_endpoint: str) -> tuple[DvcRepo, Path]:
    """The driver's repository: tiny pipeline, results committed, its DVC and git remotes set up."""
    archive = make_archive(folder / "archive.tar.gz", per_folder=20)
    repo = make_pipeline_repo(folder / "driver", archive, variants={"relu": {"model": {"activation": "relu"}}},
                              order_variants={"order_rnn": {"model": {"cell": "rnn"}}})
    repo.run("remote", "add", "--project", "broken", "s3://rnnlab/broken")
    repo.run("remote", "modify", "--project", "broken", "endpointurl", "http://127.0.0.1:9")  # nothing listens on 9
    repo.run("repro", TARGET)
    repo.commit("results")
    share(repo, s3_endpoint, folder / "remote.git")
    return repo, folder / "remote.git"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    folder = tmp_path_factory.mktemp("sweep")
    cluster = Sandbox(folder / "cluster")
    try:
        with ThreadPoolExecutor(1) as pool:  # the repository's first run needs no server: beside their start
            published = pool.submit(publish, folder, S3_ENDPOINT)
            cluster.start_s3()
            cluster.start_ray(workers=2, IMDB_ARCHIVE=NO_ARCHIVE)
            repo, remote = published.result()
        yield Project(repo, remote, cluster)
    finally:
        cluster.close()


def lock_outs(repo: DvcRepo, revision: str) -> dict[str, str]:
    """Every stage output's md5 in dvc.lock at `revision`."""
    lock = yaml.safe_load(repo.run("git", "show", f"{revision}:dvc.lock").stdout)
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def experiments(repo: DvcRepo) -> dict[str, str]:
    return {name: commit for name, _baseline, commit in experiment_refs(repo.root)}


def remote_experiments(project: Project) -> set[str]:
    listing = project.repo.run("git", "ls-remote", str(project.remote), "refs/exps/*").stdout
    return {line.split("/")[-1] for line in listing.splitlines()}


def read_until(process: subprocess.Popen[str], text: str, timeout: float = 300) -> list[str]:
    """The driver's stderr lines up to the first that contains `text`."""
    assert process.stderr is not None
    lines, deadline = [], time.time() + timeout
    for line in process.stderr:
        lines.append(line)
        if text in line:
            return lines
        assert time.time() < deadline, "".join(lines)
    raise AssertionError(f"the sweep ended before {text!r}:\n{''.join(lines)}")


def most_at_once_per_node(stderr: str) -> int:
    """The most experiments the progress lines show running on one node at once (from cloning to pushing)."""
    active: dict[str, set[str]] = {}
    most = 0
    for name, node, step in RUNNING.findall(stderr):
        running = active.setdefault(node, set())
        (running.discard if step == "pushing" else running.add)(name)
        most = max(most, len(running))
    return most


def nodes_used(stderr: str) -> set[str]:
    return {node for _name, node, _step in RUNNING.findall(stderr)}


def details(project: Project, commit: str, variant: str) -> dict:
    """A variant's full evaluate output at a commit: metrics/details/ (metrics/ before the details files)."""
    for path in (f"metrics/details/{variant}.json", f"metrics/{variant}.json"):
        shown = project.repo.run("git", "show", f"{commit}:{path}", check=False)
        if shown.returncode == 0:
            return json.loads(shown.stdout)
    raise AssertionError(f"no metrics for {variant} at {commit}")


def node_clones(node_folder: Path) -> list[str]:
    return [path.name for path in (node_folder / "work").iterdir() if path.name != "cache"]


def test_a_sweep_on_the_cluster_gives_the_bits_of_local_runs(project: Project) -> None:
    result = project.sweep("--seeds", "0-1", TARGET)
    assert result.returncode == 0, result.stderr
    names = [f"default-seed{seed}" for seed in range(2)]
    for name in names:  # the progress lines: queued, running on a node, its epochs, pushed
        assert f"sweep: {name}: queued" in result.stderr
        assert f"sweep: {name}: running on " in result.stderr
        assert f"sweep: {name}: pushed by " in result.stderr
    assert "training relu: epoch 1 of 1" in result.stderr
    assert most_at_once_per_node(result.stderr) == 1, result.stderr  # each node has 1 CPU: one experiment at a time
    show = json.loads(project.repo.run("exp", "show", "--json").stdout)
    assert {experiment["name"] for row in show for experiment in row.get("experiments") or []} >= set(names)
    assert len(nodes_used(result.stderr)) == 2, result.stderr  # both worker nodes took an experiment
    # One of them run here gives the same bits. (The nodes share this machine's math; a node with other math
    # is refused by the environment check, in the last test.)
    swept = experiments(project.repo)
    ran = project.repo.run("exp", "run", "--temp", "-n", "local-seed1", "-S", "train.seed=1", TARGET)
    assert "Running stage 'train@relu'" in ran.stdout, ran.stdout  # computed here, not restored
    local = experiments(project.repo)["local-seed1"]
    assert lock_outs(project.repo, swept[names[1]]) == lock_outs(project.repo, local)
    assert (project.repo.run("git", "show", f"{swept[names[1]]}:metrics/relu.json").stdout
            == project.repo.run("git", "show", f"{local}:metrics/relu.json").stdout)
    models = {lock_outs(project.repo, swept[name])["models/relu.pt"] for name in names}
    assert len(models) == len(names), "seeds gave the same model: the seed did not reach the runs"


def test_a_second_sweep_reuses_what_finished_here_or_on_the_remote(project: Project, tmp_path: Path) -> None:
    again = project.sweep("--seeds", "0-1", TARGET)
    assert again.returncode == 0, again.stderr
    assert "0 to run, 2 reused" in again.stderr
    # Another driver (a fresh clone) finds them on the git remote and pulls them instead of running them.
    clone = tmp_path / "clone"
    project.repo.run("git", "clone", "-q", "-b", "main", str(project.remote), str(clone))
    elsewhere = project.sweep("--seeds", "1", TARGET, cwd=clone)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "0 to run, 1 reused" in elsewhere.stderr
    assert "default-seed1" in {name for name, _base, _commit in experiment_refs(clone)}


def test_an_experiment_whose_node_dies_is_retried_on_another(project: Project) -> None:
    process = project.start_sweep("--seeds", "4", TARGET)
    try:
        read_until(process, "training relu")
        victim = next(node for node in workers(project.cluster) if node_clones(node.folder))
        project.cluster.kill_node(victim)
        _output, errors = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    assert "default-seed4: running on " in errors  # its second start, on the other node
    names = {"default-seed4"}
    assert names <= remote_experiments(project)
    # Nothing half-pushed: every experiment's model is in the DVC remote (dvc exp pull brought it here).
    for name in names:
        model = lock_outs(project.repo, experiments(project.repo)[name])["models/relu.pt"]
        assert (project.repo.root / ".dvc/cache/files/md5" / model[:2] / model[2:]).is_file(), name
    project.cluster.add_worker(IMDB_ARCHIVE=NO_ARCHIVE)


def test_ctrl_c_cancels_the_sweep_and_leaves_nothing_running_on_the_nodes(project: Project) -> None:
    before = remote_experiments(project)
    # Epochs enough that no run can finish and push before the cancel reaches it (300 tiny epochs could, under load)
    process = project.start_sweep("--seeds", "6-7", "-S", "train.epochs=100000", TARGET)
    try:
        read_until(process, "dvc exp run")
        process.send_signal(signal.SIGINT)
        _output, errors = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, errors
    assert "cancelling" in errors
    deadline = time.time() + 20  # the cancelled tasks stop their runs and remove their clones
    while any(running_commands(node) or node_clones(node.folder) for node in workers(project.cluster)):
        assert time.time() < deadline, [(running_commands(node), node_clones(node.folder)) for node in workers(project.cluster)]
        time.sleep(0.5)
    assert remote_experiments(project) == before  # no cancelled experiment was pushed


@pytest.mark.parametrize(("arguments", "environment", "expected"), [
    (["--remote", "broken"], {}, "error: the DVC remote 'broken' refused `dvc push`"),
    ([], {"AWS_SECRET_ACCESS_KEY": "wrong"}, "error: the DVC remote 'storage' refused `dvc push`"),
    (["--git-remote", "/nonexistent/repo.git"], {}, "error: the git remote /nonexistent/repo.git cannot be read"),
], ids=["remote down", "wrong credentials", "no git remote"])
def test_a_remote_that_is_down_or_refuses_stops_the_sweep_in_one_line(
        project: Project, arguments: list[str], environment: dict[str, str], expected: str) -> None:
    result = project.sweep("--seeds", "8", TARGET, *arguments, **environment)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "default-seed8" not in remote_experiments(project)


def test_a_node_that_computes_other_bits_fails_its_experiment_unless_allowed(project: Project, tmp_path: Path) -> None:
    for node in workers(project.cluster):
        project.cluster.kill_node(node)
    project.cluster.add_worker(IMDB_ARCHIVE=NO_ARCHIVE, RNNLAB_GEMM="0")  # torch's own kernels: other bits
    refused = project.sweep("--seeds", "8", TARGET)
    assert refused.returncode == 2, refused.stderr
    assert "computes other bits than the driver: math 'torch (MKL), fallback" in refused.stderr
    assert "--allow-mixed-environments" in refused.stderr
    allowed = project.sweep("--seeds", "8", TARGET, "--allow-mixed-environments")
    assert allowed.returncode == 0, allowed.stderr
    metrics = details(project, experiments(project.repo)["default-seed8"], "relu")
    assert metrics["environment"]["math"].startswith("torch (MKL), fallback")
    review = subprocess.run([sys.executable, "-m", "tools.review", "HEAD", "default-seed8", "--out", str(tmp_path / "review")],
                            cwd=project.repo.root, env=project.repo.environment, capture_output=True, text=True)
    assert review.returncode == 0, review.stderr
    assert "**⚠ Environment differs** for 1 of 1 variants: `relu` (math)" in (tmp_path / "review/review.md").read_text()
