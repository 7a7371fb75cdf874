"""Markdown for a pull request: what a change did to every variant, and whether it is more than noise.

    python -m tools.review [BASE] [HEAD] [--out review]   # defaults: main against the workspace

BASE and HEAD are git revisions (branch, tag, sha, origin/main) or DVC experiment names; HEAD
`workspace` (the default) reads the files on disk. Not a DVC stage: it compares two revisions.

A single-run delta of a few points is usually seed noise, and `dvc metrics diff` has no notion of
it. Before any verdict, each side's results are checked against its own params and code (trust.py:
results that were never rerun are *not rerun*, never *no change*) and each variant's metrics
against its per-example predictions. Each row then carries the paired test-sampling interval
(paired.py), the interval with seed noise from the variant's seed band (noise.py), and one verdict
whose false alarms over the whole review are held at 5 % (verdicts.py).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from rnnlab.comparison.charts import ChartDrawer
from rnnlab.comparison.render import (MARKER, charts_section, environment_line, method_section, not_rerun_section,
                                      params_section, plots_diff_command, results_table, summary_line, timings_section, unchanged_section,
                                      variants_section)
from rnnlab.comparison.revision import Revision
from rnnlab.comparison.sources import metrics_path, predictions_path, read_predictions, seed_bands, variant_metrics
from rnnlab.comparison.trust import YAML_LOADER, Freshness, flatten, freshness
from rnnlab.comparison.noise import ALPHA
from rnnlab.comparison.verdicts import CURVE_VERDICTS, WITHIN_SEED_NOISE, WITHIN_TEST_SAMPLING, Row, gather, judge, seed_band
from rnnlab.core.errors import UserError

PARAMS_FILE = "params.yaml"


def params_diff(base: Revision, head: Revision) -> dict[str, dict[str, Any]]:
    """params.yaml's leaves that differ: {file: {dotted key: {old, new}}}, as `dvc params diff` shows them
    (read directly: starting DVC for it costs seconds)."""
    def leaves(revision: Revision) -> dict[str, Any]:
        text = revision.read_text(PARAMS_FILE)
        try:
            return flatten(yaml.load(text, Loader=YAML_LOADER) or {}) if text is not None else {}
        except yaml.YAMLError as error:
            raise UserError(f"{PARAMS_FILE} at {revision.title} is not valid YAML ({error}); fix it there.") from error
    old, new = leaves(base), leaves(head)
    changed = {key: {"old": old.get(key), "new": new.get(key)} for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)}
    return {PARAMS_FILE: changed} if changed else {}


def may_get_curves(row: Row) -> bool:
    """Before the trust checks and Holm's adjustment: can this variant's verdict still be one of CURVE_VERDICTS?
    Holm never lowers a p-value, so a raw p above ALPHA rules it out; untested (p None) and differing is *not judged*."""
    return not row.identical and (row.p_value is None or row.p_value <= ALPHA)


def study_order(row: Row) -> tuple[bool, str]:
    return row.study != "imdb", row.variant


def start_checks(pool: ThreadPoolExecutor, base: Revision, head: Revision) -> tuple[Future[Freshness], Future[Freshness]]:
    """Both sides' trust checks in the background (each reruns a revision's params and code stages in a subprocess)."""
    base_check = pool.submit(freshness, base)
    return base_check, base_check if base.commit is not None and base.commit == head.commit else pool.submit(freshness, head)


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


@dataclass(frozen=True)
class Compared:
    rows: list[Row]                                 # the variants in both revisions, judged
    sides: list[tuple[str, Revision, Freshness]]    # ("head", revision, its trust check), then the base
    chart_names: list[str]


def compare_variants(base: Revision, head: Revision, base_metrics: dict[str, dict[str, Any]],
                     head_metrics: dict[str, dict[str, Any]], bands: dict[str, Any] | None, bands_where: str, out: Path) -> Compared:
    """Every variant of both revisions compared and judged, both sides' trust checks, and the charts drawn into `out`.

    Three things at once: the trust checks run in threads (each a subprocess), the charts in a worker
    process (drawn as soon as a variant is known to differ), and this thread reads the predictions.
    """
    band_of = (bands or {}).get("variants", {})
    one_sided = sorted(set(base_metrics) ^ set(head_metrics))  # added or removed: one side's chart
    with ChartDrawer(out) as drawer, ThreadPoolExecutor(max_workers=2) as pool:
        for variant in one_sided:
            drawer.variant(variant, base, head)
        base_check, head_check = start_checks(pool, base, head)
        gathered = []
        for variant in sorted(set(base_metrics) & set(head_metrics)):
            row = gather(variant, base_metrics[variant], head_metrics[variant],
                         read_predictions(base, variant, base_metrics[variant]), read_predictions(head, variant, head_metrics[variant]),
                         seed_band(band_of.get(variant), variant, f"reports/seed_bands.json at {bands_where}"), None)
            if may_get_curves(row):  # started now, beside the rest; kept only if the verdict asks for it
                drawer.variant(variant, base, head)
            gathered.append(row)
        sides = [("head", head, head_check.result()), ("base", base, base_check.result())]
        rows = sorted(judge([replace(row, not_rerun=not_rerun_reason(row.variant, sides)) for row in gathered]), key=study_order)
        drawer.deltas(rows)
        return Compared(rows, sides, drawer.names([row.variant for row in rows if row.verdict in CURVE_VERDICTS] + one_sided))


def build_report(base: Revision, head: Revision, out: Path, artifact_url: str | None = None) -> tuple[str, list[Row]]:
    """The report's Markdown and its rows; charts are drawn into `out` (a folder that exists)."""
    if base.commit is None:
        raise UserError("the base must be a git revision or a DVC experiment; only the head can be the workspace.")
    base_metrics, head_metrics = variant_metrics(base), variant_metrics(head)
    bands, bands_where = seed_bands(head), head.title
    if bands is None:
        bands, bands_where = seed_bands(base), base.title
    compared = compare_variants(base, head, base_metrics, head_metrics, bands, bands_where, out)
    rows = compared.rows
    moved, unchanged = [row for row in rows if not row.unchanged], [row for row in rows if row.unchanged]
    lines = [
        MARKER,
        f"## RNN Lab review: {base.title} → {head.title}",
        "",
        summary_line(rows),
        "",
        environment_line(rows),
        "",
        *unchecked_line(compared.sides),
        *not_rerun_section(rows),
        *variants_section(base_metrics, head_metrics),
        "",
        *params_section(params_diff(base, head)),
        "",
        *([*results_table(moved), ""] if moved else []),
        *([*unchanged_section(unchanged), ""] if unchanged else []),
        *charts_section(compared.chart_names, artifact_url, [row.variant for row in rows if row.verdict in (WITHIN_SEED_NOISE, WITHIN_TEST_SAMPLING)],
                        plots_diff_command(base, head)),
        "",
        *method_section(bands, bands_where if bands else None),
        "",
        *timings_section(rows, base, head),
    ]
    return "\n".join(lines) + "\n", rows
