"""The review's charts: every variant's change in test accuracy with its intervals (deltas.png), and per
variant beyond noise, not judged, added or removed, validation accuracy per epoch and gradient flow, base vs head."""

from __future__ import annotations

import multiprocessing
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

from rnnlab.comparison.revision import Revision
from rnnlab.comparison.sources import epoch_history, gradient_profile
from rnnlab.comparison.verdicts import CHANGED, CHANGED_WITHOUT_BAND, Row
from rnnlab.core.parallel import children_stop_quietly

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


def load_matplotlib() -> None:
    """The worker's first job, while the main process reads the predictions: matplotlib's import (about a
    second) and one throw-away drawing, which loads the font and Agg's caches (the first chart took twice as
    long as the next without it)."""
    import io

    from rnnlab.reporting.figures import Figure

    figure = Figure(figsize=(2, 1))
    figure.add_subplot().set_title("warm-up")
    figure.savefig(io.BytesIO(), format="png")


class ChartDrawer:
    """Draws the review's PNGs in a worker process beside this one, on the second core.

    The worker imports matplotlib as soon as it starts, and each changed variant's chart is drawn as soon
    as that variant is known to differ, while this process reads and compares the others: charts then add
    little to the review's wall time. A review that draws nothing does not wait for that import: the
    worker is stopped on leaving the block, as it is after a failure (what has not finished is dropped).
    Forked before this process starts any thread (the trust checks' pool: forking a threaded process can
    deadlock), so nothing is pickled but the few rows a chart needs.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        # The worker is forked here; terminating it on an early exit must kill it silently (its chart files
        # are in the review's temporary folder, deleted after), not print its traceback beside the error.
        with children_stop_quietly(ignore_interrupt=True):
            self.pool = multiprocessing.get_context("fork").Pool(processes=1)
        self.pool.apply_async(load_matplotlib)
        self.variant_jobs: dict[str, AsyncResult] = {}
        self.deltas_job: AsyncResult | None = None

    def __enter__(self) -> ChartDrawer:
        return self

    def __exit__(self, *exception: object) -> None:
        # names() has waited for every chart a successful review uses; anything still running is not needed.
        self.pool.terminate()
        self.pool.join()

    def variant(self, variant: str, base: Revision, head: Revision) -> None:
        self.variant_jobs[variant] = self.pool.apply_async(variant_chart, (self.out, variant, base, head))

    def deltas(self, rows: list[Row]) -> None:
        """deltas.png, when any variant's predictions changed."""
        if any(not row.identical for row in rows):
            self.deltas_job = self.pool.apply_async(draw_deltas, (self.out / DELTAS, rows))

    def names(self, order: list[str]) -> list[str]:
        """Wait for every chart; their file names, deltas.png first, then the variants in `order`. A variant chart
        started but not in `order` (its verdict came out within noise) is deleted. A worker's error is raised here."""
        names = [DELTAS] if self.deltas_job is not None and self.deltas_job.get() is None else []
        drawn = {variant: job.get() for variant, job in self.variant_jobs.items()}
        for variant, name in drawn.items():
            if name and variant not in order:
                (self.out / name).unlink()
        return names + [name for variant in order if (name := drawn.get(variant))]
