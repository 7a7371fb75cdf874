"""The review's Markdown: a one-line summary, the rows that moved, the unchanged ones collapsed, how to read it."""

from __future__ import annotations

from typing import Any

from rnnlab.comparison.metric_intervals import METRICS, MetricChange
from rnnlab.comparison.noise import ALPHA
from rnnlab.comparison.revision import Revision
from rnnlab.comparison.revision import timings
from rnnlab.comparison.verdicts import (CHANGED, CHANGED_WITHOUT_BAND, METRICS_TOLERANCE, NO_CHANGE, NOT_JUDGED, NOT_RERUN,
                                        WITHIN_SEED_NOISE, WITHIN_TEST_SAMPLING, Row)

MARKER = "<!-- rnn-lab-review -->"  # the CI workflows find their earlier comment by this line
VERDICT_ORDER = (CHANGED, CHANGED_WITHOUT_BAND, NOT_RERUN, NOT_JUDGED, WITHIN_SEED_NOISE, WITHIN_TEST_SAMPLING, NO_CHANGE)
METRIC_TITLES = {"f1": "F1", "roc_auc": "ROC-AUC", "loss": "loss"}


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def points(value: float) -> str:
    return f"{100 * value:+.2f}"


def interval(difference: float, low: float, high: float) -> str:
    return f"{points(difference)} [{points(low)}, {points(high)}]"


def accuracy_cell(row: Row) -> str:
    base, head = row.base.get("accuracy"), row.head.get("accuracy")
    return percent(head) if base == head else f"{percent(base)} → {percent(head)}"


def combined_cell(row: Row) -> str:
    bounds = row.combined_interval
    return "– (no seed band)" if bounds is None else interval(row.comparison.difference, *bounds)


def band_cell(row: Row) -> str:
    if row.band is None:
        return "–"
    return f"{100 * row.band.std:.2f} ({row.band.runs} seeds)"


def p_cell(row: Row) -> str:
    if row.p_value is None:
        return "–"
    return f"{row.p_value:.2g} → {row.adjusted_p:.2g}"


def sampling_cell(row: Row) -> str:
    """The two trained models' difference beyond test sampling: interval, and McNemar's p with its two counts."""
    comparison = row.comparison
    if not comparison.paired:
        return f"{interval(comparison.difference, comparison.low, comparison.high)}, p {comparison.p_value:.2g} (unpaired: test sets differ)"
    return (f"{interval(comparison.difference, comparison.low, comparison.high)}, p {comparison.p_value:.2g} "
            f"({comparison.head_only_correct} vs {comparison.base_only_correct})")


def metric_cell(change: MetricChange) -> str:
    if change.base is None or change.head is None:
        return "–" if change.base is None and change.head is None else f"{change.base} → {change.head}"
    if abs(change.head - change.base) <= METRICS_TOLERANCE:
        return f"{change.head:.4f}"
    if change.low is not None:
        spread = f" [{change.low:+.4f}, {change.high:+.4f}]"
    else:
        spread = f"; interval n/a: {change.unavailable}" if change.unavailable else ""
    return f"{change.base:.4f} → {change.head:.4f} ({change.difference:+.4f}{spread})"


def verdict_counts(rows: list[Row]) -> list[tuple[str, int]]:
    return [(name, count) for name in VERDICT_ORDER if (count := sum(row.verdict == name for row in rows))]


def summary_line(rows: list[Row]) -> str:
    """One line on top: how many variants moved beyond seed noise, which, and by how much."""
    if not rows:
        return "**Summary:** no variant is in both revisions."
    moved = [row for row in rows if row.verdict == CHANGED]
    named = ", ".join(f"`{row.variant}` {points(row.comparison.difference)} pts" for row in moved)
    line = f"**Summary: {len(moved)} of {len(rows)} beyond seed noise{': ' + named if moved else ''}.**"
    others = [(name, count) for name, count in verdict_counts(rows) if name != CHANGED]
    described = []
    for name, count in others:
        variants = [f"`{row.variant}`" for row in rows if row.verdict == name]
        listed = f" ({', '.join(variants)})" if name in (CHANGED_WITHOUT_BAND, NOT_RERUN, NOT_JUDGED) else ""
        described.append(f"{count} *{name}*{listed}")
    return line + (" Also " + ", ".join(described) + "." if described else "")


def stamp_text(stamp: Any) -> str:
    if not isinstance(stamp, dict) or not stamp:
        return "not recorded"
    return ", ".join(f"{key} {value}" for key, value in sorted(stamp.items()))


def environment_line(rows: list[Row]) -> str:
    """Whether base and head ran in the same environment (equal stamps, every key), and if not, which keys differ."""
    if not rows:
        return "**Environment:** no variant in both revisions to compare."
    differing = [row for row in rows if row.environment_difference is not None]
    if not differing:
        stamps = sorted({stamp_text(row.head.get("environment")) for row in rows})
        return f"**Environment:** the same on both sides for every variant ({'; '.join(stamps)})."
    groups: dict[str, list[str]] = {}
    for row in differing:
        groups.setdefault(row.environment_difference, []).append(f"`{row.variant}`")
    described = "; ".join(f"{', '.join(variants)} ({keys})" for keys, variants in groups.items())
    return (f"**⚠ Environment differs** for {len(differing)} of {len(rows)} variants: {described}. A different "
            "environment alone changes results like a reseed does, so these are judged by seed noise only "
            f"(without a seed band: *{NOT_JUDGED}*).")


def not_rerun_section(rows: list[Row]) -> list[str]:
    stale = [row for row in rows if row.verdict == NOT_RERUN]
    if not stale:
        return []
    lines = ["**Not rerun** (dvc.lock: these results are not what the revision's own params and code give; "
             "run `dvc repro` there and commit `dvc.lock` with the results):", ""]
    lines += [f"- `{row.variant}`: {row.not_rerun}" for row in stale]
    return lines + [""]


def param_value(value: Any) -> str:
    return "(absent)" if value is None else f"`{value}`"


def params_section(diff: dict[str, dict[str, Any]]) -> list[str]:
    changes = [(file, key, values) for file, keys in diff.items() for key, values in sorted(keys.items())]
    if not changes:
        return ["**Params changed:** none."]
    lines = ["**Params changed:**", "", "| file | param | base | head |", "|---|---|---|---|"]
    lines += [f"| {file} | `{key}` | {param_value(values.get('old'))} | {param_value(values.get('new'))} |" for file, key, values in changes]
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
    """The variants that are not *no change*, one row each."""
    lines = ["| variant | test accuracy | Δ accuracy (pts), 95 %: test sampling + seed | seed std (pts) | p → Holm "
             "| Δ (pts), 95 %: test sampling only; McNemar p (only head right vs only base right) "
             + "".join(f"| {METRIC_TITLES[name]} (Δ, 95 %) " for name in METRICS) + "| verdict |",
             "|---" * (7 + len(METRICS)) + "|"]
    for row in rows:
        metrics = "".join(f"| {metric_cell(row.metric_changes[name])} " for name in METRICS)
        lines.append(f"| `{row.variant}` | {accuracy_cell(row)} | {combined_cell(row)} | {band_cell(row)} | {p_cell(row)} "
                     f"| {sampling_cell(row)} {metrics}| **{row.verdict}** |")
    return lines


def unchanged_section(rows: list[Row]) -> list[str]:
    """The *no change* rows, collapsed: a reviewer reads what moved first."""
    if not rows:
        return []
    lines = [f"<details><summary>{len(rows)} variant{'s' if len(rows) > 1 else ''} with no change "
             f"({', '.join(row.variant for row in rows)})</summary>", "",
             "| variant | test accuracy | " + " | ".join(METRIC_TITLES[name] for name in METRICS) + " | verdict |",
             "|---" * (3 + len(METRICS)) + "|"]
    for row in rows:
        metrics = " | ".join(metric_cell(row.metric_changes[name]) for name in METRICS)
        lines.append(f"| `{row.variant}` | {accuracy_cell(row)} | {metrics} | **{row.verdict}** |")
    return lines + ["", "</details>"]


def method_section(bands: dict[str, Any] | None, bands_where: str | None) -> list[str]:
    band_source = (f"`reports/seed_bands.json` at {bands_where} (made from commit {str(bands.get('commit'))[:7]} by "
                   "`python -m tools.seed_bands`)" if bands else "none committed (`python -m tools.seed_bands --run` makes them)")
    return [
        "<details><summary>How to read it</summary>", "",
        f"- *{NO_CHANGE}*: the same predicted class for every test example and the same metrics (to {METRICS_TOLERANCE:g}).",
        f"- *{NOT_RERUN}*: dvc.lock shows that one side's results are not what its own params and code give.",
        "- **Test sampling + seed**: Δ ± t(k−1, 0.975) · s · √2, with s the variant's seed std over k seeds: "
        "a reseed alone moves Δ that much 95 % of the time. Test sampling is inside s (every seed is scored on the "
        "same test set). p: the t-test of Δ against reseeding; Holm: adjusted over the variants this review judges, "
        f"so a review of pure reseeds says *{CHANGED}* for any variant at most {100 * ALPHA:.0f} % of the time. "
        f"*{CHANGED}* when Holm ≤ {ALPHA:g}, else *{WITHIN_SEED_NOISE}*.",
        "- **Test sampling only**: whether these two trained models differ beyond the test set's sampling: "
        "Newcombe's paired score interval from the examples only one model gets right, and McNemar's exact test. "
        f"Used for the verdict only without a seed band (*{CHANGED_WITHOUT_BAND}* / *{WITHIN_TEST_SAMPLING}*, Holm as above).",
        "- F1, ROC-AUC, loss: head − base with a paired 95 % test-sampling interval (delta method on the per-example "
        "predictions; DeLong for ROC-AUC); *n/a* where a side has no per-example probabilities.",
        f"- Seed bands: {band_source}.",
        "", "</details>",
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
        base_machine, machine = base_timings.get("machine", {}), head_timings.get("machine", {})
        same_machine = (base_machine.get("cpu_model") == machine.get("cpu_model") and base_machine.get("cpu_cores") == machine.get("cpu_cores")
                        and row.environment_difference is None)
        if same_machine:
            cells = [timing_change(base_timings.get(key), head_timings.get(key))
                     for key in ("train_seconds_per_epoch", "train_tokens_per_second", "eval_tokens_per_second")]
            table.append(f"| `{row.variant}` | {machine.get('cpu_model')}, {machine.get('cpu_cores')} cores | {' | '.join(cells)} |")
        else:
            table.append(f"| `{row.variant}` | not compared: base {base_machine.get('cpu_model')}, "
                         f"head {machine.get('cpu_model')} (or another result environment) | – | – | – |")
    lines += table if len(table) > 2 else ["No variant was timed anew on both sides."]
    return lines + ["", "</details>"]


def timing_change(base: float | None, head: float | None) -> str:
    if base is None or head is None:
        return "–"
    relative = f" ({100 * (head - base) / base:+.0f} %)" if base else ""
    return f"{base:,.1f} → {head:,.1f}{relative}"


def plots_diff_command(base: Revision, head: Revision) -> str:
    """The `dvc plots diff` that draws every variant's curves (dvc.yaml's plots) for these two revisions."""
    return " ".join(["dvc plots diff", base.commit[:7], *([head.commit[:7]] if head.commit is not None else [])])


def charts_section(names: list[str], artifact_url: str | None, without_curves: list[str], plots_command: str) -> list[str]:
    """`without_curves`: the variants whose results differ but whose verdict is within noise (no curves drawn)."""
    if not names:
        return ["**Charts:** none (no variant changed)."]
    what = ("every variant's Δ accuracy with its intervals; per variant beyond noise, not judged, added or removed, "
            "validation accuracy per epoch and gradient flow, base vs head")
    if artifact_url:  # a PR comment cannot show files the workflow made without an image host
        lines = [f"**Charts** ({what}): {', '.join(f'`{name}`' for name in names)} in the [workflow artifact]({artifact_url})."]
    else:
        lines = [f"**Charts** ({what}):", "", *(f"![{name}]({name})" for name in names)]
    if without_curves:
        lines += ["", f"Training curves of the changes within noise ({', '.join(f'`{variant}`' for variant in without_curves)}) "
                      f"are not drawn: `{plots_command}` draws every variant's."]
    return lines
