"""The review's Markdown (a one-line summary, the rows that moved, the unchanged ones collapsed, how to read it)
and its charts: every variant's change in accuracy with its intervals, and training curves and gradient flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlab.comparison import verdicts
from rnnlab.comparison.noise import ALPHA
from rnnlab.comparison.paired import METRICS, MetricChange
from rnnlab.comparison.revision import Revision, epoch_history, variant_json
from rnnlab.comparison.verdicts import Row

MARKER = "<!-- rnn-lab-review -->"  # the CI workflows find their earlier comment by this line
VERDICT_ORDER = (
    verdicts.CHANGED,
    verdicts.CHANGED_WITHOUT_BAND,
    verdicts.NOT_RERUN,
    verdicts.NOT_JUDGED,
    verdicts.WITHIN_SEED_NOISE,
    verdicts.WITHIN_TEST_SAMPLING,
    verdicts.NO_CHANGE,
)
LISTED = (verdicts.CHANGED_WITHOUT_BAND, verdicts.NOT_RERUN, verdicts.NOT_JUDGED)  # the summary names these variants
METRIC_TITLES = {"f1": "F1", "roc_auc": "ROC-AUC", "loss": "loss"}
BASE_COLOR, HEAD_COLOR = 9, 1  # indexes into rnnlab.reporting.figures.PALETTE: gray, blue
DELTAS = "deltas.png"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def interval(difference: float, low: float, high: float) -> str:
    return f"{100 * difference:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def quoted(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def accuracy_cell(row: Row) -> str:
    base, head = row.base.get("accuracy"), row.head.get("accuracy")
    return percent(head) if base == head else f"{percent(base)} → {percent(head)}"


def metric_cell(change: MetricChange) -> str:
    if change.base is None or change.head is None:
        return "–" if change.base is None and change.head is None else f"{change.base} → {change.head}"
    if abs(change.head - change.base) <= verdicts.METRICS_TOLERANCE:
        return f"{change.head:.4f}"
    spread = f" [{change.low:+.4f}, {change.high:+.4f}]" if change.low is not None and change.high is not None else ""
    spread = f"; interval n/a: {change.unavailable}" if change.unavailable else spread
    return f"{change.base:.4f} → {change.head:.4f} ({change.head - change.base:+.4f}{spread})"


def summary_line(rows: list[Row]) -> str:
    """One line on top: how many variants moved beyond seed noise, which, and by how much."""
    if not rows:
        return "**Summary:** no variant is in both revisions."
    moved = [f"`{row.variant}` {100 * row.comparison.difference:+.2f} pts" for row in rows if row.verdict == verdicts.CHANGED]
    line = f"**Summary: {len(moved)} of {len(rows)} beyond seed noise{': ' + ', '.join(moved) if moved else ''}.**"
    described = []
    for name in VERDICT_ORDER[1:]:
        variants = [row.variant for row in rows if row.verdict == name]
        described += [f"{len(variants)} *{name}*" + (f" ({quoted(variants)})" if name in LISTED else "")] if variants else []
    return line + (" Also " + ", ".join(described) + "." if described else "")


def environment_line(rows: list[Row]) -> str:
    """Whether base and head ran in the same environment (equal stamps, every key), and if not, which keys differ."""
    if not rows:
        return "**Environment:** no variant in both revisions to compare."
    differing = [row for row in rows if row.environment_difference is not None]
    if not differing:
        stamps = {
            ", ".join(f"{key} {value}" for key, value in sorted((row.head.get("environment") or {}).items())) or "not recorded"
            for row in rows
        }
        return f"**Environment:** the same on both sides for every variant ({'; '.join(sorted(stamps))})."
    groups: dict[str, list[str]] = {}
    for row in differing:
        groups.setdefault(str(row.environment_difference), []).append(row.variant)
    described = "; ".join(f"{quoted(variants)} ({keys})" for keys, variants in groups.items())
    return (
        f"**⚠ Environment differs** for {len(differing)} of {len(rows)} variants: {described}. A different environment "
        f"alone changes results like a reseed does, so these are judged by seed noise only (without a seed band: *{verdicts.NOT_JUDGED}*)."
    )


def not_rerun_section(rows: list[Row]) -> list[str]:
    stale = [f"- `{row.variant}`: {row.not_rerun}" for row in rows if row.verdict == verdicts.NOT_RERUN]
    title = "**Not rerun** (dvc.lock: these results are not what the revision's own params and code give; run `dvc repro` there"
    return [f"{title} and commit `dvc.lock` with the results):", "", *stale, ""] if stale else []


def params_section(diff: dict[str, dict[str, Any]]) -> list[str]:
    """From `dvc params diff --json`: {file: {key: {old, new}}}."""

    def cell(value: Any) -> str:
        return "(absent)" if value is None else f"`{value}`"

    changes = [
        f"| {file} | `{key}` | {cell(values.get('old'))} | {cell(values.get('new'))} |"
        for file, keys in diff.items()
        for key, values in sorted(keys.items())
    ]
    return (
        ["**Params changed:**", "", "| file | param | base | head |", "|---|---|---|---|", *changes]
        if changes
        else ["**Params changed:** none."]
    )


def variants_section(base: dict[str, dict[str, Any]], head: dict[str, dict[str, Any]]) -> list[str]:
    added = [f"`{name}` ({percent(head[name].get('accuracy'))})" for name in sorted(set(head) - set(base))]
    removed = [f"`{name}` (was {percent(base[name].get('accuracy'))})" for name in sorted(set(base) - set(head))]
    lines = ([f"**Variants added:** {', '.join(added)}."] if added else []) + (
        [f"**Variants removed:** {', '.join(removed)}."] if removed else []
    )
    return lines or ["**Variants added or removed:** none."]


def results_table(rows: list[Row]) -> list[str]:
    """The variants that are not *no change*, one row each."""
    header = (
        "| variant | test accuracy | Δ accuracy (pts), 95 %: test sampling + seed | seed std (pts) | p → Holm "
        "| Δ (pts), 95 %: test sampling only; McNemar p (only head right vs only base right) "
    )
    lines = [
        header + "".join(f"| {METRIC_TITLES[name]} (Δ, 95 %) " for name in METRICS) + "| verdict |",
        "|---" * (7 + len(METRICS)) + "|",
    ]
    for row in rows:
        change, bounds = row.comparison, row.combined_interval
        combined = "– (no seed band)" if bounds is None else interval(change.difference, *bounds)
        band = "–" if row.band is None else f"{100 * row.band.std:.2f} ({row.band.runs} seeds)"
        p = "–" if row.p_value is None else f"{row.p_value:.2g} → {row.adjusted_p:.2g}"
        counts = f"{change.head_only_correct} vs {change.base_only_correct}" if change.paired else "unpaired: test sets differ"
        sampling = f"{interval(change.difference, change.low, change.high)}, p {change.p_value:.2g} ({counts})"
        metrics = "".join(f"| {metric_cell(row.metric_changes[name])} " for name in METRICS)
        lines.append(
            f"| `{row.variant}` | {accuracy_cell(row)} | {combined} | {band} | {p} | {sampling} {metrics}| **{row.verdict}** |"
        )
    return lines


def unchanged_section(rows: list[Row]) -> list[str]:
    """The *no change* rows, collapsed: a reviewer reads what moved first."""
    names = ", ".join(row.variant for row in rows)
    lines = [
        f"<details><summary>{len(rows)} variant{'s' if len(rows) > 1 else ''} with no change ({names})</summary>",
        "",
        "| variant | test accuracy | " + " | ".join(METRIC_TITLES[name] for name in METRICS) + " | verdict |",
        "|---" * (3 + len(METRICS)) + "|",
    ]
    for row in rows:
        metrics = " | ".join(metric_cell(row.metric_changes[name]) for name in METRICS)
        lines.append(f"| `{row.variant}` | {accuracy_cell(row)} | {metrics} | **{row.verdict}** |")
    return [*lines, "", "</details>"]


def timings_section(rows: list[Row], base: Revision, head: Revision) -> list[str]:
    """Seconds per training epoch at each side (the timings var): they measure the machine, so they are never judged."""
    lines = []
    for row in rows:
        sides = [variant_json(revision, "timings", row.variant) or {} for revision in (base, head)]
        cells = [
            f"{side['train_seconds_per_epoch']:.1f} ({(side.get('machine') or {}).get('cpu_model', 'machine not recorded')})"
            if isinstance(side.get("train_seconds_per_epoch"), (int, float))
            else "–"
            for side in sides
        ]
        lines += [f"| `{row.variant}` | {cells[0]} | {cells[1]} |"] if cells != ["–", "–"] else []
    title = "Timings: seconds per training epoch (machine-dependent: not comparable across machines)"
    return (
        [f"<details><summary>{title}</summary>", "", "| variant | base | head |", "|---|---|---|", *lines, "", "</details>", ""]
        if lines
        else []
    )


def method_section(bands: dict[str, Any] | None, bands_where: str | None) -> list[str]:
    source = "none committed (`python -m tools.seed_bands --run` makes them)"
    if bands:
        source = (
            f"`reports/seed_bands.json` at {bands_where} (commit {str(bands.get('commit'))[:7]}, `python -m tools.seed_bands`)"
        )
    return [
        "<details><summary>How to read it</summary>",
        "",
        f"- *{verdicts.NO_CHANGE}*: the same predicted class for every test example and the same metrics (to {verdicts.METRICS_TOLERANCE:g}); "
        f"*{verdicts.NOT_RERUN}*: dvc.lock shows that a side's results are not what its own params and code give.",
        "- **Test sampling + seed**: Δ ± t(k−1, 0.975) · s · √2, s the variant's seed std over k seeds: a reseed alone moves Δ "
        f"that much 95 % of the time. p: Δ's t-test against reseeding, Holm-adjusted over the review; *{verdicts.CHANGED}* when ≤ {ALPHA:g}.",
        "- **Test sampling only**: Newcombe's paired score interval and McNemar's exact test (only one model right), the "
        "verdict without a seed band. F1, ROC-AUC, loss: paired 95 % intervals (delta method; DeLong for ROC-AUC).",
        f"- Seed bands: {source}.",
        "",
        "</details>",
    ]


def charts_section(names: list[str], artifact_url: str | None, without_curves: list[str], plots_command: str) -> list[str]:
    """`without_curves`: the variants whose results differ but whose verdict is within noise (no curves drawn)."""
    if not names:
        return ["**Charts:** none (no variant changed)."]
    what = (
        "every variant's Δ accuracy with its intervals; per variant beyond noise, not judged, added or removed, "
        "validation accuracy per epoch and gradient flow, base vs head"
    )
    if artifact_url:  # a PR comment cannot show files the workflow made without an image host
        lines = [f"**Charts** ({what}): {quoted(names)} in the [workflow artifact]({artifact_url})."]
    else:
        lines = [f"**Charts** ({what}):", "", *(f"![{name}]({name})" for name in names)]
    if without_curves:
        lines += [
            "",
            f"Training curves of the changes within noise ({quoted(without_curves)}) are not drawn: `{plots_command}` draws every variant's.",
        ]
    return lines


def draw_deltas(path: Path, rows: list[Row]) -> None:
    """head - base accuracy (points) with its test-sampling interval, over the range a reseed alone covers 95 % of
    the time (grey, centred on 0); red: the variants judged changed."""
    from rnnlab.reporting.figures import Interval, interval_figure  # matplotlib loads only when a chart is drawn

    def bar(row: Row) -> Interval:
        seed = None if row.reseed_halfwidth is None else (-100 * row.reseed_halfwidth, 100 * row.reseed_halfwidth)
        change = row.comparison
        return Interval(
            row.variant, 100 * change.difference, 100 * change.low, 100 * change.high, seed, row.verdict in verdicts.MOVED
        )

    labels = {"interval_label": "Δ, test-sampling 95 % interval", "reference_label": "a reseed alone, 95 %"}
    interval_figure(
        [bar(row) for row in rows], "Δ test accuracy, head − base", "points", path, **labels, highlight_label="changed (Holm)"
    )


def draw_variant(out: Path, variant: str, base: Revision, head: Revision) -> str | None:
    """<variant>.png, two panels: validation accuracy per epoch, and log10 ||dL/dx_t|| by steps back (trained solid,
    init dashed); None when neither side has a history or gradient profile."""
    from rnnlab.reporting.figures import Panel, Series, panels_figure

    accuracy, gradient = [], []
    for side, revision, color in (("base", base, BASE_COLOR), ("head", head, HEAD_COLOR)):
        label, history = f"{side} {revision.label}", epoch_history(revision, variant)
        profile = next(
            (rows for key in ("gradients", "order_gradients") if isinstance(rows := variant_json(revision, key, variant), list)),
            [],
        )
        if history:
            accuracy.append(
                Series(
                    label, [epoch for epoch, _ in history], [100 * value for _, value in history], color, style={"marker": "o"}
                )
            )
        steps = [row["steps_back"] for row in profile]
        for state, dashed in (("trained", False), ("init", True)) if profile else ():
            gradient.append(
                Series(f"{label} {state}", steps, [row[f"log10_grad_norm_{state}"] for row in profile], color, dashed=dashed)
            )
    if not accuracy and not gradient:
        return None
    accuracy_panel = Panel(
        accuracy, f"{variant}: validation accuracy", "epoch", "accuracy (%)", integer_x=True, empty_text="no training history"
    )
    y_label = "log10 ||dL/dx_t||"
    gradient_panel = Panel(
        gradient, f"{variant}: gradient flow", "steps back from the last token", y_label, empty_text="no gradient profile"
    )
    panels_figure([accuracy_panel, gradient_panel], out / f"{variant}.png")
    return f"{variant}.png"


def draw_charts(out: Path, rows: list[Row], curves: list[str], base: Revision, head: Revision) -> list[str]:
    """deltas.png when any variant's predictions changed, then the `curves` variants' charts: the names drawn."""
    deltas = [DELTAS] if any(not row.identical for row in rows) else []
    if deltas:
        draw_deltas(out / DELTAS, rows)
    return deltas + [name for variant in curves if (name := draw_variant(out, variant, base, head))]
