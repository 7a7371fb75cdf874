"""The layout's rules: each stage depends on the fingerprint of exactly the project files it runs, no
stage imports another, nothing imports the tests, and importing the library changes nothing."""

from __future__ import annotations

import ast
import json
import modulefinder
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rnnlab.core.imports import fingerprint, imported_modules

ROOT = Path(__file__).resolve().parents[2]
CODE_ROOTS = ("stages", "rnnlab")


def stage_definitions() -> dict[str, dict]:
    """stage name (foreach stages once, by their group name) -> its definition."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def entry_file(command: str) -> Path:
    tokens = shlex.split(command)
    assert tokens[:2] == ["python", "-m"], command
    return Path(*tokens[2].split(".")).with_suffix(".py")


def stage_modules() -> list[Path]:
    return sorted(path for path in (ROOT / "stages").glob("*.py") if path.name != "__init__.py")


@pytest.mark.parametrize("name", sorted(set(stage_definitions()) - {"code"}))
def test_each_stage_depends_on_its_own_code_fingerprint_and_on_no_code_path(name: str) -> None:
    stage = stage_definitions()[name]
    code_deps = [dep for dep in stage["deps"] if dep.startswith("${code}/")]
    assert code_deps == [f"${{code}}/{entry_file(stage['cmd']).stem}.json"], name
    assert not [dep for dep in stage["deps"] if dep.split("/")[0] in CODE_ROOTS], f"{name}: depend on its fingerprint instead"


def test_the_code_stage_watches_every_file_a_stage_runs() -> None:
    stage = stage_definitions()["code"]
    assert sorted(stage["deps"]) == sorted(CODE_ROOTS)
    for entry in stage_modules():
        assert all(path.split("/")[0] in CODE_ROOTS for path in fingerprint(entry, ROOT)), entry


@pytest.mark.parametrize("entry", stage_modules(), ids=lambda path: path.stem)
def test_a_fingerprint_covers_what_modulefinder_finds(entry: Path) -> None:
    """An independent walk (the standard library's bytecode scanner) finds no project file the fingerprint lacks."""
    finder = modulefinder.ModuleFinder(path=[str(ROOT)])  # only this repository: third-party imports are not followed
    finder.run_script(str(entry))
    found = {Path(module.__file__).resolve().relative_to(ROOT).as_posix() for module in finder.modules.values()
             if module.__file__ and Path(module.__file__).resolve().is_relative_to(ROOT)}
    assert found and found <= set(fingerprint(entry, ROOT))


def test_an_edit_changes_exactly_the_fingerprints_of_the_stages_that_run_the_file(tmp_path: Path) -> None:
    for folder in CODE_ROOTS:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))

    def prints() -> dict[str, dict[str, str]]:
        return {entry.stem: fingerprint(entry, tmp_path) for entry in sorted((tmp_path / "stages").glob("[!_]*.py"))}

    before = prints()
    with (tmp_path / "rnnlab/evaluation/metrics.py").open("a") as handle:
        handle.write("\n# an edit\n")
    with (tmp_path / "rnnlab/comparison/render.py").open("a") as handle:  # no stage runs it
        handle.write("\n# an edit\n")
    after = prints()
    assert {name for name in before if before[name] != after[name]} == {"evaluate", "baseline"}


def test_package_markers_hold_only_a_docstring() -> None:
    """Every `python -m stages.x` loads them: they must decide nothing."""
    for path in (Path("stages/__init__.py"), Path("rnnlab/__init__.py")):
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
