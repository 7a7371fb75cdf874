"""Shared helpers for the hardening tests: run a stage's CLI in-process, list files, write params."""

from __future__ import annotations

import contextlib
import importlib
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rnnlab.core.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


def lookup(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = value[part]
    return value


def stage_commands(key: str | None = None) -> dict[str, tuple[str, list[str]]]:
    """stage name -> (module, argv) from dvc.yaml; a foreach stage is taken for `key` or its first item."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    variables = {variable: str(value) for mapping in pipeline.get("vars", []) for variable, value in mapping.items()}
    params = repo_params()
    commands = {}
    for name, stage in pipeline["stages"].items():
        if "foreach" in stage:
            items = lookup(params, stage["foreach"].strip("${}"))
            variables_here = {**variables, "key": key or str(next(iter(items)))}
            command = stage["do"]["cmd"]
        else:
            variables_here, command = variables, stage["cmd"]
        for variable, value in variables_here.items():
            command = command.replace("${" + variable + "}", value)
        tokens = shlex.split(command)
        assert tokens[:2] == ["python", "-m"] and "${" not in command, f"{name}: unexpected command {command!r}"
        commands[name] = (tokens[2], tokens[3:])
    return commands


def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def write_params(directory: Path, params: dict[str, Any]) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def files_under(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file() or path.is_symlink()}


def outputs_under(directory: Path) -> set[str]:
    """The files under `directory` besides the params.yaml write_params made."""
    return files_under(directory) - {"params.yaml"}


@contextlib.contextmanager
def restored_sigterm() -> Iterator[None]:
    """run_cli installs SIGTERM and SIGINT handlers; keep pytest's own handlers intact afterwards."""
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_stage(module: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `python -m <module> <argv>` in-process through the real CLI wrapper; return (exit code, stdout, stderr)."""
    main = importlib.import_module(module).main
    capsys.readouterr()
    code = 0
    with restored_sigterm():
        try:
            run_cli(main, argv)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, stderr: str, *needles: str) -> str:
    """Exit 2 with one `error: ...` line (no traceback) that mentions every needle; return that line."""
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    message = lines[0]
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message
