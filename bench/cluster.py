"""Real servers for the sweep's tests and benchmark: an S3 store (SeaweedFS) and a Ray cluster of a head
and worker nodes, each node a separate process tree with its own working folder, as machines would be.

All of them run in one network namespace of their own that has only a loopback interface (`unshare -n`,
entered with `nsenter`), so whatever address Ray binds (some of its servers bind 0.0.0.0) is reachable
from nowhere but 127.0.0.1 inside it; the sweep's driver runs there too. Every process is stopped by
PID with its whole tree, SIGKILL (Ray's gcs_server ignores SIGTERM), also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import psutil

ACCESS_KEY, SECRET_KEY = "rnnlab-sweep", "rnnlab-sweep-secret"
BUCKET = "rnnlab"
S3_ENDPOINT = "http://127.0.0.1:8333"  # inside the namespace
START_SECONDS = 90
# A dead node is noticed in about 3 s instead of Ray's default 30 s or so.
RAY_SETTINGS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper": "true",
    # Nothing reads the metrics, and drivers take no logs (log_to_driver=False; progress comes through a queue):
    # the collection and the log monitor (--include-log-monitor=false) only spent CPU (measured: idle cluster
    # 7.2 -> 4.8 s a minute, start 25 -> 20 s).
    "RAY_enable_metrics_collection": "false",
    # Ray starts task workers at nice +15 (raylet's worker_niceness): in .ci/run, whose other tests run at nice 10
    # for the sweep module to go first, the nodes' experiments got about a quarter of a core (measured: the first
    # sweep test 87 s alone, 302 s in .ci/run).
    "RAY_worker_niceness": "0",
}


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant, collected before any dies (orphans would be reparented)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=10)


@dataclass
class Node:
    name: str
    process: subprocess.Popen[bytes]
    folder: Path  # its own working folder: RNNLAB_SWEEP_DIR, Ray's temp dir, the log

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


class Sandbox:
    """A network namespace with only loopback, and the servers started in it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.holder = subprocess.Popen(
            ["unshare", "-n", "--", "sh", "-c", "ip link set lo up && echo up && exec sleep infinity"], stdout=subprocess.PIPE
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != b"up":
            self.close()
            raise RuntimeError("could not make a network namespace (unshare -n needs root or user namespaces)")
        # Ray's temp dirs hold AF_UNIX sockets, whose paths must stay under 108 bytes: short ones under /tmp.
        self.ray_folder = Path(tempfile.mkdtemp(prefix="rnnlab-ray-"))
        self.started: list[subprocess.Popen[bytes]] = []
        self.nodes: list[Node] = []
        self.workers_started = 0
        self.head_address = ""
        # Ray's token authentication (on by default for `ray start --head`): one token for the cluster and
        # its drivers, kept in the sandbox rather than ~/.ray.
        self.token = folder / "ray_auth_token"
        self.token.write_text(secrets.token_hex(32))

    def command(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n", "--", *argv]

    def environment(self, **extra: str) -> dict[str, str]:
        environment = dict(os.environ)
        environment.pop("PYTHONPATH", None)
        environment["PATH"] = str(Path(sys.executable).parent) + os.pathsep + environment.get("PATH", "")
        environment.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            DVC_NO_ANALYTICS="1",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token),
            **RAY_SETTINGS,
        )
        environment.update(extra)
        return environment

    def start(self, argv: list[str], log: Path, environment: dict[str, str]) -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            process = subprocess.Popen(self.command(*argv), stdout=output, stderr=subprocess.STDOUT, env=environment)
        self.started.append(process)
        return process

    def run(
        self, argv: list[str], cwd: Path, environment: dict[str, str] | None = None, timeout: float = 900, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*argv), cwd=cwd, env=environment or self.environment(), text=True, capture_output=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def python(self, code: str) -> str:
        return self.run([sys.executable, "-c", textwrap.dedent(code)], cwd=self.folder, timeout=START_SECONDS + 30).stdout

    def start_s3(self) -> None:
        """SeaweedFS (master, volume, filer, S3 gateway in one process) with one key pair and one bucket."""
        config = self.folder / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "sweep",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List"],
                        }
                    ]
                }
            )
        )
        data = self.folder / "s3"
        data.mkdir(exist_ok=True)
        weed = str(Path(sys.executable).parent / "weed")
        self.start(
            [
                weed,
                "server",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-filer",
                "-s3",
                f"-s3.config={config}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                # Slots for both collections SeaweedFS grows 7 volumes for: the filer's own log (written a
                # minute after start) and the bucket. With fewer, whichever writes first takes them all and
                # the other is refused ("No writable volumes"): under load, the bucket. Volumes are sparse files.
                "-volume.max=16",
            ],
            self.folder / "s3.log",
            self.environment(),
        )
        self.python(f"""
            import time, botocore.session
            client = botocore.session.get_session().create_client(
                "s3", endpoint_url="{S3_ENDPOINT}", region_name="us-east-1",
                aws_access_key_id="{ACCESS_KEY}", aws_secret_access_key="{SECRET_KEY}")
            deadline = time.time() + {START_SECONDS}
            while True:
                try:
                    client.create_bucket(Bucket="{BUCKET}")
                    break
                except client.exceptions.BucketAlreadyOwnedByYou:  # an earlier try that timed out went through
                    break
                except Exception:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
        """)

    def start_ray(self, workers: int, cpus: int = 1, **environment: str) -> str:
        """A head without CPUs (the driver's machine) and `workers` nodes of `cpus` CPUs; waits until all joined."""
        self.head_address = "127.0.0.1:6379"
        self.add_node("head", ["--head", "--port=6379", "--num-cpus=0", "--include-dashboard=false"])
        for _ in range(workers):
            self.add_worker(cpus, wait=False, **environment)
        self.wait_for_nodes()
        return self.head_address

    def add_worker(self, cpus: int = 1, wait: bool = True, cores: str | None = None, **environment: str) -> Node:
        """A worker node of `cpus` CPUs; `cores` (e.g. "1") pins it and all it runs to those cores, as a
        machine of that size would be (the benchmark's two nodes on one 2-core machine)."""
        self.workers_started += 1  # a new name, so a new folder: never a dead node's
        name = f"worker{self.workers_started}"
        # A resource named after the node (no task asks for it), so wait_for_nodes can tell which nodes joined.
        arguments = [f"--address={self.head_address}", f"--num-cpus={cpus}", f"--resources={json.dumps({name: 1})}"]
        return self.add_node(name, arguments, wait, cores, **environment)

    def add_node(self, name: str, arguments: list[str], wait: bool = True, cores: str | None = None, **environment: str) -> Node:
        folder = self.folder / name
        (folder / "work").mkdir(parents=True, exist_ok=True)
        ray = str(Path(sys.executable).parent / "ray")
        process = self.start(
            [
                *(["taskset", "-c", cores] if cores else []),
                ray,
                "start",
                "--block",
                "--disable-usage-stats",
                "--include-log-monitor=false",  # see RAY_SETTINGS
                "--node-ip-address=127.0.0.1",
                f"--temp-dir={self.ray_folder / name}",
                *arguments,
            ],
            folder / "node.log",
            self.environment(RNNLAB_SWEEP_DIR=str(folder / "work"), **environment),
        )
        node = Node(name, process, folder)
        self.nodes.append(node)
        if wait and name != "head":
            self.wait_for_nodes()
        return node

    def wait_for_nodes(self) -> None:
        """Until every running worker has joined: by name, as Ray reports a killed node alive for seconds after."""
        names = [node.name for node in workers(self) if node.process.poll() is None]
        self.python(f"""
            import logging, time, ray
            ray.init(address="{self.head_address}", logging_level=logging.ERROR, log_to_driver=False)
            deadline = time.time() + {START_SECONDS}
            while not set({names!r}) <= {{name for node in ray.nodes() if node["Alive"] for name in node["Resources"]}}:
                assert time.time() < deadline, ray.nodes()
                time.sleep(0.3)
        """)

    def kill_node(self, node: Node) -> None:
        """As if its machine died: the node and everything it runs, at once."""
        kill_tree(node.process.pid)
        self.nodes.remove(node)

    def close(self) -> None:
        for process in [*self.started, self.holder]:
            kill_tree(process.pid)
        shutil.rmtree(self.ray_folder, ignore_errors=True)


def workers(sandbox: Sandbox) -> list[Node]:
    return [node for node in sandbox.nodes if node.name != "head"]


def running_commands(node: Node) -> list[str]:
    """The command lines of what a node runs besides Ray itself: a leftover dvc or stage shows here."""
    commands = []
    for process in node.descendants():
        try:
            command = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "dvc" in command or "stages." in command or "git " in command:
            commands.append(command)
    return commands
