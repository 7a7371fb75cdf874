"""A tiny hand-written SVG line chart with a log10 y axis (no plotting dependency needed).

Y values are given already in log10 units; ticks are whole decades labelled 10^k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 190, 44, 52


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]  # (x, log10 y)
    color: str
    dashed: bool = False


@dataclass(frozen=True)
class Frame:
    """Maps data coordinates to pixels inside the plotting area."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float
    width: int
    height: int

    def x(self, value: float) -> float:
        span = (self.width - MARGIN_LEFT - MARGIN_RIGHT) / max(self.x_max - self.x_min, 1e-12)
        return MARGIN_LEFT + (value - self.x_min) * span

    def y(self, value: float) -> float:
        span = (self.height - MARGIN_TOP - MARGIN_BOTTOM) / max(self.y_max - self.y_min, 1e-12)
        return self.height - MARGIN_BOTTOM - (value - self.y_min) * span


def nice_step(span: float, max_ticks: int) -> float:
    """Smallest 1/2/5 x 10^k step that puts at most max_ticks ticks on `span`."""
    raw = max(span, 1e-12) / max_ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def ticks(low: float, high: float, step: float) -> list[float]:
    first = math.ceil(low / step - 1e-9) * step
    count = int(math.floor((high - first) / step + 1e-9)) + 1
    return [first + index * step for index in range(max(count, 0))]


def _axes(frame: Frame, x_label: str, y_label: str) -> list[str]:
    parts = []
    x_step = nice_step(frame.x_max - frame.x_min, 8)
    for value in ticks(frame.x_min, frame.x_max, x_step):
        px = frame.x(value)
        parts.append(f'<line x1="{px:.1f}" y1="{MARGIN_TOP}" x2="{px:.1f}" y2="{frame.height - MARGIN_BOTTOM}" class="grid"/>')
        parts.append(f'<text x="{px:.1f}" y="{frame.height - MARGIN_BOTTOM + 18}" text-anchor="middle">{value:g}</text>')
    y_step = max(1.0, nice_step(frame.y_max - frame.y_min, 8))  # whole decades only
    for value in ticks(frame.y_min, frame.y_max, y_step):
        py = frame.y(value)
        parts.append(f'<line x1="{MARGIN_LEFT}" y1="{py:.1f}" x2="{frame.width - MARGIN_RIGHT}" y2="{py:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{MARGIN_LEFT - 8}" y="{py + 4:.1f}" text-anchor="end">10'
            f'<tspan dy="-7" font-size="10">{int(round(value))}</tspan></text>'
        )
    bottom, right = frame.height - MARGIN_BOTTOM, frame.width - MARGIN_RIGHT
    parts.append(f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{right - MARGIN_LEFT}" height="{bottom - MARGIN_TOP}" class="frame"/>')
    parts.append(f'<text x="{(MARGIN_LEFT + right) / 2:.1f}" y="{frame.height - 12}" text-anchor="middle">{escape(x_label)}</text>')
    middle = (MARGIN_TOP + bottom) / 2
    parts.append(f'<text x="16" y="{middle:.1f}" text-anchor="middle" transform="rotate(-90 16 {middle:.1f})">{escape(y_label)}</text>')
    return parts


def _lines(frame: Frame, series: list[Series]) -> list[str]:
    parts = []
    for line in series:
        path = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in line.points)
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        parts.append(f'<polyline points="{path}" fill="none" stroke="{line.color}" stroke-width="2"{dash}/>')
    return parts


def _legend(frame: Frame, series: list[Series]) -> list[str]:
    parts = []
    left = frame.width - MARGIN_RIGHT + 16
    for index, line in enumerate(series):
        top = MARGIN_TOP + 10 + index * 20
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        parts.append(f'<line x1="{left}" y1="{top}" x2="{left + 28}" y2="{top}" stroke="{line.color}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{left + 36}" y="{top + 4}">{escape(line.label)}</text>')
    return parts


def line_chart(series: list[Series], title: str, x_label: str, y_label: str, width: int = 760, height: int = 420) -> str:
    """An SVG document: one polyline per series over whole-decade y gridlines, legend on the right."""
    xs = [x for line in series for x, _ in line.points]
    ys = [y for line in series for _, y in line.points]
    if not xs:
        raise ValueError("line_chart needs at least one point")
    # Pad y to whole decades so the top and bottom gridlines frame the data.
    frame = Frame(min(xs), max(xs), math.floor(min(ys)), math.ceil(max(ys)) + (max(ys) == min(ys)), width, height)
    body = [
        f'<text x="{width / 2:.1f}" y="26" text-anchor="middle" class="title">{escape(title)}</text>',
        *_axes(frame, x_label, y_label),
        *_lines(frame, series),
        *_legend(frame, series),
    ]
    style = (
        "text{font-family:Helvetica,Arial,sans-serif;font-size:12px;fill:#222}"
        ".title{font-size:15px;font-weight:bold}.grid{stroke:#e4e4e4;stroke-width:1}"
        ".frame{fill:none;stroke:#888;stroke-width:1}"
    )
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<style>{style}</style>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        *body,
        "</svg>",
    ]) + "\n"
