"""The README's results tables quote the committed metrics/*.json; this fails when they drift apart.

Rows between `<!-- results:NAME -->` and `<!-- /results:NAME -->` markers have the variant name in
their first cell and test accuracy (in %) in the column headed "test accuracy".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- results:(\w+) -->\n(.*?)<!-- /results:\1 -->", re.S)


def quoted_tables() -> dict[str, list[dict[str, str]]]:
    tables = {}
    for name, body in BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8")):
        lines = [line for line in body.splitlines() if line.startswith("|")]
        header = [cell.strip() for cell in lines[0].strip("|").split("|")]
        tables[name] = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    return tables


def test_readme_quotes_results() -> None:
    assert quoted_tables(), "README.md has no <!-- results:... --> table"


@pytest.mark.parametrize("name", sorted(quoted_tables()))
def test_readme_accuracies_match_committed_metrics(name: str) -> None:
    for row in quoted_tables()[name]:
        variant = re.search(r"`([^`]+)`", row["variant"]).group(1)  # e.g. "`relu` (control)"
        metrics = json.loads((ROOT / "metrics" / f"{variant}.json").read_text(encoding="utf-8"))
        quoted = float(row["test accuracy"].rstrip(" %"))
        assert quoted == pytest.approx(100 * metrics["accuracy"], abs=0.006), f"README {name}: {variant}"
