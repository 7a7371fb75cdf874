"""The review's charts: every variant's change in test accuracy with its intervals (deltas.png), and per
variant beyond noise, not judged, added or removed, validation accuracy per epoch and gradient flow, base vs head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlab.comparison.revision import Revision, epoch_history, gradient_profile
from rnnlab.comparison.verdicts import CHANGED, CHANGED_WITHOUT_BAND, Row

BASE_COLOR, HEAD_COLOR = 9, 1  # indexes into rnnlab.reporting.figures.PALETTE: gray, blue
DELTAS = "deltas.png"


def draw_deltas(path: Path, rows: list[Row]) -> None:
    """Each variant's head - base accuracy (points) with its test-sampling interval, over the range a reseed alone
    covers 95 % of the time (grey, centred on 0); red: the variants judged changed."""
    from rnnlab.reporting.figures import Interval, interval_figure  # matplotlib loads only when a chart is drawn

    interval_figure(
        [Interval(row.variant, 100 * row.comparison.difference, 100 * row.comparison.low, 100 * row.comparison.high,
                  None if row.reseed_halfwidth is None else (-100 * row.reseed_halfwidth, 100 * row.reseed_halfwidth),
                  row.verdict in (CHANGED, CHANGED_WITHOUT_BAND)) for row in rows],
        "Δ test accuracy, head − base", "points", path, interval_label="Δ, test-sampling 95 % interval",
        reference_label="a reseed alone, 95 %", highlight_label="changed (Holm)",
    )


def draw_variant_chart(path: Path, variant: str, sides: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]) -> None:
    """Two panels: validation accuracy per epoch, and log10 ||dL/dx_t|| by steps back (trained solid, init dashed).

    `sides`: (label, history rows, gradient rows) for base then head; base gray, head blue.
    """
    from rnnlab.reporting.figures import Panel, Series, panels_figure  # matplotlib loads only when a chart is drawn

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


def variant_chart(out: Path, variant: str, base: Revision, head: Revision) -> str | None:
    """Draw `variant`.png from both sides' history and gradient profile; its name, or None when neither side has any."""
    sides = [(f"{side} {revision.label}", epoch_history(revision, variant), gradient_profile(revision, variant))
             for side, revision in (("base", base), ("head", head))]
    if not any(history or profile for _, history, profile in sides):
        return None
    draw_variant_chart(out / f"{variant}.png", variant, sides)
    return f"{variant}.png"


def draw_charts(out: Path, rows: list[Row], curves: list[str], base: Revision, head: Revision) -> list[str]:
    """deltas.png when any variant's predictions changed, then the `curves` variants' charts: the names drawn."""
    names = []
    if any(not row.identical for row in rows):
        draw_deltas(out / DELTAS, rows)
        names.append(DELTAS)
    return names + [name for variant in curves if (name := variant_chart(out, variant, base, head))]
