"""A study over many machines: each DVC experiment one Ray task, results back through DVC's remotes.

    python -m tools.sweep --seeds 0-9                          # default params, 10 seeds, on this machine
    python -m tools.sweep -S model.cell=lstm --seeds 0-3 -n lstm evaluate@relu
    python -m tools.sweep --preset strong --seeds 0-2 --address 10.0.0.1:6379 --threads 2

The driver checks everything it can before any training (a clean commit that the git remote has, the
DVC remote answering and holding the baseline's outputs, enough CPUs), then sends one task per
experiment (rnnlab/experiments/sweep_node.py). Ray places them, as many per node as its CPUs hold
`--threads`; a task whose node dies is retried on another. The driver shows each one's progress and
`dvc exp pull`s what finished, so `dvc exp show`, `python -m tools.seed_bands` and `python -m
tools.review` use them as if they had run here.

Without `--address` (or RAY_ADDRESS), Ray starts on this machine, the git remote is this repository
and the DVC remote is its cache: nothing to set up. An experiment that already finished on this commit
(here or on the git remote) is reused, not rerun: names are the seed bands' (`default-seed3`), the
preset's, or `-n`'s, each followed by `-seed<N>`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rnnlab.config.params import read_params_file
from rnnlab.core.errors import UserError
from rnnlab.core.git import experiment_refs, git
from rnnlab.experiments.collect import params_at
from rnnlab.experiments.presets import Preset, experiment_arguments, load_preset
from rnnlab.experiments.sweep_node import STAMP_COMMAND, Outcome, Task, experiment_ref, run_experiment

SEED_KEY = "train.seed"
CANCEL_SECONDS = 60.0  # how long a cancelled task may take to stop its run before it is killed
LOG_INDENT = "    | "


@dataclass
class Options:
    settings: list[str] = field(default_factory=list)  # -S key=value, as `dvc exp run` takes them
    seeds: list[int] = field(default_factory=list)
    seed_key: str = SEED_KEY
    preset: str | None = None
    prefix: str | None = None  # -n
    targets: list[str] = field(default_factory=list)
    address: str | None = None  # a Ray cluster; None: Ray on this machine
    threads: int = 1
    git_remote: str | None = None  # a git remote's name or URL; default: origin on a cluster, else this repository
    dvc_remote: str | None = None  # a DVC remote's name; default: DVC's default on a cluster, else this cache
    allow_mixed: bool = False
    repo: Path = Path(".")


@dataclass(frozen=True)
class Planned:
    name: str
    arguments: tuple[str, ...]
    params: dict[str, Any]


def parse_seeds(text: str) -> list[int]:
    """`0-9`, `0,3,7` or `0-3,8`: the seeds in order, each once."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            seeds += range(int(first), int(last if dash else first) + 1)
    except ValueError:
        raise UserError(f"--seeds {text}: expected a range like 0-9, a list like 0,3,7, or both (0-3,8).") from None
    if not seeds:
        raise UserError(f"--seeds {text}: the range is empty; write the lower seed first (0-9).")
    return list(dict.fromkeys(seeds))


def plan(options: Options, base: dict[str, Any]) -> list[Planned]:
    """One experiment per seed (or one, without --seeds), each checked like params.yaml before anything runs."""
    preset = load_preset(options.preset) if options.preset else Preset("", "", "", {}, [])
    preset = Preset(preset.name, preset.experiment, preset.description, preset.params, options.targets or preset.targets)
    if options.prefix:
        prefix = options.prefix
    elif options.preset:
        prefix = preset.experiment
    elif options.settings:  # the same settings give the same name, so a second sweep finds the first's runs
        prefix = "sweep-" + hashlib.sha1("\n".join(options.settings).encode()).hexdigest()[:6]
    else:
        prefix = "default"  # as python -m tools.seed_bands names its seeds
    planned = []
    seeds: list[int | None] = [*options.seeds] or [None]
    for seed in seeds:
        extra = [*options.settings, *([f"{options.seed_key}={seed}"] if seed is not None else [])]
        arguments, params = experiment_arguments(preset, base, extra)
        planned.append(Planned(prefix if seed is None else f"{prefix}-seed{seed}", tuple(arguments), params))
    return planned


def run_quiet(command: list[str], repo: Path, what: str) -> str:
    """Run a git or dvc command here; a failure is one line naming `what` and the command's last words."""
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        last = next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else "no output")
        raise UserError(f"{what}: {last}")
    return result.stdout


def dvc(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *arguments]


def check_commit(repo: Path) -> str:
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no", cwd=repo).splitlines() if line]
    if changed:
        raise UserError(
            f"a sweep runs the committed HEAD on every node: commit or stash these changes first: {', '.join(changed[:5])}"
        )
    return git("rev-parse", "HEAD", cwd=repo).strip()


def git_url(repo: Path, remote: str) -> str:
    """A remote's URL (nodes clone it, so a name means nothing to them), or `remote` itself if it is one."""
    names = git("remote", cwd=repo).split()
    if remote in names:
        return git("remote", "get-url", remote, cwd=repo).strip()
    if "/" not in remote and ":" not in remote:
        raise UserError(
            f"no git remote '{remote}' (remotes: {', '.join(names) or 'none'}): add one with "
            "`git remote add origin URL`, or pass --git-remote URL."
        )
    return remote


def remote_experiments(repo: Path, url: str, commit: str) -> set[str]:
    """The experiments of `commit` the git remote holds; fails in one line if it cannot be reached or lacks the commit."""
    listing = run_quiet(["git", "ls-remote", url], repo, f"the git remote {url} cannot be read")
    shas = {line.split()[0] for line in listing.splitlines() if "\trefs/exps/" not in line}
    contains = commit in shas or any(
        subprocess.run(["git", "merge-base", "--is-ancestor", commit, sha], cwd=repo, capture_output=True).returncode == 0
        for sha in shas
    )
    if not contains:
        raise UserError(
            f"the git remote {url} does not have commit {commit[:7]}, which every node clones: "
            "push it first (`git push origin HEAD`)."
        )
    prefix = experiment_ref(commit, "")
    return {line.split()[1][len(prefix) :] for line in listing.splitlines() if line.split()[1].startswith(prefix)}


def check_dvc_remote(repo: Path, name: str | None) -> str:
    """The DVC remote the nodes will use (committed, so each clone has it), reachable, with the baseline's outputs."""
    committed = [line.split()[0] for line in run_quiet(dvc("remote", "list", "--project"), repo, "dvc remote list").splitlines()]
    if name is None:
        default = subprocess.run(dvc("remote", "default", "--project"), cwd=repo, capture_output=True, text=True)
        name = default.stdout.strip() if default.returncode == 0 else ""  # exit 1: "No default remote set"
        if not name:
            raise UserError(
                "a cluster sweep needs a DVC remote that every node reaches: `dvc remote add -d storage "
                "s3://bucket/path` (credentials in each node's environment), commit .dvc/config, or "
                "pass --remote NAME."
            )
    if name not in committed:
        raise UserError(
            f"the DVC remote '{name}' is not in the committed .dvc/config (remotes there: "
            f"{', '.join(committed) or 'none'}), so the nodes' clones cannot use it: "
            f"`dvc remote add --project {name} URL` and commit .dvc/config."
        )
    # The nodes pull these instead of downloading and preprocessing again; this also proves the remote answers.
    run_quiet(dvc("push", "-r", name), repo, f"the DVC remote '{name}' refused `dvc push`")
    return name


def reference_stamp(repo: Path) -> dict[str, Any]:
    return json.loads(run_quiet([sys.executable, *STAMP_COMMAND], repo, "this machine's environment stamp").splitlines()[-1])


def check_reused(repo: Path, planned: list[Planned], commit: str) -> dict[str, str]:
    """name -> experiment commit, for the planned experiments this repository already has on `commit`."""
    found = {name: sha for name, baseline, sha in experiment_refs(repo) if baseline == commit}
    reused = {item.name: found[item.name] for item in planned if item.name in found}
    for item in planned:
        if item.name in reused and params_at(repo, reused[item.name]) != item.params:
            raise UserError(
                f"experiment '{item.name}' exists on {commit[:7]} with other params: give this sweep "
                f"another name (-n), or remove it (`dvc exp remove {item.name}`)."
            )
    return reused


class Board:
    """A bar over the experiments and one line each; without a terminal, each change is printed as a line."""

    def __init__(self, names: list[str]) -> None:
        self.terminal = sys.stderr.isatty()
        self.bar = tqdm(total=len(names), desc="sweep", unit="exp", disable=not self.terminal, file=sys.stderr)
        self.lines = {
            name: tqdm(total=0, bar_format="{desc}", position=index + 1, disable=not self.terminal, file=sys.stderr)
            for index, name in enumerate(names)
        }

    def show(self, name: str, status: str, message: str = "") -> None:
        text = f"{name}: {status}{' ' + message if message else ''}"
        if self.terminal:
            self.lines[name].set_description_str(text)
        else:
            print(f"sweep: {text}", file=sys.stderr, flush=True)

    def finish(self, outcome: Outcome) -> None:
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in outcome.seconds.items())
        detail = outcome.message.splitlines()[0] if outcome.message else f"by {outcome.node}{f' ({steps})' if steps else ''}"
        self.show(outcome.name, outcome.status, detail)
        self.bar.update(1)

    def close(self) -> None:
        for line in [self.bar, *self.lines.values()]:
            line.close()


def start_ray(options: Options, modules: Path) -> Any:
    """Join the cluster at options.address, or start Ray here with one CPU per core."""
    import ray

    cores = len(os.sched_getaffinity(0))
    # The raylet kills what a dead worker leaves running (a cancelled dvc and its stage); on a cluster
    # each node sets this itself when it starts (docs/cluster.md).
    os.environ.setdefault("RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper", "true")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if options.address is None and options.threads > cores:
        raise UserError(f"--threads {options.threads} is more than this machine's {cores} cores.")
    runtime_env = {"py_modules": [str(modules)], "excludes": ["__pycache__", "*.so"]}
    settings: dict[str, Any] = dict(logging_level=logging.ERROR, log_to_driver=False, runtime_env=runtime_env)
    if options.address is None:
        ray.init(address="local", num_cpus=cores, include_dashboard=False, **settings)
    else:
        try:
            ray.init(address=options.address, **settings)
        except (ConnectionError, RuntimeError) as error:
            raise UserError(
                f"cannot join the Ray cluster at {options.address}: {str(error).splitlines()[0]}; "
                "start it with `ray start --head` (docs/cluster.md)."
            ) from None
        largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=0)
        if largest < options.threads:
            ray.shutdown()
            raise UserError(
                f"--threads {options.threads}: no node of the cluster at {options.address} has that many "
                f"CPUs (largest: {largest:g})."
            )
    return ray


def dispatch(ray: Any, tasks: list[Task], threads: int, board: Board) -> list[Outcome]:
    """Run the tasks, showing their progress; Ctrl-C cancels them and waits until they stopped."""
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's own node: progress must outlive any worker node.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    progress = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    # Retried when its node or worker dies (Ray's system failures), not when a step fails: that would fail again.
    experiment = ray.remote(max_retries=2, retry_exceptions=False)(run_experiment).options(num_cpus=threads)
    pending = {experiment.remote(task, progress): task for task in tasks}
    for task in tasks:
        board.show(task.name, "queued")
    outcomes: list[Outcome] = []

    def drain() -> None:
        for name, status, message in progress.get_nowait_batch(progress.qsize()):
            board.show(name, status, message)

    def collect(references: list[Any]) -> None:
        for reference in references:
            task = pending.pop(reference)
            try:
                outcome = ray.get(reference)
            except (ray.exceptions.RayError, KeyboardInterrupt) as error:
                outcome = Outcome(task.name, "?", "failed", f"{type(error).__name__}: {str(error).splitlines()[0]}")
            outcomes.append(outcome)
            board.finish(outcome)

    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            drain()
            collect(done)
    except KeyboardInterrupt:
        print("sweep: cancelling the running experiments...", file=sys.stderr, flush=True)
        for reference in pending:
            ray.cancel(reference)
        done, rest = ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_SECONDS)
        for reference in rest:  # a task that did not stop: its worker is killed, and the raylet kills its children
            ray.cancel(reference, force=True)
        collect(done)
        raise
    return outcomes


def sweep(options: Options) -> list[Outcome]:
    """Plan, check, run, pull; returns every experiment's outcome (reused ones included)."""
    import rnnlab

    repo = options.repo.resolve()
    if options.threads < 1:
        raise UserError(f"--threads {options.threads}: give 1 or more CPUs per experiment.")
    commit = check_commit(repo)
    planned = plan(options, read_params_file(repo / "params.yaml"))
    names = [item.name for item in planned]
    if len(set(names)) != len(names):
        raise UserError(f"two experiments would share a name: {', '.join(names)}.")
    cluster = options.address is not None
    url = git_url(repo, options.git_remote or "origin") if cluster or options.git_remote else str(repo)
    on_remote = remote_experiments(repo, url, commit)
    dvc_remote = check_dvc_remote(repo, options.dvc_remote) if cluster or options.dvc_remote else None
    local_remote = None if dvc_remote else run_quiet(dvc("cache", "dir"), repo, "dvc cache dir").strip()
    # Those the git remote has but this repository lacks come here first, so their params can be checked.
    missing = sorted((on_remote & set(names)) - {name for name, base, _ in experiment_refs(repo) if base == commit})
    if missing:
        run_quiet(dvc("exp", "pull", url, *missing), repo, f"dvc exp pull from {url}")
    reused = check_reused(repo, planned, commit)
    stamp = None if options.allow_mixed else reference_stamp(repo)
    tasks = [
        Task(item.name, item.arguments, commit, url, dvc_remote, local_remote, stamp)
        for item in planned
        if item.name not in reused
    ]
    print(
        f"sweep: {len(planned)} experiment(s) of {commit[:7]}: {len(tasks)} to run, {len(reused)} reused"
        f"{f', on the cluster at {options.address}' if cluster else ' (Ray on this machine)'}",
        file=sys.stderr,
        flush=True,
    )
    outcomes = [Outcome(name, "-", "reused") for name in reused]
    if not tasks:
        return outcomes
    ray = start_ray(options, Path(rnnlab.__file__).parent)
    board = Board([task.name for task in tasks])
    started = time.perf_counter()
    try:
        ran = dispatch(ray, tasks, options.threads, board)
    finally:
        board.close()
        ray.shutdown()
    finished = [outcome.name for outcome in ran if outcome.status != "failed"]
    if finished and url != str(repo):
        run_quiet(dvc("exp", "pull", url, *finished), repo, f"dvc exp pull from {url}")
    for outcome in ran:
        if outcome.status == "failed":
            print(f"sweep: {outcome.name} failed on {outcome.node}:", file=sys.stderr)
            print("\n".join(LOG_INDENT + line for line in outcome.message.splitlines()), file=sys.stderr)
    print(
        f"sweep: {len(finished)} of {len(tasks)} finished in {time.perf_counter() - started:.0f} s; `dvc exp show` lists them",
        file=sys.stderr,
        flush=True,
    )
    return outcomes + ran
