"""The results tables quoted in README.md and docs/*.md match the committed files; this fails when they drift apart.

Rows between `<!-- results:NAME -->` and `<!-- /results:NAME -->` markers have the variant name in
their first cell and test accuracy (in %) in the column headed "test accuracy"; they quote
metrics/<variant>.json. `<!-- studies:NAME -->` and `<!-- spread:NAME -->` blocks quote
reports/studies.json (see below). Every relative link in those pages must point to a file that exists, and
the README stays a front door, docs/ a manual read in an afternoon.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_LINES, DOCS_WORDS = 150, 10_000
BLOCK = re.compile(r"<!-- results:([\w-]+) -->\n(.*?)<!-- /results:\1 -->", re.S)


def doc_pages() -> list[Path]:
    """The pages that quote results: the README and every docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_texts() -> dict[str, str]:
    """{path relative to the repository root: text} for every page of doc_pages()."""
    return {page.relative_to(ROOT).as_posix(): page.read_text(encoding="utf-8") for page in doc_pages()}


def parse_table(body: str) -> list[dict[str, str]]:
    """A markdown table's rows as {column header: cell text}."""
    lines = [line for line in body.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=False)) for line in lines[2:]]


def backticked(cell: str) -> str:
    return re.search(r"`([^`]+)`", cell).group(1)


def quoted_tables() -> dict[str, list[dict[str, str]]]:
    """{"FILE results:NAME": rows} for every results block in README.md and docs/*.md."""
    return {
        f"{page} results:{name}": parse_table(body)
        for page, text in doc_texts().items()
        for name, body in BLOCK.findall(text)
    }


def test_readme_and_docs_stay_short() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    words = sum(len(page.read_text(encoding="utf-8").split()) for page in (ROOT / "docs").rglob("*.md"))
    assert lines <= README_LINES, f"README.md has {lines} lines (at most {README_LINES}): move detail into docs/"
    assert words <= DOCS_WORDS, f"docs/ has {words} words (at most {DOCS_WORDS:,}): merge or cut what repeats"


def test_readme_quotes_results() -> None:
    blocks = BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert {name for name, _ in blocks} >= {"imdb", "order"}, "README.md lacks its <!-- results:imdb/order --> tables"
    assert all(parse_table(body) for _, body in blocks), "an empty <!-- results:... --> table in README.md"


@pytest.mark.parametrize("name", sorted(quoted_tables()))
def test_readme_accuracies_match_committed_metrics(name: str) -> None:
    for row in quoted_tables()[name]:
        variant = backticked(row["variant"])  # e.g. "`relu` (control)"
        metrics = json.loads((ROOT / "metrics" / f"{variant}.json").read_text(encoding="utf-8"))
        quoted = float(row["test accuracy"].rstrip(" %"))
        assert quoted == pytest.approx(100 * metrics["accuracy"], abs=0.006), f"{name}: {variant}"


# Study tables quote reports/studies.json (written by `python -m tools.studies` from the DVC
# experiments): `<!-- studies:NAME -->` rows name an experiment and a variant; the
# `<!-- spread:NAME -->` rows name a variant and give "mean ± std" over the listed seeds.
STUDY_BLOCK = re.compile(r"<!-- (studies|spread):([\w-]+) -->\n(.*?)<!-- /\1:\2 -->", re.S)
ANY_OPENING = re.compile(r"<!-- (results|studies|spread):([^ ]+) -->")


def test_every_quoted_block_is_checked() -> None:
    # A block whose name or closing marker the patterns miss would be quoted but never checked.
    for page, text in doc_texts().items():
        openings = ANY_OPENING.findall(text)
        parsed = [(kind, name) for kind, name, _body in STUDY_BLOCK.findall(text)] + [("results", name) for name, _ in BLOCK.findall(text)]
        assert sorted(openings) == sorted(parsed), f"{page}: blocks not parsed: {sorted(set(openings) - set(parsed))}"


def quoted_study_tables(kind: str) -> dict[str, list[dict[str, str]]]:
    """{"FILE KIND:NAME": rows} for every block of that kind in README.md and docs/*.md."""
    return {
        f"{page} {kind}:{name}": parse_table(body)
        for page, text in doc_texts().items()
        for block_kind, name, body in STUDY_BLOCK.findall(text)
        if block_kind == kind
    }


def test_docs_quote_studies() -> None:
    """The study tables moved to docs/studies.md; losing them silently would leave nothing to check."""
    assert {name.split(":")[1] for name in quoted_study_tables("studies")} >= {"readouts", "cells", "strong"}
    assert {name.split(":")[1] for name in quoted_study_tables("spread")} >= {"default"}


def studies_json() -> dict:
    return json.loads((ROOT / "reports" / "studies.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(quoted_study_tables("studies")))
def test_readme_study_accuracies_match_studies_json(name: str) -> None:
    experiments = {entry["name"]: entry for entry in studies_json()["experiments"]}
    for row in quoted_study_tables("studies")[name]:
        experiment, variant = backticked(row["experiment"]), backticked(row["variant"])
        assert experiment in experiments, f"{name}: {experiment} not in reports/studies.json"
        accuracy = experiments[experiment]["rows"][variant]["accuracy"]
        quoted = float(re.findall(r"[\d.]+", row["test accuracy"])[0])  # "87.08 %" or "**87.08 %**"
        assert quoted == pytest.approx(100 * accuracy, abs=0.006), f"{name}: {experiment} {variant}"


@pytest.mark.parametrize("name", sorted(quoted_study_tables("spread")))
def test_readme_seed_spread_matches_studies_json(name: str) -> None:
    spread = studies_json()["seed_spread"]
    for row in quoted_study_tables("spread")[name]:
        variant = backticked(row["variant"])
        seeds = [int(seed) for seed in row["seeds"].split(",")]
        runs = re.findall(r"`([^`]+)`", row["runs"])  # names the group when one variant has several
        matches = [entry for entry in spread if (entry["variant"], entry["seeds"], entry["runs"]) == (variant, seeds, runs)]
        assert len(matches) == 1, f"{name}: no seed-spread entry for {variant} seeds {seeds} runs {runs}"
        mean, std = (float(part) for part in re.findall(r"[\d.]+", row["mean ± std"])[:2])
        assert mean == pytest.approx(100 * matches[0]["mean"], abs=0.006), f"{name}: {variant} mean"
        assert std == pytest.approx(100 * matches[0]["std"], abs=0.006), f"{name}: {variant} std"


# Relative links: [text](target) and ![alt](target) in README.md and docs/*.md must name a file or
# folder of the repository (docs/ pages link with ../), and a #fragment into a Markdown page must name
# one of its headings (GitHub's anchors: lowercase, punctuation dropped, spaces to hyphens).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(markdown: str) -> set[str]:
    headings = re.findall(r"^#+\s+(.*?)\s*$", FENCE.sub("", markdown), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def relative_links(text: str) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", text)) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_relative_links_resolve() -> None:
    broken = []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        for target in relative_links(text):
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text(encoding="utf-8")):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_readme_links_every_docs_page() -> None:
    readme = relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in readme}
    missing = [page.relative_to(ROOT).as_posix() for page in doc_pages()[1:] if page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def writeups_section() -> str:
    """README.md's "The write-ups, reproduced" section: its table quotes seed spreads inline."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## The write-ups, reproduced")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_readme_writeups_table_quotes_seed_spreads() -> None:
    # Every "mean ± std" in the table must be a seed spread of reports/studies.json, to the digit.
    spreads = {(f"{100 * row['mean']:.2f}", f"{100 * row['std']:.2f}") for row in studies_json()["seed_spread"]}
    quoted = re.findall(r"(\d+\.\d\d) ± (\d+\.\d\d)", writeups_section())
    assert quoted, "the write-ups table quotes no seed spread"
    missing = [f"{mean} ± {std}" for mean, std in quoted if (mean, std) not in spreads]
    assert not missing, f"README write-ups table quotes spreads not in reports/studies.json: {missing}"
