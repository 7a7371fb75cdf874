"""The review's Markdown: one table row per variant, the params that changed, how to read it."""

from __future__ import annotations

from typing import Any

from rnnlab.comparison.paired import CONFIDENCE, RESAMPLES, SEED, Comparison
from rnnlab.comparison.revision import Revision
from rnnlab.comparison.sources import timings
from rnnlab.comparison.verdicts import (CHANGED, NO_CHANGE, SEED_FACTOR, WITHIN_SEED_NOISE, WITHIN_TEST_SAMPLING, Row)
from rnnlab.runtime.environment import describe_environment

MARKER = "<!-- rnn-lab-review -->"  # the CI workflow finds its earlier comment by this line
ENVIRONMENT_KEYS_THAT_DECIDE_BITS = ("math", "cpu_capability", "torch", "libc", "device", "gpu", "threads", "reproducible", "cross_vendor")


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
    band_source = (f"`reports/seed_bands.json` (made from commit {str(bands.get('commit'))[:7]} by `python -m tools.seed_bands`)"
                   if bands else "none committed (`python -m tools.seed_bands --run` makes them)")
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


def charts_section(names: list[str], artifact_url: str | None) -> list[str]:
    if not names:
        return ["**Charts:** none (no variant changed)."]
    if artifact_url:  # a PR comment cannot show files the workflow made without an image host
        return [f"**Charts** (validation accuracy per epoch and gradient flow, base vs head): "
                f"{', '.join(f'`{name}`' for name in names)} in the [workflow artifact]({artifact_url})."]
    return ["**Charts** (validation accuracy per epoch and gradient flow, base vs head):", "",
            *(f"![{name}]({name})" for name in names)]
