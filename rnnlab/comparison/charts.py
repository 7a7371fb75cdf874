"""The review's charts: every variant's change in test accuracy with its intervals (deltas.png), and for the
`curves` variants, validation accuracy per epoch and gradient flow, base vs head (<variant>.png)."""

from __future__ import annotations

from pathlib import Path

from rnnlab.comparison.revision import Revision, epoch_history, gradient_profile
from rnnlab.comparison.verdicts import MOVED, Row

BASE_COLOR, HEAD_COLOR = 9, 1  # indexes into rnnlab.reporting.figures.PALETTE: gray, blue
DELTAS = "deltas.png"


def draw_deltas(path: Path, rows: list[Row]) -> None:
    """head - base accuracy (points) with its test-sampling interval, over the range a reseed alone covers 95 % of
    the time (grey, centred on 0); red: the variants judged changed."""
    from rnnlab.reporting.figures import Interval, interval_figure  # matplotlib loads only when a chart is drawn

    def bar(row: Row) -> Interval:
        seed = None if row.reseed_halfwidth is None else (-100 * row.reseed_halfwidth, 100 * row.reseed_halfwidth)
        change = row.comparison
        return Interval(row.variant, 100 * change.difference, 100 * change.low, 100 * change.high, seed, row.verdict in MOVED)

    labels = {"interval_label": "Δ, test-sampling 95 % interval", "reference_label": "a reseed alone, 95 %"}
    interval_figure([bar(row) for row in rows], "Δ test accuracy, head − base", "points", path, **labels, highlight_label="changed (Holm)")


def draw_variant(out: Path, variant: str, base: Revision, head: Revision) -> str | None:
    """<variant>.png, two panels: validation accuracy per epoch, and log10 ||dL/dx_t|| by steps back (trained solid,
    init dashed); None when neither side has a history or gradient profile."""
    from rnnlab.reporting.figures import Panel, Series, panels_figure

    accuracy, gradient = [], []
    for side, revision, color in (("base", base, BASE_COLOR), ("head", head, HEAD_COLOR)):
        label, history, profile = f"{side} {revision.label}", epoch_history(revision, variant), gradient_profile(revision, variant)
        epochs, values = [row["epoch"] for row in history], [100 * row["valid_accuracy"] for row in history]
        accuracy += [Series(label, epochs, values, color, style={"marker": "o"})] if history else []
        steps = [row["steps_back"] for row in profile]
        for state, dashed in (("trained", False), ("init", True)) if profile else ():
            gradient.append(Series(f"{label} {state}", steps, [row[f"log10_grad_norm_{state}"] for row in profile], color, dashed=dashed))
    if not accuracy and not gradient:
        return None
    accuracy_panel = Panel(accuracy, f"{variant}: validation accuracy", "epoch", "accuracy (%)", integer_x=True, empty_text="no training history")
    x_label, y_label = "steps back from the last token", "log10 ||dL/dx_t||"
    gradient_panel = Panel(gradient, f"{variant}: gradient flow", x_label, y_label, empty_text="no gradient profile")
    panels_figure([accuracy_panel, gradient_panel], out / f"{variant}.png")
    return f"{variant}.png"


def draw_charts(out: Path, rows: list[Row], curves: list[str], base: Revision, head: Revision) -> list[str]:
    """deltas.png when any variant's predictions changed, then the `curves` variants' charts: the names drawn."""
    deltas = [DELTAS] if any(not row.identical for row in rows) else []
    if deltas:
        draw_deltas(out / DELTAS, rows)
    return deltas + [name for variant in curves if (name := draw_variant(out, variant, base, head))]
