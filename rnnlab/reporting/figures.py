"""Static figures as reproducible PNG files: no software version or timestamp in the PNG, a fixed size and DPI,
the bundled DejaVu font; `Figure` objects, not pyplot, so no global state and Agg whatever backend is configured."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rnnlab.core.errors import UserError
from rnnlab.core.files import atomic_path, read_json

SIZE_INCHES = (7.6, 4.2)
DPI = 100
# Where matplotlib puts a title anyway when nothing is drawn above the axes (no top ticks here); given, it skips
# measuring every tick label to place it (about 30 ms a panel).
TITLE_Y = 1.0
# matplotlib's tab10: distinct for up to 10 series; a series' colour index picks from it.
PALETTE = tuple(f"tab:{name}" for name in ["red", "blue", "green", "purple", "orange", "brown", "pink", "cyan", "olive", "gray"])


@dataclass(frozen=True)
class Series:
    label: str
    x: list[float]
    y: list[float]
    color: int = 0  # index into PALETTE, so related series (trained / init) can share a colour
    dashed: bool = False
    style: dict = field(default_factory=dict)  # extra Axes.plot keywords (marker, linewidth, ...)


def save_png(figure: Figure, path: Path | str) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI, metadata={"Software": None})


@dataclass(frozen=True)
class Panel:
    series: list[Series]
    title: str
    x_label: str
    y_label: str
    log_y: bool = False
    integer_x: bool = False  # epochs: a tick per integer (each one when there are <= 20), never 2.5
    empty_text: str = "no data"


def draw_panel(axes, panel: Panel, legend_outside: bool = True) -> None:  # axes: matplotlib Axes
    for line in panel.series:
        color, linestyle = PALETTE[line.color % len(PALETTE)], "--" if line.dashed else "-"
        axes.plot(line.x, line.y, label=line.label, color=color, linestyle=linestyle, linewidth=1.8, **line.style)
    if panel.log_y:
        axes.set_yscale("log")
    axes.set_title(panel.title, fontweight="bold", y=TITLE_Y)
    axes.set_xlabel(panel.x_label)
    axes.set_ylabel(panel.y_label)
    if panel.integer_x:
        ticks = sorted({x for line in panel.series for x in line.x})
        if 0 < len(ticks) <= 20:
            axes.set_xticks(ticks)
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, which="major", color="#e4e4e4")
    if not axes.has_data():
        axes.text(0.5, 0.5, panel.empty_text, transform=axes.transAxes, ha="center", va="center", color="gray")
    elif legend_outside:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    else:
        axes.legend(frameon=False, fontsize="small")


def fixed_margins(figure: Figure, left: float, right: float, top: float, bottom: float, wspace: float = 0.0) -> None:
    """Margins in inches. Fixed margins instead of a constrained layout: a figure saves 3x faster (the review
    draws one per changed variant), and these figures' labels are of known size."""
    width, height = figure.get_size_inches()
    figure.subplots_adjust(
        left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height, wspace=wspace
    )


def panels_figure(panels: list[Panel], path: Path | str, size_inches: tuple[float, float] = (10.0, 3.6)) -> None:
    """Panels side by side, legends inside."""
    figure = Figure(figsize=size_inches)
    fixed_margins(figure, left=0.75, right=0.2, top=0.4, bottom=0.6, wspace=0.3)
    for axes, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        draw_panel(axes, panel, legend_outside=False)
    save_png(figure, path)


@dataclass(frozen=True)
class Interval:
    label: str
    point: float
    low: float
    high: float
    reference: tuple[float, float] | None = None  # e.g. where a reseed alone lands 95 % of the time
    highlight: bool = False  # drawn in red (the rows a reader should look at first)


def interval_figure(
    rows: list[Interval],
    title: str,
    x_label: str,
    path: Path | str,
    interval_label: str,
    reference_label: str,
    highlight_label: str,
) -> None:
    """A forest plot: one horizontal row per item, top to bottom, a zero line, grey reference ranges behind."""
    height = 0.34 * len(rows) + 1.75
    figure = Figure(figsize=(SIZE_INCHES[0], height))
    longest = max(len(row.label) for row in rows)
    fixed_margins(figure, left=0.25 + 0.075 * longest, right=0.25, top=0.4, bottom=1.05)  # labels in 10-point DejaVu Sans
    axes = figure.add_subplot()
    positions = range(len(rows) - 1, -1, -1)  # the first row on top
    # One call per kind of artist, not per row: matplotlib's cost is per call (the chart drew in 0.23 s with a call a row).
    references = [(position, *row.reference) for position, row in zip(positions, rows, strict=True) if row.reference is not None]
    if references:
        bar_positions, lows, highs = zip(*references, strict=True)
        widths = [high - low for low, high in zip(lows, highs, strict=True)]
        axes.barh(bar_positions, widths, left=lows, height=0.62, color="#dcdcdc", label=reference_label, zorder=1)
    for highlight, color, label in ((False, PALETTE[1], interval_label), (True, PALETTE[0], highlight_label)):
        group = [(row, position) for position, row in zip(positions, rows, strict=True) if row.highlight == highlight]
        if group:
            xerr = [[row.point - row.low for row, _ in group], [row.high - row.point for row, _ in group]]
            points, point_positions = [row.point for row, _ in group], [position for _, position in group]
            marks: dict[str, Any] = {"fmt": "o", "capsize": 3, "markersize": 5, "linewidth": 1.6, "zorder": 3}
            axes.errorbar(points, point_positions, xerr=xerr, color=color, label=label, **marks)
    axes.axvline(0.0, color="black", linewidth=0.8, zorder=2)
    axes.set_yticks(positions, [row.label for row in rows])
    axes.set_ylim(-0.7, len(rows) - 0.3)
    axes.set_title(title, fontweight="bold", y=TITLE_Y)
    axes.set_xlabel(x_label)
    axes.grid(True, axis="x", color="#e4e4e4")
    below = -0.55 / (height - 1.45)  # the legend under the x label, in axes fractions
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, below), ncol=3, frameon=False, fontsize="small")
    save_png(figure, path)


def draw_gradients(profiles: dict[str, list[dict[str, Any]]], title: str, path: Path) -> None:
    """The gradient_figure stage's PNG: each variant's ||dL/dx|| by steps back from the last symbol on a log scale,
    trained (solid) and at initialisation (dashed) in one colour."""
    series = []
    for color, (name, rows) in enumerate(profiles.items()):
        try:  # the rows hold log10 norms, the axis is log
            steps = [row["steps_back"] for row in rows]
            trained = [10.0 ** row["log10_grad_norm_trained"] for row in rows]
            initial = [10.0 ** row["log10_grad_norm_init"] for row in rows]
        except (KeyError, TypeError) as error:
            raise UserError(f"gradient profile of {name} lacks {error}; rerun its evaluate stage (`dvc repro`).") from error
        series += [Series(f"{name} trained", steps, trained, color), Series(f"{name} init", steps, initial, color, dashed=True)]
    if not any(line.x for line in series):
        raise UserError("the gradient profiles hold no steps; rerun the evaluate stages (`dvc repro`).")
    figure = Figure(figsize=SIZE_INCHES, layout="constrained")  # the legend outside on the right
    draw_panel(figure.add_subplot(), Panel(series, title, "steps back from the last symbol", "mean ||dL/dx_t||", log_y=True))
    save_png(figure, path)


def draw_task(profiles_dir: Path, variants: list[str], task: str, out: Path) -> None:
    hint = "Run its evaluate stage (`dvc repro`)."
    profiles = {name: read_json(profiles_dir / f"{name}.json", f"gradient profile of {name}", hint) for name in variants}
    draw_gradients(profiles, f"{'Temporal-order task' if task == 'order' else task}: gradient reaching each input step", out)
    print(f"gradient_figure: {len(profiles)} variants -> {out}")
