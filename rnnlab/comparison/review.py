"""Markdown for a pull request: what a change did to every variant, and whether it is more than noise.

Each side's results are first checked against its own params and code (trust.py) and each variant's
metrics against its predictions; each row then carries the paired test-sampling interval (paired.py),
the interval with seed noise (noise.py), and one verdict (verdicts.py).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from rnnlab.comparison import render, verdicts
from rnnlab.comparison.revision import Revision, metrics_path, predictions_path, read_predictions, seed_bands, variant_metrics
from rnnlab.comparison.trust import Freshness
from rnnlab.comparison.verdicts import Row, gather, judge, seed_band
from rnnlab.core.errors import UserError

Side = tuple[str, Revision, Freshness]


def params_diff(base: Revision, head: Revision) -> dict[str, dict[str, Any]]:
    """`dvc params diff --json`: {params file: {dotted key: {old, new}}}."""
    revisions = [revision.commit for revision in (base, head) if revision.commit is not None]
    diff = subprocess.run(["dvc", "params", "diff", "--json", *revisions], cwd=base.repo, capture_output=True, text=True)
    if diff.returncode != 0:
        message = (diff.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("ERROR: ")
        raise UserError(f"`dvc params diff` failed ({message}); run the review in the RNN Lab repository.")
    return json.loads(diff.stdout or "{}")


def not_rerun_reason(variant: str, sides: list[Side]) -> str | None:
    for side, revision, check in sides:
        reasons = check.reasons([metrics_path(revision, variant), predictions_path(revision, variant)])
        if reasons:
            return f"{side} ({revision.title}): {reasons[0]}" + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
    return None


def unchecked_line(sides: list[Side]) -> list[str]:
    unchecked = [f"{side} ({revision.title})" for side, revision, check in sides if not check.checked]
    has = "has" if len(unchecked) == 1 else "have"
    what = "no dvc.lock, so whether the results are current for their params and code is unknown."
    return [f"**Not checked:** {' and '.join(unchecked)} {has} {what}", ""] if unchecked else []


def build_report(base: Revision, head: Revision, out: Path, artifact_url: str | None = None) -> tuple[str, list[Row]]:
    """The report's Markdown and its rows; charts are drawn into `out` (a folder that exists)."""
    if base.commit is None:
        raise UserError("the base must be a git revision or a DVC experiment; only the head can be the workspace.")
    base_metrics, head_metrics = variant_metrics(base), variant_metrics(head)
    bands, bands_where = (seed_bands(head), head.title) if seed_bands(head) else (seed_bands(base), base.title)
    gathered = []
    for variant in sorted(set(base_metrics) & set(head_metrics)):
        band = seed_band((bands or {}).get("variants", {}).get(variant), variant, f"reports/seed_bands.json at {bands_where}")
        old, new = (
            read_predictions(side, variant, metrics[variant]) for side, metrics in ((base, base_metrics), (head, head_metrics))
        )
        gathered.append(gather(variant, base_metrics[variant], head_metrics[variant], old, new, band, None))
    sides = [("head", head, Freshness(head)), ("base", base, Freshness(base))]
    judged = judge([replace(row, not_rerun=not_rerun_reason(row.variant, sides)) for row in gathered])
    rows = sorted(judged, key=lambda row: (row.study != "imdb", row.variant))
    one_sided = sorted(set(base_metrics) ^ set(head_metrics))  # added or removed: one side's curves
    curves = [row.variant for row in rows if row.verdict in verdicts.CURVE_VERDICTS] + one_sided
    charts = render.draw_charts(out, rows, curves, base, head)
    within_noise = [row.variant for row in rows if row.verdict in (verdicts.WITHIN_SEED_NOISE, verdicts.WITHIN_TEST_SAMPLING)]
    plots_diff = " ".join(["dvc plots diff", *(revision.commit[:7] for revision in (base, head) if revision.commit)])
    moved = [row for row in rows if row.verdict != verdicts.NO_CHANGE]
    unchanged = [row for row in rows if row.verdict == verdicts.NO_CHANGE]
    lines = [
        *(render.MARKER, f"## RNN Lab review: {base.title} → {head.title}", ""),
        *(render.summary_line(rows), "", render.environment_line(rows), ""),
        *unchecked_line(sides),
        *render.not_rerun_section(rows),
        *render.variants_section(base_metrics, head_metrics),
        *("", *render.params_section(params_diff(base, head)), ""),
        *([*render.results_table(moved), ""] if moved else []),
        *([*render.unchanged_section(unchanged), ""] if unchanged else []),
        *(*render.charts_section(charts, artifact_url, within_noise, plots_diff), ""),
        *render.timings_section(rows, base, head),
        *render.method_section(bands, bands_where if bands else None),
    ]
    return "\n".join(lines) + "\n", rows
