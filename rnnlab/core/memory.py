"""Memory a stage's params need, estimated before anything is allocated, and refused if it cannot fit.

Without this a too-large `data.fix_length` or `model.hidden_size` ends in a raw numpy or torch
allocator traceback after minutes of work (or in the kernel's OOM killer). Each stage describes its
big arrays as `Need`s, each named after the params it grows with (rnnlab/text/encode.py for xy,
rnnlab/training/train.py for train), so the error can say which param to lower. The estimates
are checked against the measured peak of small real runs (tests/stages/test_resources.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlab.core.errors import UserError

FLOAT_BYTES = 4
TOKEN_BYTES = 8  # np.int64 / torch.long token ids
SKIP_ENVIRONMENT = "RNNLAB_SKIP_MEMORY_CHECK"


@dataclass(frozen=True)
class Param:
    """A params.yaml key an estimate grows with, and its built-in default (to tell which was raised)."""

    name: str
    value: Any
    default: float

    def raised(self) -> float:
        """How far above its default the value is; the largest names the culprit."""
        return float(self.value) / self.default if self.default else 0.0


@dataclass(frozen=True)
class Need:
    """One named contributor to a stage's memory."""

    what: str
    bytes: int
    params: tuple[Param, ...]
    on_device: bool = True  # lives on the training device (the GPU when training on CUDA)
    other_fix: str = ""  # a fix besides lowering the params, e.g. another readout

    def culprit(self) -> Param:
        return max(self.params, key=Param.raised)


def breakdown(needs: list[Need]) -> dict[str, int]:
    return {need.what: need.bytes for need in needs}


def size_text(count: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale:
            value = count / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{count / 2**10:.1f} KiB"


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2: no limit) is not a number


def _memory_stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Room left under this process's cgroup memory limit (v2, or v1), page cache counted as free."""
    for limit_file, usage_file, stat_key in (
        (root / "memory.max", root / "memory.current", "inactive_file"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes", "total_inactive_file"),
    ):
        limit, usage = _read_number(limit_file), _read_number(usage_file)
        if limit is None or usage is None or limit >= 2**60:  # v1 writes "no limit" as a huge number
            continue
        reclaimable = _memory_stat(limit_file.parent / "memory.stat", stat_key)
        return max(limit - max(usage - reclaimable, 0), 0)
    return None


def available_memory() -> int | None:
    """Bytes of RAM this process can still take: MemAvailable, or the cgroup's room if lower; None if unknown."""
    candidates = [value for value in (_meminfo_available(), _cgroup_available()) if value is not None]
    if not candidates:
        try:
            candidates = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            return None
    return min(candidates)


def check_fits(needs: list[Need], available: int | None, memory: str, task: str) -> None:
    """Raise UserError naming the largest contributor's culprit param if `needs` exceed `available`."""
    total = sum(need.bytes for need in needs)
    if available is None or total <= available or os.environ.get(SKIP_ENVIRONMENT) == "1":
        return
    largest = max(needs, key=lambda need: need.bytes)
    culprit = largest.culprit()
    others = [param.name for param in largest.params if param.name != culprit.name]
    alternatives = (
        f" (or {', '.join(others)}{largest.other_fix})"
        if others
        else (f" ({largest.other_fix[2:]})" if largest.other_fix else "")
    )
    raise UserError(
        f"{culprit.name}={culprit.value} needs about {size_text(total)} of {memory} {task} "
        f"(largest: {largest.what}, {size_text(largest.bytes)}) but {size_text(available)} is available. "
        f"Lower {culprit.name}{alternatives}."
    )
