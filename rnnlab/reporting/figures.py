"""Static figures with matplotlib (Agg, no display), written as reproducible PNG files.

`line_figure` draws labelled lines (solid or dashed) on one axis, optionally log-scaled in y, and
saves a PNG; `panels_figure` puts several such axes side by side (the review's charts); `save_png`
saves any matplotlib Figure the same way, for other chart kinds. The same
data gives the same bytes on a rerun with the pinned matplotlib: PNG metadata without the software
version and no timestamp (matplotlib writes none to PNG), a fixed size and DPI, and matplotlib's
bundled DejaVu font. Figures are built on `Figure` objects, not pyplot, so no global state is kept and no
backend is chosen: saving a PNG uses Agg, with no display, whatever the configured backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from rnnlab.core.files import atomic_path

SIZE_INCHES = (7.6, 4.2)
DPI = 100
# matplotlib's tab10: distinct for up to 10 series; a series' colour index picks from it.
PALETTE = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:cyan", "tab:olive", "tab:gray")


@dataclass(frozen=True)
class Series:
    label: str
    x: list[float]
    y: list[float]
    color: int = 0  # index into PALETTE, so related series (trained / init) can share a colour
    dashed: bool = False
    style: dict = field(default_factory=dict)  # extra Axes.plot keywords (marker, linewidth, ...)


def save_png(figure: Figure, path: Path | str) -> None:
    """Write `figure` as PNG atomically; metadata Software=None keeps the bytes version-free."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI, metadata={"Software": None})


@dataclass(frozen=True)
class Panel:
    """One axis of a figure: its lines, labels, and what to say when it has no data."""

    series: list[Series]
    title: str
    x_label: str
    y_label: str
    log_y: bool = False
    integer_x: bool = False  # epochs: a tick per integer (each one when there are <= 20), never 2.5
    empty_text: str = "no data"


def draw_panel(axes, panel: Panel, legend_outside: bool = True) -> None:  # axes: matplotlib Axes
    for line in panel.series:
        axes.plot(line.x, line.y, label=line.label, color=PALETTE[line.color % len(PALETTE)],
                  linestyle="--" if line.dashed else "-", linewidth=1.8, **line.style)
    if panel.log_y:
        axes.set_yscale("log")
    axes.set_title(panel.title, fontweight="bold")
    axes.set_xlabel(panel.x_label)
    axes.set_ylabel(panel.y_label)
    if panel.integer_x:
        from matplotlib.ticker import MaxNLocator

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


def line_figure(
    series: list[Series], title: str, x_label: str, y_label: str, path: Path | str, log_y: bool = False,
) -> Figure:
    """One line per series, legend outside on the right; returns the Figure after saving it."""
    if not any(line.x for line in series):
        raise ValueError("line_figure needs at least one point")
    figure = Figure(figsize=SIZE_INCHES, layout="constrained")
    draw_panel(figure.add_subplot(), Panel(series, title, x_label, y_label, log_y))
    save_png(figure, path)
    return figure


def panels_figure(panels: list[Panel], path: Path | str, size_inches: tuple[float, float] = (10.0, 3.6)) -> Figure:
    """Panels side by side (legends inside, each panel says when it has no data); returns the Figure."""
    figure = Figure(figsize=size_inches, layout="constrained")
    for axes, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        draw_panel(axes, panel, legend_outside=False)
    save_png(figure, path)
    return figure
