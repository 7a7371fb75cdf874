"""The layout's rules: dvc.yaml's code deps cover every project file a stage runs (and nothing it does
not), no stage imports another, nothing imports the tests, and importing the library changes nothing."""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.pipeline.imports import imported_modules, project_files

ROOT = Path(__file__).resolve().parents[2]
CODE_ROOTS = ("stages/", "rnnlab/")
# Package markers every `python -m stages.x` loads; they hold a docstring only (checked below), so
# they decide nothing and need no dependency entry.
DOCSTRING_ONLY = (Path("stages/__init__.py"), Path("rnnlab/__init__.py"))


def stage_definitions() -> dict[str, dict]:
    """stage name (foreach stages once, by their group name) -> its definition."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def entry_file(command: str) -> Path:
    tokens = shlex.split(command)
    assert tokens[:2] == ["python", "-m"], command
    return Path(*tokens[2].split(".")).with_suffix(".py")


def code_deps(stage: dict) -> list[str]:
    return [dep for dep in stage["deps"] if dep.startswith(CODE_ROOTS)]


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(dep) or Path(dep) in path.parents for dep in deps)


@pytest.mark.parametrize("name", sorted(stage_definitions()))
def test_code_deps_cover_every_project_file_the_stage_runs(name: str) -> None:
    stage = stage_definitions()[name]
    deps = code_deps(stage)
    runs = project_files(ROOT / entry_file(stage["cmd"]), ROOT)
    missing = sorted(str(path) for path in runs if not covered(path, deps) and path not in DOCSTRING_ONLY)
    assert not missing, f"{name}: add to its deps in dvc.yaml (or import less): {missing}"
    unused = [dep for dep in deps if not any(covered(path, [dep]) for path in runs)]
    assert not unused, f"{name}: dvc.yaml lists code it never imports, so editing it reruns the stage for nothing: {unused}"


def test_package_markers_hold_only_a_docstring() -> None:
    for path in DOCSTRING_ONLY:
        body = ast.parse((ROOT / path).read_text(encoding="utf-8")).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), path


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_no_stage_imports_another_and_nothing_imports_the_tests() -> None:
    for path in python_files("stages"):
        stages = {name for name in imported_modules(path, ROOT) if name.startswith("stages.")}
        assert not stages, f"{path.name} imports {stages}: move what it shares into rnnlab/"
    for path in python_files("rnnlab", "stages", "tools", "bench"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {name for name in imported if name.split(".")[0] == "tests"}, path
    library = {name for path in python_files("rnnlab") for name in imported_modules(path, ROOT)}
    assert not {name for name in library if name.split(".")[0] in ("stages", "tools", "bench")}, "the library imports an entry point"


def dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PROBE = """
import importlib, json, os, sys
third_party, ours = sys.argv[1].split(","), sys.argv[2:]
for name in filter(None, third_party):  # what they change on import (torch sets KMP_* variables) is theirs
    importlib.import_module(name)
before = dict(os.environ)
for name in ours:
    importlib.import_module(name)
from rnnlab.runtime import environment
print(json.dumps({"environment_changed": sorted(set(os.environ.items()) ^ set(before.items())),
                  "configured": environment._state["mode"] is not None,
                  "heavy": sorted(name for name in ("torch", "numpy") if name in sys.modules)}))
"""


def probe_imports(modules: list[str], third_party: tuple[str, ...] = ()) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", PROBE, ",".join(third_party), *modules], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_library_has_no_side_effects() -> None:
    outcome = probe_imports([dotted(path) for path in python_files("rnnlab")], ("torch", "numpy", "sklearn", "matplotlib"))
    assert outcome["environment_changed"] == [] and outcome["configured"] is False


def configures_the_runtime(path: Path) -> bool:
    return "environment.configure(" in path.read_text(encoding="utf-8")


def test_entry_points_load_no_torch_or_numpy_before_they_configure_the_runtime() -> None:
    """Entry points that run torch or BLAS math configure the runtime in main(); their module-level
    imports stay light, so the math libraries load only after it (they read their pins once, at load)."""
    entries = [path for path in python_files("stages", "tools", "bench") if configures_the_runtime(path)]
    assert {"train.py", "evaluate.py", "baseline.py", "predict.py"} <= {path.name for path in entries}
    outcome = probe_imports([dotted(path) for path in entries])
    assert outcome == {"environment_changed": [], "configured": False, "heavy": []}
