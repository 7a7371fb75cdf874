"""Markdown for a pull request: what a change did to every variant, and whether it is more than noise.

    python -m stages.review [BASE] [HEAD] [--out review]   # defaults: main against the workspace

BASE and HEAD are git revisions (branch, tag, sha, origin/main) or DVC experiment names; HEAD
`workspace` (the default) reads the files on disk. Not a DVC stage: it compares two revisions.

Over three seeds a default variant's test accuracy moves by 1.5 to 6 points, so a single-run delta
of a few points is usually noise, and `dvc metrics diff` has no notion of it. Each variant's row
therefore carries the paired 95 % interval of the accuracy difference over the test examples
(stages/paired.py), the variant's seed band from committed multi-seed runs (stages/seed_bands.py),
and one verdict. Charts (validation accuracy per epoch, gradient flow) go beside the Markdown as PNG.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from stages.common import StageError, run_cli, write_text
from stages.history import metric_file, parse_metric_tsv
from stages.paired import CONFIDENCE, RESAMPLES, SEED, Comparison, compare
from stages.report import describe_environment
from stages.revision import Revision, pipeline_paths, resolve

MARKER = "<!-- rnn-lab-review -->"  # the CI workflow finds its earlier comment by this line
SEED_FACTOR = 2.0  # |delta| within this many seed standard deviations counts as seed noise
NO_CHANGE = "no change"
WITHIN_TEST_SAMPLING = "within test-sampling noise"
WITHIN_SEED_NOISE = "within seed noise"
CHANGED = "changed beyond seed noise"
CHANGED_WITHOUT_BAND = "changed beyond test-sampling noise (no seed band)"
GRADIENT_PATH_KEYS = ("gradients", "order_gradients")
ENVIRONMENT_KEYS_THAT_DECIDE_BITS = ("cpu_capability", "torch", "device", "gpu", "threads", "reproducible", "cross_vendor")


@dataclass(frozen=True)
class Predictions:
    """One evaluate's per-example CSV: actual and predicted class per test example, in test order."""

    text: str
    actual: tuple[str, ...]
    predicted: tuple[str, ...]

    @property
    def correct(self) -> np.ndarray:
        return np.array([a == p for a, p in zip(self.actual, self.predicted)], dtype=bool)


@dataclass(frozen=True)
class Row:
    """One variant present in both revisions."""

    variant: str
    study: str
    base: dict[str, Any]
    head: dict[str, Any]
    unchanged: bool
    comparison: Comparison
    band: dict[str, Any] | None
    verdict: str


# -- reading a revision ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def paths_of(revision: Revision) -> dict[str, str]:
    return pipeline_paths(revision)


def path_var(revision: Revision, key: str) -> str:
    paths = paths_of(revision)
    if key not in paths:
        raise StageError(f"dvc.yaml at {revision.title} has no `{key}` in its vars; compare revisions made after issue 14 "
                         "(per-example predictions), or add the var and rerun `dvc repro` there.")
    return paths[key]


def variant_metrics(revision: Revision) -> dict[str, dict[str, Any]]:
    """variant -> its metrics JSON; an empty or missing metrics folder is an error that says what to run."""
    directory = path_var(revision, "metrics")
    metrics = {}
    for path in revision.list_files(directory, ".json"):
        data = revision.read_json(path)
        if isinstance(data, dict) and "accuracy" in data:  # a variant's metrics, not some other JSON
            metrics[PurePosixPath(path).stem] = data
    if not metrics:
        raise StageError(f"{revision.title} has no metrics ({directory}/*.json): run `dvc repro` there and commit "
                         f"{directory}/, or compare against a revision that has them.")
    return metrics


def read_predictions(revision: Revision, variant: str) -> Predictions:
    path = f"{path_var(revision, 'predictions')}/{variant}.csv"
    text = revision.read_text(path)
    if text is None:
        raise StageError(f"variant {variant} has metrics but no predictions at {revision.title}:{path}; rerun its evaluate "
                         f"stage there (`dvc repro`) and commit {PurePosixPath(path).parent}/, then rerun the review.")
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "actual" not in rows[0] or "predicted" not in rows[0]:
        raise StageError(f"{path} at {revision.title} has no actual/predicted rows; rerun its evaluate stage (`dvc repro`).")
    return Predictions(text, tuple(row["actual"] for row in rows), tuple(row["predicted"] for row in rows))


def epoch_history(revision: Revision, variant: str) -> list[dict[str, Any]]:
    """Per-epoch rows (epoch, valid_accuracy, ...) of a variant's training; [] when there are none.

    The one place that knows where the history lives: the variant's DVCLive directory (dvc.yaml var
    `live`); a revision from before DVCLive kept a JSON list at `history`/<variant>.json.
    """
    paths = paths_of(revision)
    if "live" in paths:
        directory = f"{paths['live']}/{variant}"
        text = revision.read_text(metric_file(directory, "valid_accuracy").as_posix())
        if text is None:
            return []
        source = f"{directory} at {revision.title}"
        return [{"epoch": epoch, "valid_accuracy": value} for epoch, value in parse_metric_tsv(text, "valid_accuracy", source)]
    rows = revision.read_json(f"{path_var(revision, 'history')}/{variant}.json")
    return rows if isinstance(rows, list) else []


def gradient_profile(revision: Revision, variant: str) -> list[dict[str, Any]]:
    """Rows of steps_back, log10_grad_norm_init, log10_grad_norm_trained; [] when there are none."""
    paths = paths_of(revision)
    for key in GRADIENT_PATH_KEYS:
        if key in paths:
            rows = revision.read_json(f"{paths[key]}/{variant}.json")
            if isinstance(rows, list):
                return rows
    return []


def timings(revision: Revision, variant: str) -> dict[str, Any]:
    directory = paths_of(revision).get("timings")
    data = revision.read_json(f"{directory}/{variant}.json") if directory else None
    return data if isinstance(data, dict) else {}


def seed_bands(revision: Revision) -> dict[str, Any] | None:
    """The committed seed bands (stages/seed_bands.py) at this revision, or None."""
    path = paths_of(revision).get("seed_bands")
    data = revision.read_json(path) if path else None
    return data if isinstance(data, dict) and isinstance(data.get("variants"), dict) else None


# -- deciding -------------------------------------------------------------------------------------

def verdict(unchanged: bool, comparison: Comparison, band_std: float | None, factor: float = SEED_FACTOR) -> str:
    """No change, else test sampling first (the interval), then the seed band when there is one."""
    if unchanged:
        return NO_CHANGE
    if comparison.contains_zero:
        return WITHIN_TEST_SAMPLING
    if band_std is None:
        return CHANGED_WITHOUT_BAND
    return WITHIN_SEED_NOISE if abs(comparison.difference) <= factor * band_std else CHANGED


def without_environment(metrics: dict[str, Any]) -> dict[str, Any]:
    # The environment is reported on its own line: equal numbers from another torch are still equal.
    return {key: value for key, value in metrics.items() if key != "environment"}


def compare_variant(base: Revision, head: Revision, variant: str, base_metrics: dict[str, Any],
                    head_metrics: dict[str, Any], band: dict[str, Any] | None) -> Row:
    base_predictions, head_predictions = read_predictions(base, variant), read_predictions(head, variant)
    unchanged = base_predictions.text == head_predictions.text and without_environment(base_metrics) == without_environment(head_metrics)
    # Same test examples in the same order (same labels): paired; otherwise the data changed under it.
    paired = base_predictions.actual == head_predictions.actual
    comparison = compare(base_predictions.correct, head_predictions.correct, paired=paired)
    return Row(variant, head_metrics.get("study", "imdb"), base_metrics, head_metrics, unchanged, comparison, band,
               verdict(unchanged, comparison, band["std"] if band else None))


# -- writing --------------------------------------------------------------------------------------

def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def points(value: float) -> str:
    return f"{100 * value:+.2f}"


def change(base: Any, head: Any, digits: int = 4) -> str:
    if not isinstance(base, (int, float)) or not isinstance(head, (int, float)):
        return f"{base} → {head}"
    if base == head:
        return f"{head:.{digits}f}"
    return f"{base:.{digits}f} → {head:.{digits}f} ({head - base:+.{digits}f})"


def accuracy_cell(row: Row) -> str:
    base, head = row.base.get("accuracy"), row.head.get("accuracy")
    if base == head:
        return percent(head)
    return f"{percent(base)} → {percent(head)} ({points(head - base)})"


def interval_cell(comparison: Comparison) -> str:
    kind = "" if comparison.paired else " unpaired: test sets differ"
    return f"{points(comparison.difference)} [{points(comparison.low)}, {points(comparison.high)}]{kind}"


def mcnemar_cell(comparison: Comparison) -> str:
    if comparison.mcnemar_p is None:
        return "–"
    return f"{comparison.mcnemar_p:.3g} ({comparison.head_only_correct} vs {comparison.base_only_correct})"


def band_cell(band: dict[str, Any] | None) -> str:
    if not band:
        return "no seed band"
    return f"± {100 * band['std']:.2f} (seeds {', '.join(map(str, band['seeds']))})"


def environment_text(metrics: dict[str, Any]) -> str:
    environment = metrics.get("environment")
    if not environment:
        return "not recorded"
    return describe_environment({key: environment[key] for key in ENVIRONMENT_KEYS_THAT_DECIDE_BITS if key in environment}) or "unknown"


def environment_line(rows: list[Row]) -> str:
    """One line: each environment the results came from, and whether base and head share it."""
    groups: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        groups.setdefault((environment_text(row.base), environment_text(row.head)), []).append(f"`{row.variant}`")
    # The environment most variants share is named alone; the others (the order study's 1 thread) with their variants.
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    if all(base == head for base, head in groups):
        others = "".join(f"; {', '.join(variants)}: {base}" for (base, _), variants in ordered[1:])
        return f"**Environment:** same on both sides: {ordered[0][0][0]}{others}."
    described = "; ".join(f"{', '.join(variants)}: {base} → {head}" if base != head else f"{', '.join(variants)}: {base} (both)"
                          for (base, head), variants in ordered)
    return f"**Environment differs** (CPU ISA, torch or device; results may differ for that alone): {described}."


def params_diff(base: Revision, head: Revision) -> dict[str, dict[str, Any]]:
    """`dvc params diff` between the two revisions: {file: {key: {old, new}}}."""
    if base.commit is None:
        raise StageError("the base must be a git revision or a DVC experiment; only the head can be the workspace.")
    revisions = [base.commit] if head.commit is None else [base.commit, head.commit]
    result = subprocess.run([sys.executable, "-m", "dvc", "params", "diff", *revisions, "--json"],
                            cwd=base.repo, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise StageError(f"`dvc params diff` failed ({message}); run the review in the RNN Lab repository with DVC installed.")
    return json.loads(result.stdout or "{}")


def params_section(diff: dict[str, dict[str, Any]]) -> list[str]:
    changes = [(file, key, values) for file, keys in diff.items() for key, values in sorted(keys.items())]
    if not changes:
        return ["**Params changed** (`dvc params diff`): none."]
    lines = ["**Params changed** (`dvc params diff`):", "", "| file | param | base | head |", "|---|---|---|---|"]
    lines += [f"| {file} | `{key}` | `{values.get('old')}` | `{values.get('new')}` |" for file, key, values in changes]
    return lines


def variants_section(base_metrics: dict[str, dict[str, Any]], head_metrics: dict[str, dict[str, Any]]) -> list[str]:
    added = sorted(set(head_metrics) - set(base_metrics))
    removed = sorted(set(base_metrics) - set(head_metrics))
    lines = []
    if added:
        lines.append("**Variants added:** " + ", ".join(f"`{v}` ({percent(head_metrics[v].get('accuracy'))})" for v in added) + ".")
    if removed:
        lines.append("**Variants removed:** " + ", ".join(f"`{v}` (was {percent(base_metrics[v].get('accuracy'))})" for v in removed) + ".")
    return lines or ["**Variants added or removed:** none."]


def results_table(rows: list[Row]) -> list[str]:
    lines = ["| variant | test accuracy | Δ accuracy, 95 % interval (pts) | McNemar p (only head right vs only base right) | seed band (std, pts) "
             "| F1 | ROC-AUC | loss | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| `{row.variant}` | {accuracy_cell(row)} | {interval_cell(row.comparison)} | {mcnemar_cell(row.comparison)} | "
            f"{band_cell(row.band)} | {change(row.base.get('f1'), row.head.get('f1'))} | "
            f"{change(row.base.get('roc_auc'), row.head.get('roc_auc'))} | {change(row.base.get('loss'), row.head.get('loss'))} | "
            f"**{row.verdict}** |"
        )
    return lines


def method_section(bands: dict[str, Any] | None) -> list[str]:
    band_source = (f"`reports/seed_bands.json` (made from commit {str(bands.get('commit'))[:7]} by `python -m stages.seed_bands`)"
                   if bands else "none committed (`python -m stages.seed_bands --run` makes them)")
    return [
        f"**How to read it.** Interval: paired bootstrap over the test examples ({RESAMPLES:,} resamples, seed {SEED}, "
        f"percentile {100 * CONFIDENCE:.0f} % interval) of head-minus-base accuracy, in points; McNemar: exact two-sided test "
        f"(binomial on the examples only one side gets right). Verdict: *{NO_CHANGE}* when predictions and metrics are "
        f"identical; else *{WITHIN_TEST_SAMPLING}* when the interval contains 0; else *{WITHIN_SEED_NOISE}* when |Δ| ≤ "
        f"{SEED_FACTOR:g} × the variant's seed std; else *{CHANGED}*. Seed bands: {band_source}.",
    ]


def timings_section(rows: list[Row], base: Revision, head: Revision) -> list[str]:
    lines = ["<details><summary>Timings (machine-dependent)</summary>", "",
             "Seconds and tokens/s depend on the machine and its load; they are compared only when both sides ran on "
             "the same CPU model, core count and result environment.", ""]
    table = ["| variant | machine | s/epoch | train tokens/s | eval tokens/s |", "|---|---|---|---|---|"]
    for row in rows:
        base_timings, head_timings = timings(base, row.variant), timings(head, row.variant)
        if not base_timings or not head_timings or base_timings == head_timings:
            continue  # a variant that was not rerun keeps its timings file: nothing to compare
        same_machine = base_timings.get("machine", {}).get("cpu_model") == head_timings.get("machine", {}).get("cpu_model") \
            and base_timings.get("machine", {}).get("cpu_cores") == head_timings.get("machine", {}).get("cpu_cores") \
            and row.base.get("environment") == row.head.get("environment")
        machine = head_timings.get("machine", {})
        if same_machine:
            cells = [timing_change(base_timings.get(key), head_timings.get(key))
                     for key in ("train_seconds_per_epoch", "train_tokens_per_second", "eval_tokens_per_second")]
            table.append(f"| `{row.variant}` | {machine.get('cpu_model')}, {machine.get('cpu_cores')} cores | {' | '.join(cells)} |")
        else:
            table.append(f"| `{row.variant}` | not compared: base {base_timings.get('machine', {}).get('cpu_model')}, "
                         f"head {machine.get('cpu_model')} (or another result environment) | – | – | – |")
    lines += table if len(table) > 2 else ["No variant was timed anew on both sides."]
    return lines + ["", "</details>"]


def timing_change(base: float | None, head: float | None) -> str:
    if base is None or head is None:
        return "–"
    relative = f" ({100 * (head - base) / base:+.0f} %)" if base else ""
    return f"{base:,.1f} → {head:,.1f}{relative}"


# -- charts ---------------------------------------------------------------------------------------

BASE_COLOR, HEAD_COLOR = 9, 1  # indexes into stages.figures.PALETTE: gray, blue


def draw_variant_chart(path: Path, variant: str, sides: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]) -> None:
    """Two panels: validation accuracy per epoch, and log10 ||dL/dx_t|| by steps back (trained solid, init dashed).

    `sides`: (label, history rows, gradient rows) for base then head; base gray, head blue.
    """
    from stages.figures import Panel, Series, panels_figure

    accuracy, gradient = [], []
    for (label, history, profile), color in zip(sides, (BASE_COLOR, HEAD_COLOR)):
        if history:
            accuracy.append(Series(label, [r["epoch"] for r in history], [100 * r["valid_accuracy"] for r in history],
                                   color, style={"marker": "o"}))
        if profile:
            steps = [r["steps_back"] for r in profile]
            gradient += [Series(f"{label} trained", steps, [r["log10_grad_norm_trained"] for r in profile], color),
                         Series(f"{label} init", steps, [r["log10_grad_norm_init"] for r in profile], color, dashed=True)]
    panels_figure([
        Panel(accuracy, f"{variant}: validation accuracy", "epoch", "accuracy (%)", integer_x=True, empty_text="no training history"),
        Panel(gradient, f"{variant}: gradient flow", "steps back from the last token", "log10 ||dL/dx_t||",
              empty_text="no gradient profile"),
    ], path)


def charts(out: Path, variants: list[str], base: Revision, head: Revision) -> list[str]:
    """Draw one PNG per variant (base and head, whichever has it); return the file names."""
    names = []
    for variant in variants:
        sides = [(f"{side} {revision.label}", epoch_history(revision, variant), gradient_profile(revision, variant))
                 for side, revision in (("base", base), ("head", head))]
        if any(history or profile for _, history, profile in sides):
            draw_variant_chart(out / f"{variant}.png", variant, sides)
            names.append(f"{variant}.png")
    return names


def charts_section(names: list[str], artifact_url: str | None) -> list[str]:
    if not names:
        return ["**Charts:** none (no variant changed)."]
    if artifact_url:  # a PR comment cannot show files the workflow made without an image host
        return [f"**Charts** (validation accuracy per epoch and gradient flow, base vs head): "
                f"{', '.join(f'`{name}`' for name in names)} in the [workflow artifact]({artifact_url})."]
    return ["**Charts** (validation accuracy per epoch and gradient flow, base vs head):", "",
            *(f"![{name}]({name})" for name in names)]


# -- the report -----------------------------------------------------------------------------------

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
        *params_section(params_diff(base, head)),
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", nargs="?", default="main", help="git revision or DVC experiment (default: main)")
    parser.add_argument("head", nargs="?", default=None, help="git revision or DVC experiment (default: the workspace)")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("review"), help="folder for review.md and its PNG charts")
    parser.add_argument("--artifact-url", help="where CI uploaded the charts: linked instead of embedding the PNGs")
    args = parser.parse_args(argv)
    base, head = resolve(args.repo, args.base), resolve(args.repo, args.head)
    markdown, rows = build_report(base, head, args.out, args.artifact_url)
    write_text(args.out / "review.md", markdown)
    print(f"review: {len(rows)} variants compared -> {args.out / 'review.md'}")


if __name__ == "__main__":
    run_cli(main)
