"""What one Ray task does on its node: one DVC experiment, from a fresh clone to `dvc exp push`.

The steps are DVC's own commands, so a node needs only what the pipeline needs (the requirements,
g++) plus git and access to both remotes:
  git clone (the driver's commit) -> dvc pull (the baseline's outputs: no IMDB download) ->
  environment check -> dvc exp run -S ... -> dvc push (its outputs) -> dvc exp push --no-cache (its ref).
The ref goes last, in one git push: a node that dies before it leaves nothing in `dvc exp show`, and
Ray's retry starts the experiment again on another node. Imports nothing but the standard library
(and ray, when it runs), as it runs before the clone exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORK_DIR_ENV = "RNNLAB_SWEEP_DIR"  # where a node keeps its clones and its shared DVC cache
STAMP_COMMAND = ("-c", "from rnnlab.experiments.sweep_node import print_stamp; print_stamp()")
RUNNING_STAGE = re.compile(r"Running stage '(?:order_)?train@([^']+)'")
LOG_TAIL_LINES = 12
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Task:
    """One experiment, as the driver planned it."""

    name: str
    arguments: tuple[str, ...]  # the `dvc exp run` arguments after -n NAME: -S settings, then targets
    commit: str
    git_url: str
    dvc_remote: str | None  # a DVC remote's name in the committed .dvc/config; None: local_remote
    local_remote: str | None  # a folder used as the DVC remote (the embedded default: the driver's cache)
    stamp: dict[str, Any] | None  # the driver's environment stamp; None: mixed environments allowed


@dataclass
class Outcome:
    name: str
    node: str
    status: str  # "pushed", "already pushed" or "failed"
    message: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # clone, pull, run, push


class SweepFailure(Exception):
    """A step failed on the node; the message is one line, the log tail follows."""


def print_stamp() -> None:
    """Print, as JSON, the environment stamp this machine gives CPU results of the params.yaml here: what
    the node compares with the driver's before it trains (run in the clone, so the clone's code decides)."""
    from rnnlab.config.params import load_params
    from rnnlab.runtime import environment

    environment.configure(load_params().runtime)
    import torch

    environment.apply_torch_settings("cpu")
    print(json.dumps(environment.result_environment(torch.device("cpu")), sort_keys=True))


def node_name() -> str:
    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:6]}"


def experiment_ref(commit: str, name: str) -> str:
    return f"refs/exps/{commit[:2]}/{commit[2:]}/{name}"


def node_environment(threads: int) -> dict[str, str]:
    """The node's environment for git, dvc and the stages: this interpreter's python first (the stages'
    commands say `python`), the threads Ray gave the task, and no PYTHONPATH (Ray's copy of the driver's
    rnnlab must not shadow the clone's)."""
    environment = dict(os.environ)
    environment.pop("PYTHONPATH", None)
    environment["PATH"] = str(Path(sys.executable).parent) + os.pathsep + environment.get("PATH", "")
    environment["RNNLAB_THREADS"] = str(threads)
    environment["DVC_NO_ANALYTICS"] = "1"
    for role in ("AUTHOR", "COMMITTER"):  # DVC commits the experiment; a bare node may have no git identity
        environment.setdefault(f"GIT_{role}_NAME", "rnnlab sweep")
        environment.setdefault(f"GIT_{role}_EMAIL", f"sweep@{socket.gethostname()}")
    return environment


class Runner:
    """Runs one experiment's commands in its clone, each into the log, and kills them on cancel."""

    def __init__(self, folder: Path, environment: dict[str, str], log: Path, cancelled: Callable[[], bool]) -> None:
        self.folder, self.environment, self.log, self.cancelled = folder, environment, log, cancelled
        self.process: subprocess.Popen[str] | None = None

    def run(
        self,
        *command: str,
        step: str,
        cwd: Path | None = None,
        on_line: Callable[[str], None] = lambda line: None,
        on_wait: Callable[[], None] = lambda: None,
    ) -> str:
        """Run `command`; its output goes to the log (and on_line). A failure raises with its last line.

        This thread only waits, in short steps: Ray's cancel raises KeyboardInterrupt between them, and
        `stop` then ends the command's process group (dvc and the stage it runs). An interrupt can land
        inside a library call that swallows it, so each step also asks `cancelled` (Ray's flag).
        """
        lines: list[str] = []
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            self.process = process = subprocess.Popen(
                command,
                cwd=cwd or self.folder,
                env=self.environment,
                text=True,
                errors="replace",
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,
            )

            def copy() -> None:
                assert process.stdout is not None
                for line in process.stdout:
                    log.write(line)
                    log.flush()
                    lines.append(line.rstrip())
                    on_line(line)

            reader = threading.Thread(target=copy, daemon=True)
            reader.start()
            while True:
                try:
                    code = process.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    if self.cancelled():
                        raise KeyboardInterrupt from None
                    on_wait()
            reader.join()
        self.process = None
        if code != 0:
            last = next((line for line in reversed(lines) if line.strip()), "no output")
            raise SweepFailure(f"{step} failed (exit {code}): {last.strip()}")
        return "\n".join(lines)

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


class EpochWatch:
    """Turns dvc's "Running stage 'train@v'" lines and v's DVCLive history into progress messages."""

    def __init__(self, folder: Path, report: Callable[[str], None]) -> None:
        self.folder, self.report = folder, report
        self.variant: str | None = None
        self.epochs: int | None = None  # the variant's train.epochs, read once params.yaml has it
        self.shown = ""

    def on_line(self, line: str) -> None:
        if match := RUNNING_STAGE.search(line):
            self.variant, self.epochs = match.group(1), None

    def poll(self) -> None:
        if self.variant is None:
            return
        history = self.folder / "plots/history" / self.variant / "plots/metrics/train_loss.tsv"
        finished = max(0, len(history.read_text(encoding="utf-8").splitlines()) - 1) if history.is_file() else 0
        if self.epochs is None:
            from rnnlab.config.params import PARAMS_FILE, load_params
            from rnnlab.core.errors import UserError

            with contextlib.suppress(UserError):  # the params stage has checked params.yaml by the time a variant trains
                self.epochs = load_params(self.folder / PARAMS_FILE).find_variant(self.variant)[1].train.epochs
        epochs = self.epochs
        epoch = finished + 1 if epochs is None else min(finished + 1, epochs)
        message = f"training {self.variant}: epoch {epoch}" + (f" of {epochs}" if epochs else "")
        if message != self.shown:
            self.shown = message
            self.report(message)


def log_tail(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    return "\n".join(lines[-LOG_TAIL_LINES:])


def remote_has(git_url: str, ref: str, runner: Runner) -> bool:
    return bool(runner.run("git", "ls-remote", git_url, ref, step="git ls-remote", cwd=Path(tempfile.gettempdir())).strip())


def run_task(task: Task, threads: int, report: Callable[[str, str], None], cancelled: Callable[[], bool]) -> Outcome:
    """Clone, pull, check the environment, run, push; `report(status, message)` follows the steps."""
    node = node_name()
    root = Path(os.environ.get(WORK_DIR_ENV) or Path(tempfile.gettempdir()) / "rnnlab-sweep")
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{task.name}-", dir=root))
    log = folder / "sweep.log"
    runner = Runner(folder / "repo", node_environment(threads), log, cancelled)
    seconds: dict[str, float] = {}

    def timed(step: str, *command: str, **options: Any) -> str:
        started = time.perf_counter()
        output = runner.run(*command, step=step, **options)
        seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - started
        return output

    report("running", f"on {node}: cloning")
    try:
        # A retry after its node died may find the experiment pushed already: nothing to redo.
        if remote_has(task.git_url, experiment_ref(task.commit, task.name), runner):
            return Outcome(task.name, node, "already pushed")
        timed("clone", "git", "clone", "-q", "--no-checkout", task.git_url, str(runner.folder), cwd=folder)
        timed("clone", "git", "checkout", "-q", "--detach", task.commit)
        dvc = (sys.executable, "-m", "dvc")
        # One DVC cache per node, shared by its clones: the baseline's data is fetched once per node.
        timed("clone", *dvc, "cache", "dir", "--local", str(root / "cache"))
        if task.local_remote is not None:
            timed("clone", *dvc, "remote", "add", "--local", "-d", "sweep", task.local_remote)
        elif task.dvc_remote is not None:
            timed("clone", *dvc, "remote", "default", "--local", task.dvc_remote)
        report("running", f"on {node}: dvc pull")
        timed("pull", *dvc, "pull", "--allow-missing")
        stamp = json.loads(timed("check", sys.executable, *STAMP_COMMAND).splitlines()[-1])
        if task.stamp is not None and stamp != task.stamp:
            keys = ", ".join(
                f"{key} {stamp.get(key)!r} (driver: {task.stamp.get(key)!r})"
                for key in sorted(set(stamp) | set(task.stamp))
                if stamp.get(key) != task.stamp.get(key)
            )
            raise SweepFailure(
                f"node {node} computes other bits than the driver: {keys}; fix the node (g++, AVX2, the "
                "pinned requirements) or pass --allow-mixed-environments"
            )
        watch = EpochWatch(runner.folder, lambda message: report("running", f"on {node}: {message}"))
        report("running", f"on {node}: dvc exp run")
        timed("run", *dvc, "exp", "run", "-n", task.name, *task.arguments, on_line=watch.on_line, on_wait=watch.poll)
        report("running", f"on {node}: pushing")
        timed("push", *dvc, "push")  # the outputs first...
        timed("push", *dvc, "exp", "push", "--no-cache", task.git_url, task.name)  # ...then the ref, in one git push
        return Outcome(task.name, node, "pushed", seconds=seconds)
    except SweepFailure as failure:
        return Outcome(task.name, node, "failed", f"{failure}\n{log_tail(log)}", seconds)
    finally:
        runner.stop()  # a cancel (KeyboardInterrupt in this thread) stops dvc and its stage
        shutil.rmtree(folder, ignore_errors=True)


def run_experiment(task: Task, progress: Any) -> Outcome:
    """The Ray task (rnnlab/experiments/sweep.py makes it remote, retried when its node dies)."""
    import ray

    threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))

    def report(status: str, message: str) -> None:
        # Sent, not awaited: a task blocked in ray.get lends its CPU to another task on the node, which would
        # run two experiments on one CPU; and a lost progress line must not fail the run.
        progress.actor.put_nowait.remote((task.name, status, message))

    return run_task(task, threads, report, ray.get_runtime_context().is_canceled)
