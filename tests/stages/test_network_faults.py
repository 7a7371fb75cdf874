"""Issue 6, network: the download against a local HTTP server on 127.0.0.1 that misbehaves on purpose.

The server runs in a thread, answers a bounded number of requests and is shut down by the fixture.
XDG_CACHE_HOME points into tmp and RNNLAB_RETRY_SCALE=0 removes the waits between retries.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rnnlab.config.params import DownloadConfig
from rnnlab.core.errors import UserError
from bench.archive import make_archive
from rnnlab.text.fetch import cache_dir, download
from tests.support.stage_runner import (
    assert_user_error,
    files_under,
    outputs_under,
    repo_params,
    run_stage,
    stage_commands,
    write_params,
)

MAX_REQUESTS = 12  # the downloader makes at most 4 attempts per run; more means a retry loop gone wrong
ARCHIVE_NAME = "aclImdb_v1.tar.gz"


@dataclass
class Behaviour:
    """What the server does; `respond` returns True when it handled the request itself."""

    body: bytes
    respond: Callable[[Handler, int], bool] = lambda handler, number: False
    honour_range: bool = True
    requests: list[dict[str, str | None]] = field(default_factory=list)
    archive_seen_early: list[bool] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    behaviour: Behaviour
    destination: Path
    timeout = 5  # a stuck client never blocks the test server for long

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        behaviour = self.behaviour
        number = len(behaviour.requests) + 1
        behaviour.requests.append({"path": self.path, "range": self.headers.get("Range")})
        # While a download is under way the final archive must not exist yet (it appears after the md5 check).
        behaviour.archive_seen_early.append(self.destination.exists())
        if number > MAX_REQUESTS:
            self.send_error(410, "too many requests in one test")
            return
        if behaviour.respond(self, number):
            return
        self.send_body(behaviour.body)

    def send_body(self, body: bytes, cut_after: int | None = None) -> None:
        start = 0
        requested = self.headers.get("Range")
        if requested and self.behaviour.honour_range:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_error(416, "range not satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:] if cut_after is None else body[start:cut_after]
        self.wfile.write(payload)
        self.wfile.flush()
        if cut_after is not None:
            self.close_connection = True  # the client sees a body shorter than Content-Length


@dataclass
class Server:
    url: str
    behaviour: Behaviour
    destination: Path


@pytest.fixture
def archive_bytes(tmp_path: Path) -> bytes:
    return make_archive(tmp_path / "served.tar.gz", per_folder=3).read_bytes()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RNNLAB_RETRY_SCALE", "0")
    monkeypatch.delenv("IMDB_ARCHIVE", raising=False)
    return cache_dir()


@pytest.fixture
def serve(cache: Path) -> Iterator[Callable[[Behaviour], Server]]:
    servers: list[http.server.HTTPServer] = []

    def start(behaviour: Behaviour) -> Server:
        handler = type("BoundHandler", (Handler,), {"behaviour": behaviour, "destination": cache / ARCHIVE_NAME})
        server = http.server.HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return Server(f"http://127.0.0.1:{server.server_port}/{ARCHIVE_NAME}", behaviour, cache / ARCHIVE_NAME)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def config_for(server: Server, body: bytes) -> DownloadConfig:
    return DownloadConfig(url=server.url, md5=hashlib.md5(body).hexdigest())


def test_a_good_server_gives_the_verified_archive(serve, archive_bytes):
    server = serve(Behaviour(archive_bytes))
    path = download(config_for(server, archive_bytes), server.destination)
    assert path.read_bytes() == archive_bytes
    assert files_under(path.parent) == {ARCHIVE_NAME}
    assert len(server.behaviour.requests) == 1
    download(config_for(server, archive_bytes), server.destination)  # cached: no second request
    assert len(server.behaviour.requests) == 1


def drop_first(cut_fraction: float = 0.5) -> Callable[[Handler, int], bool]:
    def respond(handler: Handler, number: int) -> bool:
        if number == 1:
            handler.send_body(handler.behaviour.body, cut_after=int(len(handler.behaviour.body) * cut_fraction))
            return True
        return False

    return respond


def test_dropped_connection_resumes_with_range(serve, archive_bytes):
    server = serve(Behaviour(archive_bytes, respond=drop_first()))
    path = download(config_for(server, archive_bytes), server.destination)
    assert path.read_bytes() == archive_bytes
    assert [request["range"] for request in server.behaviour.requests] == [None, f"bytes={len(archive_bytes) // 2}-"]
    assert server.behaviour.archive_seen_early == [False, False]
    assert files_under(path.parent) == {ARCHIVE_NAME}  # no .part left behind


def test_dropped_connection_restarts_when_the_server_ignores_range(serve, archive_bytes):
    server = serve(Behaviour(archive_bytes, respond=drop_first(), honour_range=False))
    path = download(config_for(server, archive_bytes), server.destination)
    assert path.read_bytes() == archive_bytes  # the 200 reply replaced the partial file, not appended to it
    assert len(server.behaviour.requests) == 2


def test_connection_that_always_drops_never_leaves_an_archive(serve, archive_bytes):
    def always_drop(handler: Handler, number: int) -> bool:
        handler.send_body(handler.behaviour.body, cut_after=len(handler.behaviour.body) // 3)
        return True

    server = serve(Behaviour(archive_bytes, respond=always_drop, honour_range=False))
    with pytest.raises(UserError, match=r"after 4 attempts .*IMDB_ARCHIVE"):
        download(config_for(server, archive_bytes), server.destination)
    assert len(server.behaviour.requests) == 4
    assert not server.destination.exists()
    # Only the clearly named partial file may stay (for a later resume), never the archive's own name.
    assert files_under(server.destination.parent) <= {ARCHIVE_NAME + ".part"}


def test_md5_mismatch_names_expected_and_actual_and_keeps_nothing(serve, archive_bytes):
    wrong = archive_bytes[:-10] + b"0123456789"
    server = serve(Behaviour(wrong))
    config = config_for(server, archive_bytes)
    with pytest.raises(UserError) as raised:
        download(config, server.destination)
    message = str(raised.value)
    assert f"expected {config.md5}" in message and f"got {hashlib.md5(wrong).hexdigest()}" in message
    assert "download.md5" in message
    assert files_under(server.destination.parent) == set()


def test_stale_partial_file_from_another_archive_is_discarded(serve, archive_bytes):
    server = serve(Behaviour(archive_bytes))
    server.destination.parent.mkdir(parents=True)
    partial = server.destination.with_name(ARCHIVE_NAME + ".part")
    partial.write_bytes(b"x" * (len(archive_bytes) // 2))  # resumed, it would give a corrupt archive
    with pytest.raises(UserError, match="md5 mismatch"):
        download(config_for(server, archive_bytes), server.destination)
    assert not partial.exists() and not server.destination.exists()
    assert download(config_for(server, archive_bytes), server.destination).read_bytes() == archive_bytes  # rerun works


def http_status(code: int) -> Callable[[Handler, int], bool]:
    def respond(handler: Handler, number: int) -> bool:
        handler.send_error(code)
        return True

    return respond


def run_download_stage(tmp_path: Path, url: str, md5: str, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, Path]:
    work = tmp_path / "work"
    work.mkdir()
    params = repo_params()
    params["download"] = {"url": url, "md5": md5}
    write_params(work, params)
    monkeypatch.chdir(work)
    code, _out, err = run_stage(*stage_commands()["download"], capsys)
    return code, err, work


def test_http_404_fails_at_once_naming_the_url_and_imdb_archive(tmp_path, serve, archive_bytes, capsys, monkeypatch):
    server = serve(Behaviour(archive_bytes, respond=http_status(404)))
    code, err, work = run_download_stage(tmp_path, server.url, hashlib.md5(archive_bytes).hexdigest(), capsys, monkeypatch)
    assert_user_error(code, err, "HTTP 404", server.url, "download.url", "IMDB_ARCHIVE")
    assert len(server.behaviour.requests) == 1  # a client error is not retried
    assert outputs_under(work) == set() and not server.destination.exists()


def test_http_500_is_retried_then_fails_naming_imdb_archive(tmp_path, serve, archive_bytes, capsys, monkeypatch):
    server = serve(Behaviour(archive_bytes, respond=http_status(500)))
    code, err, work = run_download_stage(tmp_path, server.url, hashlib.md5(archive_bytes).hexdigest(), capsys, monkeypatch)
    assert_user_error(code, err, "500", "after 4 attempts", "IMDB_ARCHIVE")
    assert len(server.behaviour.requests) == 4
    assert outputs_under(work) == set() and not server.destination.exists()


def test_http_500_once_then_success(serve, archive_bytes):
    def fail_once(handler: Handler, number: int) -> bool:
        if number == 1:
            handler.send_error(503)
            return True
        return False

    server = serve(Behaviour(archive_bytes, respond=fail_once))
    assert download(config_for(server, archive_bytes), server.destination).read_bytes() == archive_bytes


def test_unreachable_host_says_imdb_archive_exists(tmp_path, cache, capsys, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{ARCHIVE_NAME}"
    code, err, work = run_download_stage(tmp_path, url, "7c2ac02c03563afcf9b574c7e56c153a", capsys, monkeypatch)
    assert_user_error(code, err, url, "IMDB_ARCHIVE=/path/to/aclImdb_v1.tar.gz", "no internet")
    assert outputs_under(work) == set()
    assert not (cache / ARCHIVE_NAME).exists()


def test_download_stage_end_to_end_from_the_local_server(tmp_path, serve, archive_bytes, capsys, monkeypatch):
    server = serve(Behaviour(archive_bytes, respond=drop_first(0.3)))
    code, err, work = run_download_stage(tmp_path, server.url, hashlib.md5(archive_bytes).hexdigest(), capsys, monkeypatch)
    assert code == 0, err
    assert len((work / "data/reviews.jsonl").read_text().splitlines()) == 12
    assert "retrying" in err  # the drop was reported, not silent
