"""Markdown for a pull request: what a change did to every variant, and whether it is more than noise.

    python -m tools.review [BASE] [HEAD] [--out review]   # defaults: main against the workspace

BASE and HEAD are git revisions (branch, tag, sha, origin/main) or DVC experiment names; HEAD
`workspace` (the default) reads the files on disk. Not a DVC stage: it compares two revisions.

Over three seeds a default variant's test accuracy moves by 1.5 to 6 points, so a single-run delta
of a few points is usually noise, and `dvc metrics diff` has no notion of it. Each variant's row
therefore carries the paired 95 % interval of the accuracy difference over the test examples
(rnnlab/comparison/paired.py), the variant's seed band from committed multi-seed runs (rnnlab/experiments/seed_bands.py),
and one verdict. Charts (validation accuracy per epoch, gradient flow) go beside the Markdown as PNG.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from rnnlab.comparison.charts import charts
from rnnlab.comparison.render import (MARKER, charts_section, environment_line, method_section, params_section,
                                      results_table, timings_section, variants_section)
from rnnlab.comparison.revision import Revision
from rnnlab.comparison.sources import seed_bands, variant_metrics
from rnnlab.comparison.verdicts import Row, compare_variant
from rnnlab.core.errors import UserError


def dvc_params_diff(base: Revision, head: Revision) -> dict[str, dict[str, Any]]:
    """`dvc params diff` between the two revisions: {file: {key: {old, new}}}."""
    if base.commit is None:
        raise UserError("the base must be a git revision or a DVC experiment; only the head can be the workspace.")
    revisions = [base.commit] if head.commit is None else [base.commit, head.commit]
    result = subprocess.run([sys.executable, "-m", "dvc", "params", "diff", *revisions, "--json"],
                            cwd=base.repo, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"`dvc params diff` failed ({message}); run the review in the RNN Lab repository with DVC installed.")
    return json.loads(result.stdout or "{}")


def study_order(row: Row) -> tuple[bool, str]:
    return row.study != "imdb", row.variant


def build_report(base: Revision, head: Revision, out: Path, artifact_url: str | None = None) -> tuple[str, list[Row]]:
    base_metrics, head_metrics = variant_metrics(base), variant_metrics(head)
    bands = seed_bands(head) or seed_bands(base)
    band_of = (bands or {}).get("variants", {})
    shared = sorted(set(base_metrics) & set(head_metrics))
    rows = sorted((compare_variant(base, head, v, base_metrics[v], head_metrics[v], band_of.get(v)) for v in shared), key=study_order)
    drawn = [row.variant for row in rows if not row.unchanged] + sorted(set(base_metrics) ^ set(head_metrics))
    chart_names = charts(out, drawn, base, head)
    counts = {name: sum(row.verdict == name for row in rows) for name in dict.fromkeys(row.verdict for row in rows)}
    lines = [
        MARKER,
        f"## RNN Lab review: {base.title} → {head.title}",
        "",
        "Verdicts: " + (", ".join(f"{count} *{name}*" for name, count in counts.items()) or "no variant in both revisions") + ".",
        "",
        environment_line(rows) if rows else "**Environment:** no variant in both revisions to compare.",
        "",
        *variants_section(base_metrics, head_metrics),
        "",
        *params_section(dvc_params_diff(base, head)),
        "",
        *results_table(rows),
        "",
        *method_section(bands),
        "",
        *charts_section(chart_names, artifact_url),
        "",
        *timings_section(rows, base, head),
    ]
    return "\n".join(lines) + "\n", rows
