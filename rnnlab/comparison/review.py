"""Markdown for a pull request: what a change did to every variant, and whether it is more than noise.

Before any verdict, each side's results are checked against its own params and code (trust.py: results
never rerun are *not rerun*, never *no change*) and each variant's metrics against its per-example
predictions. Each row then carries the paired test-sampling interval (paired.py), the interval with seed
noise from the variant's seed band (noise.py), and one verdict whose false alarms over the whole review
are held at 5 % (verdicts.py).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from rnnlab.comparison.charts import draw_charts
from rnnlab.comparison.render import (MARKER, charts_section, environment_line, method_section, not_rerun_section, params_section,
                                      results_table, summary_line, unchanged_section, variants_section)
from rnnlab.comparison.revision import Revision, metrics_path, predictions_path, read_predictions, seed_bands, variant_metrics
from rnnlab.comparison.trust import Freshness
from rnnlab.comparison.verdicts import CURVE_VERDICTS, WITHIN_SEED_NOISE, WITHIN_TEST_SAMPLING, Row, gather, judge, seed_band
from rnnlab.core.errors import UserError


def params_diff(base: Revision, head: Revision) -> dict[str, dict[str, Any]]:
    """`dvc params diff --json`: {params file: {dotted key: {old, new}}}."""
    revisions = [revision.commit for revision in (base, head) if revision.commit is not None]
    result = subprocess.run(["dvc", "params", "diff", "--json", *revisions], cwd=base.repo, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("ERROR: ")
        raise UserError(f"`dvc params diff` failed ({message}); run the review in the RNN Lab repository.")
    return json.loads(result.stdout or "{}")


def not_rerun_reason(variant: str, sides: list[tuple[str, Revision, Freshness]]) -> str | None:
    for side, revision, check in sides:
        reasons = check.reasons([metrics_path(revision, variant), predictions_path(revision, variant)])
        if reasons:
            more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
            return f"{side} ({revision.title}): {reasons[0]}{more}"
    return None


def unchecked_line(sides: list[tuple[str, Revision, Freshness]]) -> list[str]:
    unchecked = [f"{side} ({revision.title})" for side, revision, check in sides if not check.checked]
    if not unchecked:
        return []
    return [f"**Not checked:** {' and '.join(unchecked)} {'has' if len(unchecked) == 1 else 'have'} no dvc.lock, so "
            "whether the results are current for their params and code is unknown.", ""]


def build_report(base: Revision, head: Revision, out: Path, artifact_url: str | None = None) -> tuple[str, list[Row]]:
    """The report's Markdown and its rows; charts are drawn into `out` (a folder that exists)."""
    if base.commit is None:
        raise UserError("the base must be a git revision or a DVC experiment; only the head can be the workspace.")
    base_metrics, head_metrics = variant_metrics(base), variant_metrics(head)
    bands, bands_where = seed_bands(head), head.title
    if bands is None:
        bands, bands_where = seed_bands(base), base.title
    band_of = (bands or {}).get("variants", {})
    gathered = [gather(variant, base_metrics[variant], head_metrics[variant], read_predictions(base, variant, base_metrics[variant]),
                       read_predictions(head, variant, head_metrics[variant]),
                       seed_band(band_of.get(variant), variant, f"reports/seed_bands.json at {bands_where}"), None)
                for variant in sorted(set(base_metrics) & set(head_metrics))]
    sides = [("head", head, Freshness(head)), ("base", base, Freshness(base))]
    rows = sorted(judge([replace(row, not_rerun=not_rerun_reason(row.variant, sides)) for row in gathered]),
                  key=lambda row: (row.study != "imdb", row.variant))
    one_sided = sorted(set(base_metrics) ^ set(head_metrics))  # added or removed: one side's curves
    charts = draw_charts(out, rows, [row.variant for row in rows if row.verdict in CURVE_VERDICTS] + one_sided, base, head)
    moved, unchanged = [row for row in rows if not row.unchanged], [row for row in rows if row.unchanged]
    lines = [
        MARKER, f"## RNN Lab review: {base.title} → {head.title}", "", summary_line(rows), "", environment_line(rows), "",
        *unchecked_line(sides), *not_rerun_section(rows), *variants_section(base_metrics, head_metrics), "",
        *params_section(params_diff(base, head)), "",
        *([*results_table(moved), ""] if moved else []),
        *([*unchanged_section(unchanged), ""] if unchanged else []),
        *charts_section(charts, artifact_url, [row.variant for row in rows if row.verdict in (WITHIN_SEED_NOISE, WITHIN_TEST_SAMPLING)],
                        " ".join(["dvc plots diff", *(revision.commit[:7] for revision in (base, head) if revision.commit)])), "",
        *method_section(bands, bands_where if bands else None),
    ]
    return "\n".join(lines) + "\n", rows
