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


def parse_table(body: str) -> list[dict[str, str]]:
    """A markdown table's rows as {column header: cell text}."""
    lines = [line for line in body.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def backticked(cell: str) -> str:
    return re.search(r"`([^`]+)`", cell).group(1)


def quoted_tables() -> dict[str, list[dict[str, str]]]:
    return {name: parse_table(body) for name, body in BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))}


def test_readme_quotes_results() -> None:
    assert quoted_tables(), "README.md has no <!-- results:... --> table"


@pytest.mark.parametrize("name", sorted(quoted_tables()))
def test_readme_accuracies_match_committed_metrics(name: str) -> None:
    for row in quoted_tables()[name]:
        variant = backticked(row["variant"])  # e.g. "`relu` (control)"
        metrics = json.loads((ROOT / "metrics" / f"{variant}.json").read_text(encoding="utf-8"))
        quoted = float(row["test accuracy"].rstrip(" %"))
        assert quoted == pytest.approx(100 * metrics["accuracy"], abs=0.006), f"README {name}: {variant}"


# Study tables quote reports/studies.json (written by `python -m stages.studies` from the DVC
# experiments): `<!-- studies:NAME -->` rows name an experiment and a variant; the
# `<!-- spread:NAME -->` rows name a variant and give "mean ± std" over the listed seeds.
STUDY_BLOCK = re.compile(r"<!-- (studies|spread):(\w+) -->\n(.*?)<!-- /\1:\2 -->", re.S)


def quoted_study_tables(kind: str) -> dict[str, list[dict[str, str]]]:
    blocks = STUDY_BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    return {name: parse_table(body) for block_kind, name, body in blocks if block_kind == kind}


def studies_json() -> dict:
    return json.loads((ROOT / "reports" / "studies.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(quoted_study_tables("studies")))
def test_readme_study_accuracies_match_studies_json(name: str) -> None:
    experiments = {entry["name"]: entry for entry in studies_json()["experiments"]}
    for row in quoted_study_tables("studies")[name]:
        experiment, variant = backticked(row["experiment"]), backticked(row["variant"])
        assert experiment in experiments, f"README studies:{name}: {experiment} not in reports/studies.json"
        accuracy = experiments[experiment]["rows"][variant]["accuracy"]
        quoted = float(re.findall(r"[\d.]+", row["test accuracy"])[0])  # "87.08 %" or "**87.08 %**"
        assert quoted == pytest.approx(100 * accuracy, abs=0.006), f"README studies:{name}: {experiment} {variant}"


@pytest.mark.parametrize("name", sorted(quoted_study_tables("spread")))
def test_readme_seed_spread_matches_studies_json(name: str) -> None:
    spread = studies_json()["seed_spread"]
    for row in quoted_study_tables("spread")[name]:
        variant = backticked(row["variant"])
        seeds = [int(seed) for seed in row["seeds"].split(",")]
        runs = re.findall(r"`([^`]+)`", row["runs"])  # names the group when one variant has several
        matches = [entry for entry in spread if (entry["variant"], entry["seeds"], entry["runs"]) == (variant, seeds, runs)]
        assert len(matches) == 1, f"README spread:{name}: no seed-spread entry for {variant} seeds {seeds} runs {runs}"
        mean, std = (float(part) for part in re.findall(r"[\d.]+", row["mean ± std"])[:2])
        assert mean == pytest.approx(100 * matches[0]["mean"], abs=0.006)
        assert std == pytest.approx(100 * matches[0]["std"], abs=0.006)
