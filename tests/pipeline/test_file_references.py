"""No comment, docstring or doc names a project file that does not exist: files move and their mentions
stay behind, so every path-like mention (`stages/train.py`, `docs/review.md`, `tests/unit/...`) is looked
up in this checkout. (Relative markdown links: tests/pipeline/test_docs_numbers.py.)"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE_FOLDERS = ("rnnlab", "stages", "tools", "bench", "tests")
COMMENTED_FILES = ("params.yaml", "dvc.yaml", "requirements.txt", ".ci/run")
PROJECT_FOLDERS = ("rnnlab", "stages", "tools", "bench", "tests", "docs", "presets", ".ci")
FOLDER_NAMES = "|".join(re.escape(folder) for folder in PROJECT_FOLDERS)
PATH = re.compile(r"(?<![\w./-])((?:" + FOLDER_NAMES + r")/[\w./{},*-]*)")
BRACES = re.compile(r"\{([^{}]*)\}")


def expand_braces(path: str) -> list[str]:
    """`stages/{train,xy}.py` -> both paths (one brace group at a time, as a shell does)."""
    match = BRACES.search(path)
    if match is None:
        return [path]
    return [expanded for choice in match.group(1).split(",")
            for expanded in expand_braces(path[: match.start()] + choice + path[match.end():])]


def exists(path: str) -> bool:
    path = path.rstrip(".,:;")
    if "*" in path:
        return any(ROOT.glob(path))
    return (ROOT / path).exists()


def python_comments(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every # comment and every module, class and function docstring."""
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                for offset, line in enumerate(first.value.value.splitlines()):
                    yield first.lineno + offset, line


def hash_comments(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text after #) in YAML, requirements and shell files."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if "#" in line:
            yield number, line[line.index("#"):]


def document_lines(path: Path) -> Iterator[tuple[int, str]]:
    yield from enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)


def sources() -> Iterator[tuple[Path, Iterator[tuple[int, str]]]]:
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, python_comments(path)
    for name in COMMENTED_FILES:
        yield ROOT / name, hash_comments(ROOT / name)
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        yield path, document_lines(path)


def missing_references() -> list[str]:
    missing = []
    for path, lines in sources():
        where = path.relative_to(ROOT)
        for number, text in lines:
            for mention in PATH.findall(text):
                missing.extend(f"{where}:{number}: {candidate.rstrip('.,:;')}"
                               for candidate in expand_braces(mention) if not exists(candidate))
    return missing


def test_every_mentioned_project_file_exists() -> None:
    missing = missing_references()
    assert not missing, "comments or docs name files that do not exist:\n" + "\n".join(missing)


def test_the_walk_finds_a_stale_mention(tmp_path: Path) -> None:
    """The pattern catches the forms the project writes: backticked, in a docstring, in braces."""
    module = tmp_path / "module.py"
    module.write_text('"""Reads `stages/nothing_here.py`."""\n# see stages/{train,gone}.py\n', encoding="utf-8")
    found = [mention for _, text in python_comments(module) for mention in PATH.findall(text)]
    assert found == ["stages/{train,gone}.py", "stages/nothing_here.py"]
    assert [candidate for candidate in expand_braces(found[0]) if not exists(candidate)] == ["stages/gone.py"]
