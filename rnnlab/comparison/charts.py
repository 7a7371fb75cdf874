"""The review's charts: per changed variant, validation accuracy per epoch and gradient flow, base vs head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlab.comparison.revision import Revision
from rnnlab.comparison.sources import epoch_history, gradient_profile
from rnnlab.reporting.figures import Panel, Series, panels_figure

BASE_COLOR, HEAD_COLOR = 9, 1  # indexes into rnnlab.reporting.figures.PALETTE: gray, blue


def draw_variant_chart(path: Path, variant: str, sides: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]) -> None:
    """Two panels: validation accuracy per epoch, and log10 ||dL/dx_t|| by steps back (trained solid, init dashed).

    `sides`: (label, history rows, gradient rows) for base then head; base gray, head blue.
    """
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
