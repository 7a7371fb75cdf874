"""Static figures with matplotlib (Agg, no display), written as reproducible PNG files.

`line_figure` draws labelled lines (solid or dashed) on one axis, optionally log-scaled in y, and
saves a PNG; `save_png` saves any matplotlib Figure the same way, for other chart kinds. The same
data gives the same bytes on a rerun with the pinned matplotlib: PNG metadata without the software
version and no timestamp (matplotlib writes none to PNG), a fixed size and DPI, and matplotlib's
bundled DejaVu font. Figures are built on `Figure` objects, not pyplot, so no global state is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: never look for a display

from matplotlib.figure import Figure  # noqa: E402

from stages.common import atomic_path  # noqa: E402

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


def line_figure(
    series: list[Series], title: str, x_label: str, y_label: str, path: Path | str, log_y: bool = False,
) -> Figure:
    """One line per series, legend outside on the right; returns the Figure after saving it."""
    if not any(line.x for line in series):
        raise ValueError("line_figure needs at least one point")
    figure = Figure(figsize=SIZE_INCHES, layout="constrained")
    axes = figure.add_subplot()
    for line in series:
        axes.plot(line.x, line.y, label=line.label, color=PALETTE[line.color % len(PALETTE)],
                  linestyle="--" if line.dashed else "-", linewidth=1.8, **line.style)
    if log_y:
        axes.set_yscale("log")
    axes.set_title(title, fontweight="bold")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(True, which="major", color="#e4e4e4")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    save_png(figure, path)
    return figure
