"""Which project files a stage runs: every `import` in a file (inside functions too: the stages import torch's
library inside `main`, after configuring the runtime), followed through this repository's own packages."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PROJECT_PACKAGES = ("rnnlab", "stages", "tools", "bench")
COMPILED_SOURCES = (".cpp", ".h")  # beside a module that compiles them at run time (rnnlab/runtime/gemm)


def module_file(root: Path, module: str) -> Path | None:
    """The file of a dotted project module (a package's __init__.py), or None outside the project."""
    base = root.joinpath(*module.split("."))
    candidates = (base.with_suffix(".py"), base / "__init__.py") if module.split(".")[0] in PROJECT_PACKAGES else ()
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def imported_modules(path: Path, root: Path) -> set[str]:
    """Dotted names of the project modules (and their parent packages) `path` imports directly."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import name`: the name may be a module (kept below only if it is one)
            names.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    with_parents = {".".join(name.split(".")[:depth]) for name in names for depth in range(1, name.count(".") + 2)}
    return {name for name in with_parents if module_file(root, name) is not None}


def fingerprint(entry: Path, root: Path, memo: dict[Path, list[Path]] | None = None) -> dict[str, str]:
    """md5 of every project file `entry` runs (its packages' __init__ files and the C++ beside them included), by path.
    `memo` (file -> the files it imports), shared by the code stage's walks of one tree, parses each module once."""
    memo = {} if memo is None else memo
    root = root.resolve()
    seen: set[Path] = set()
    pending = [entry.resolve()]
    while pending:
        path = pending.pop()
        if path not in seen:
            seen.add(path)
            if path not in memo:
                memo[path] = [file.resolve() for name in imported_modules(path, root) if (file := module_file(root, name))]
            pending += memo[path]
    package = entry.resolve().parent
    while (package / "__init__.py").is_file() and root in package.parents:  # `python -m stages.x` loads stages/
        seen.add(package / "__init__.py")
        package = package.parent
    seen |= {source for path in list(seen) for source in path.parent.iterdir() if source.suffix in COMPILED_SOURCES}
    relative = sorted(path.relative_to(root) for path in seen)
    return {path.as_posix(): hashlib.md5((root / path).read_bytes()).hexdigest() for path in relative}
