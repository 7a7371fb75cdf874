"""Timing helpers and the result table.

Every ratio the benchmark prints compares two things measured in the same process, interleaved
(A, B, A, B, ...), and each side keeps its fastest repeat. The CPU here is shared with other jobs:
interleaving exposes both sides to the same contention, and the minimum is the repeat that was
disturbed least, so ratios stay meaningful even when absolute times wander.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def time_once(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def time_interleaved(functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Run each function `warmup` times untimed, then `repeats` timed rounds in turn."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    timings = {name: Timing() for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            timings[name].samples.append(time_once(function))
    return timings


@dataclass
class Row:
    section: str
    measurement: str
    value: str
    ratio: str = ""
    target: str = ""
    verdict: str = ""  # "ok", "MISSED" or "" when there is no target


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  [{row.section}] {row.measurement}: {row.value} {row.ratio} {row.verdict}".rstrip(), flush=True)

    def render(self) -> str:
        header = Row("section", "measurement", "value", "ratio", "target", "verdict")
        cells = [header, *self.rows]
        columns = ("section", "measurement", "value", "ratio", "target", "verdict")
        widths = {name: max(len(getattr(row, name)) for row in cells) for name in columns}

        def line(row: Row) -> str:
            return "| " + " | ".join(getattr(row, name).ljust(widths[name]) for name in columns) + " |"

        separator = "|" + "|".join("-" * (widths[name] + 2) for name in columns) + "|"
        return "\n".join([line(header), separator, *(line(row) for row in self.rows)])


def verdict(met: bool) -> str:
    return "ok" if met else "MISSED"


def seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
