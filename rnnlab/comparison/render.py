"""Markdown for a pull request: what a change did to every variant, and whether it is more than noise. Each side's
results are first checked against its own params and code (revision.Freshness), each variant's metrics against its
predictions; each row carries the test-sampling interval (paired.py), the seed-noise one and a verdict (verdicts.py)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from dataclasses import replace
from pathlib import Path

from rnnlab.comparison import revision as revisions
from rnnlab.comparison import verdicts
from rnnlab.comparison.paired import METRICS, MetricChange
from rnnlab.comparison.revision import Freshness, Revision, read_predictions, variant_json
from rnnlab.comparison.verdicts import ALPHA, Row, gather
from rnnlab.core.errors import UserError
from rnnlab.experiments.seed_bands import config_key, seed_runs

MARKER = "<!-- rnn-lab-review -->"  # the CI workflows find their earlier comment by this line
BASE_COLOR, HEAD_COLOR = 9, 1  # indexes into rnnlab.reporting.figures.PALETTE: gray, blue
RERUN = "run `dvc repro` there and commit `dvc.lock` with the results"
TIMINGS = "Timings: seconds per training epoch (machine-dependent: not comparable across machines)"
CHARTS = "every variant's Δ accuracy with its intervals; per variant beyond noise, not judged, added or removed, validation accuracy per epoch and gradient flow, base vs head"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def quoted(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def metric_cell(change: MetricChange) -> str:
    if change.base is None or change.head is None:
        return "–" if change.base is None and change.head is None else f"{change.base} → {change.head}"
    if abs(change.head - change.base) <= verdicts.METRICS_TOLERANCE:
        return f"{change.head:.4f}"
    spread = f"; interval n/a: {change.unavailable}" if change.unavailable else f" [{change.low:+.4f}, {change.high:+.4f}]"
    return f"{change.base:.4f} → {change.head:.4f} ({change.head - change.base:+.4f}{spread})"


def summary_line(rows: list[Row]) -> str:
    if not rows:
        return "**Summary:** no variant is in both revisions."
    moved = [f"`{row.variant}` {100 * row.comparison.difference:+.2f} pts" for row in rows if row.verdict == verdicts.CHANGED]
    line = f"**Summary: {len(moved)} of {len(rows)} beyond seed noise{': ' + ', '.join(moved) if moved else ''}.**"
    described = []
    for name in verdicts.ORDER[1:]:
        variants = [row.variant for row in rows if row.verdict == name]
        listed = name in (verdicts.CHANGED_WITHOUT_BAND, verdicts.NOT_RERUN, verdicts.NOT_JUDGED, verdicts.CANNOT_TELL)
        described += [f"{len(variants)} *{name}*" + (f" ({quoted(variants)})" if listed else "")] if variants else []
    return line + (" Also " + ", ".join(described) + "." if described else "")


def environment_line(rows: list[Row]) -> str:
    if not rows:
        return "**Environment:** no variant in both revisions to compare."
    if not (differing := [row for row in rows if row.environment_difference is not None]):
        stamps = [row.head.get("environment") or {} for row in rows]
        texts = {", ".join(f"{key} {value}" for key, value in sorted(stamp.items())) or "not recorded" for stamp in stamps}
        return f"**Environment:** the same on both sides for every variant ({'; '.join(sorted(texts))})."
    groups: dict[str, list[str]] = {}
    for row in differing:
        groups.setdefault(str(row.environment_difference), []).append(row.variant)
    described = "; ".join(f"{quoted(variants)} ({keys})" for keys, variants in groups.items())
    return f"**⚠ Environment differs** for {len(differing)} of {len(rows)} variants: {described}. A different environment alone changes results like a reseed does, so these are judged by seed noise only (without a seed band: *{verdicts.NOT_JUDGED}*)."


def p_cell(row: Row) -> str:
    if row.verdict == verdicts.CANNOT_TELL:
        return f"– (needs {row.seeds_needed or 'more than 100'} head seeds)"
    return "–" if row.p_value is None or row.adjusted_p is None else f"{row.p_value:.2g} → {row.adjusted_p:.2g}"


def table(rows: list[Row]) -> list[str]:
    header = "| variant | test accuracy | test accuracy over seeds (%) | rank p → Holm | Δ (pts), 95 %: test sampling only; McNemar p (only head right vs only base right) "
    lines = [header + "| F1 (Δ, 95 %) | ROC-AUC (Δ, 95 %) | loss (Δ, 95 %) | verdict |", "|---" * 9 + "|"]  # paired.METRICS
    for row in rows:
        change, old, new = row.comparison, row.base.get("accuracy"), row.head.get("accuracy")
        accuracy = percent(new) if old == new else f"{percent(old)} → {percent(new)}"
        counts = f"{change.head_only_correct} vs {change.base_only_correct}" if change.paired else "unpaired: test sets differ"
        interval = f"{100 * change.difference:+.2f} [{100 * change.low:+.2f}, {100 * change.high:+.2f}]"
        sampling = f"{interval}, p {change.p_value:.2g} ({counts})"
        seeds = "– (no seed band)" if row.band is None else f"head {row.head_runs.describe()} vs band {row.band.describe()}"
        metrics = "".join(f"| {metric_cell(row.metric_changes[name])} " for name in METRICS)
        lines.append(f"| `{row.variant}` | {accuracy} | {seeds} | {p_cell(row)} | {sampling} {metrics}| **{row.verdict}** |")
    return lines


def params_section(base: Revision, head: Revision) -> list[str]:
    """The params that differ, from `dvc params diff --json` ({file: {key: {old, new}}})."""
    commits = [revision.commit for revision in (base, head) if revision.commit is not None]
    diff = subprocess.run(["dvc", "params", "diff", "--json", *commits], cwd=base.repo, capture_output=True, text=True)
    if diff.returncode != 0:
        message = (diff.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("ERROR: ")
        raise UserError(f"`dvc params diff` failed ({message}); run the review in the RNN Lab repository.")
    lines = ["**Params changed:**", "", "| file | param | base | head |", "|---|---|---|---|"]
    for file, keys in json.loads(diff.stdout or "{}").items():
        for key, values in sorted(keys.items()):
            old, new = ("(absent)" if values.get(side) is None else f"`{values[side]}`" for side in ("old", "new"))
            lines.append(f"| {file} | `{key}` | {old} | {new} |")
    return lines if len(lines) > 4 else ["**Params changed:** none."]


def timings_section(rows: list[Row], base: Revision, head: Revision) -> list[str]:
    """Seconds per training epoch at each side: they measure the machine, so they are shown, never judged."""
    lines = [f"<details><summary>{TIMINGS}</summary>", "", "| variant | base | head |", "|---|---|---|"]
    for row in rows:
        cells = []
        for timings in (variant_json(revision, "timings", row.variant) or {} for revision in (base, head)):
            seconds, cpu = timings.get("train_seconds_per_epoch"), (timings.get("machine") or {}).get("cpu_model", "unknown CPU")
            cells.append(f"{seconds:.1f} ({cpu})" if isinstance(seconds, (int, float)) else "–")
        lines += [f"| `{row.variant}` | {cells[0]} | {cells[1]} |"] if cells != ["–", "–"] else []
    return [*lines, "", "</details>", ""] if len(lines) > 4 else []


def method_section(rows: list[Row]) -> list[str]:
    judged = [(row.variant, row.band, row.head_runs) for row in rows if row.band and row.adjusted_p is not None]  # by a band
    held = [f"  - `{variant}`: band {', '.join(band.names)}; head {', '.join(head.names)}" for variant, band, head in judged]
    return [
        "<details><summary>How to read it</summary>",
        "",
        f"- *{verdicts.NO_CHANGE}*: the same predicted class for every test example and the same metrics (to {verdicts.METRICS_TOLERANCE:g}); *{verdicts.NOT_RERUN}*: dvc.lock shows that a side's results are not what its own params and code give.",
        f"- **Rank p**: the head's runs (its own, and experiments here with the same inputs and other seeds: a sweep's or the queue's) against the base's seed band, by the exact permutation test of their rank sum (no assumed shape); Holm-adjusted over the review, *{verdicts.CHANGED}* when ≤ {ALPHA:g}. n head runs against m band runs cannot go below p = 2 / C(m + n, n): with fewer the verdict is *{verdicts.CANNOT_TELL}* and says how many seeds it needs (`python -m tools.sweep --seeds`, or `dvc exp run --queue -S train.seed=N`).",
        "- **Test sampling only**: Newcombe's paired score interval and McNemar's exact test (only one model right), the verdict without a seed band. F1, ROC-AUC, loss: paired 95 % intervals (delta method; DeLong for ROC-AUC).",
        f"- Seed bands: `reports/seed_bands.json` at the base or the head (`python -m tools.seed_bands`), the one made with the base's inputs (its `key`); {'the runs each judgement rests on:' if held else 'none for these variants.'}",
        *held,
        "",
        "</details>",
    ]


def charts(rows: list[Row], one_sided: list[str], base: Revision, head: Revision, out: Path, url: str | None) -> list[str]:
    """Draws deltas.png when any prediction changed, then the curves of the variants that moved or are on one side only."""
    names = ["deltas.png"] if any(not row.identical for row in rows) else []
    if names:
        draw_deltas(out / "deltas.png", rows)
    curves = [row.variant for row in rows if row.verdict in verdicts.CURVE_VERDICTS] + one_sided
    names += [name for variant in curves if (name := draw_variant(out, variant, base, head))]
    if not names:
        return ["**Charts:** none (no variant changed)."]
    if url:  # a PR comment cannot show files the workflow made without an image host
        lines = [f"**Charts** ({CHARTS}): {quoted(names)} in the [workflow artifact]({url})."]
    else:
        lines = [f"**Charts** ({CHARTS}):", "", *(f"![{name}]({name})" for name in names)]
    command = " ".join(["dvc plots diff", *(revision.commit[:7] for revision in (base, head) if revision.commit)])
    noise = (verdicts.WITHIN_SEED_NOISE, verdicts.WITHIN_TEST_SAMPLING)
    if within_noise := [row.variant for row in rows if row.verdict in noise]:
        curves_note = f"Training curves of the changes within noise ({quoted(within_noise)}) are not drawn"
        lines += ["", f"{curves_note}: `{command}` draws every variant's."]
    return lines


def draw_deltas(path: Path, rows: list[Row]) -> None:
    """head - base accuracy (points) with its test-sampling interval, over the band's runs minus the base (grey:
    where a reseed of the base lands); red: the variants judged changed."""
    from rnnlab.reporting.figures import Interval, interval_figure  # matplotlib loads only when a chart is drawn

    bars = []
    for row in rows:
        change, base = row.comparison, row.base.get("accuracy") or 0.0
        seed = None if row.band is None else (100 * (min(row.band.accuracies) - base), 100 * (max(row.band.accuracies) - base))
        points = (100 * change.difference, 100 * change.low, 100 * change.high)
        bars.append(Interval(row.variant, *points, seed, row.verdict in verdicts.MOVED))
    labels = {"interval_label": "Δ, test-sampling 95 % interval", "reference_label": "the seed band's runs − base"}
    interval_figure(bars, "Δ test accuracy, head − base", "points", path, **labels, highlight_label="changed (Holm)")


def draw_variant(out: Path, variant: str, base: Revision, head: Revision) -> str | None:
    """<variant>.png: validation accuracy per epoch, and gradient flow (trained solid, init dashed); None without either."""
    from rnnlab.reporting.figures import Panel, Series, panels_figure

    accuracy, gradient = [], []
    for side, revision, color in (("base", base, BASE_COLOR), ("head", head, HEAD_COLOR)):
        label, history = f"{side} {revision.label}", f"{revision.paths['live']}/{variant}/plots/metrics/valid_accuracy.tsv"
        epochs = list(csv.DictReader(io.StringIO(revision.read_text(history) or ""), delimiter="\t"))  # DVCLive's TSV
        profiles = [variant_json(revision, key, variant) for key in ("gradients", "order_gradients")]
        profile = next((rows for rows in profiles if isinstance(rows, list)), [])
        if epochs:
            numbers: list[float] = [int(row["step"]) for row in epochs]
            values = [100 * float(row["valid_accuracy"]) for row in epochs]
            accuracy.append(Series(label, numbers, values, color, style={"marker": "o"}))
        for state, dashed in (("trained", False), ("init", True)) if profile else ():
            steps, norms = [row["steps_back"] for row in profile], [row[f"log10_grad_norm_{state}"] for row in profile]
            gradient.append(Series(f"{label} {state}", steps, norms, color, dashed=dashed))
    if not accuracy and not gradient:
        return None
    title, steps_back = f"{variant}: validation accuracy", "steps back from the last token"
    by_epoch = Panel(accuracy, title, "epoch", "accuracy (%)", integer_x=True, empty_text="no training history")
    by_step = Panel(gradient, f"{variant}: gradient flow", steps_back, "log10 ||dL/dx_t||", empty_text="no gradient profile")
    panels_figure([by_epoch, by_step], out / f"{variant}.png")
    return f"{variant}.png"


def not_rerun_reason(variant: str, sides: list[tuple[str, Revision, Freshness]]) -> str | None:
    for side, revision, check in sides:
        reasons = check.reasons([f"{revision.paths['metrics']}/{variant}.json", f"{revision.paths['predictions']}/{variant}.csv"])
        if reasons:
            return f"{side} ({revision.title}): {reasons[0]}" + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
    return None


def base_band(variant: str, base: Revision, head: Revision) -> verdicts.Runs | None:
    """The variant's seed band made with the base's inputs (its config key), from the base's or the head's
    reports/seed_bands.json; a band without a key (an older file) counts only at its own commit."""
    if (key := config_key(base, variant)) is None:
        return None
    for revision in (base, head):
        bands = revision.read_json(revision.paths["seed_bands"]) if "seed_bands" in revision.paths else {}
        variants = bands.get("variants") if isinstance(bands, dict) else None
        entry = variants.get(variant) if isinstance(variants, dict) else None
        if isinstance(entry, dict) and (entry["key"] == key if "key" in entry else bands.get("commit") == base.commit):
            head_name = "(committed)" if head.commit == bands.get("commit") else head.label  # the band's name for its commit
            return verdicts.seed_band(entry, variant, f"reports/seed_bands.json at {revision.title}", head_name)
    return None


def build_report(base: Revision, head: Revision, out: Path, artifact_url: str | None = None) -> tuple[str, list[Row]]:
    """The report's Markdown and its rows; charts are drawn into `out` (a folder that exists)."""
    if base.commit is None:
        raise UserError("the base must be a git revision or a DVC experiment; only the head can be the workspace.")
    old, new = revisions.variant_metrics(base), revisions.variant_metrics(head)
    sides = [("head", head, Freshness(head)), ("base", base, Freshness(base))]
    gathered = []
    for variant in sorted(set(old) & set(new)):
        band = base_band(variant, base, head)
        base_predictions = read_predictions(base, variant, old[variant])
        head_predictions = read_predictions(head, variant, new[variant])
        reason = not_rerun_reason(variant, sides)
        row = gather(variant, old[variant], new[variant], base_predictions, head_predictions, band, reason)
        if band and not row.identical and reason is None:  # a judged variant: its other seeds' experiments join its run
            runs = seed_runs(head, variant, row.head_runs.accuracies[0], set(band.names))
            row = replace(row, head_runs=verdicts.Runs(tuple(name for name, _ in runs), tuple(value for _, value in runs)))
        gathered.append(row)
    rows = sorted(verdicts.judge(gathered), key=lambda row: (row.head.get("study", "imdb") != "imdb", row.variant))
    lines = [MARKER, f"## RNN Lab review: {base.title} → {head.title}", "", summary_line(rows), "", environment_line(rows), ""]
    if unchecked := [f"{side} ({revision.title})" for side, revision, check in sides if not check.checked]:
        has = "has" if len(unchecked) == 1 else "have"
        what = "no dvc.lock, so whether the results are current for their params and code is unknown."
        lines += [f"**Not checked:** {' and '.join(unchecked)} {has} {what}", ""]
    if stale := [f"- `{row.variant}`: {row.not_rerun}" for row in rows if row.verdict == verdicts.NOT_RERUN]:
        what = f"dvc.lock: these results are not what the revision's own params and code give; {RERUN}"
        lines += [f"**Not rerun** ({what}):", "", *stale, ""]
    added = [f"`{name}` ({percent(new[name].get('accuracy'))})" for name in sorted(set(new) - set(old))]
    removed = [f"`{name}` (was {percent(old[name].get('accuracy'))})" for name in sorted(set(old) - set(new))]
    lines += [f"**Variants added:** {', '.join(added)}."] if added else []
    lines += [f"**Variants removed:** {', '.join(removed)}."] if removed else []
    lines += [] if added or removed else ["**Variants added or removed:** none."]
    lines += ["", *params_section(base, head), ""]
    if moved := [row for row in rows if row.verdict != verdicts.NO_CHANGE]:
        lines += [*table(moved), ""]
    if unchanged := [row for row in rows if row.verdict == verdicts.NO_CHANGE]:
        names, plural = ", ".join(row.variant for row in unchanged), "s" if len(unchanged) > 1 else ""
        lines += [f"<details><summary>{len(unchanged)} variant{plural} with no change ({names})</summary>", ""]
        lines += [*table(unchanged), "", "</details>", ""]
    lines += [*charts(rows, sorted(set(old) ^ set(new)), base, head, out, artifact_url), "", *timings_section(rows, base, head)]
    return "\n".join([*lines, *method_section(rows)]) + "\n", rows
