"""Memory a stage's params need, estimated before anything is allocated and refused with one line naming the
param to lower, instead of an allocator traceback minutes later (estimates checked in tests/stages/test_resources.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from rnnlab.core.errors import UserError

FLOAT_BYTES = 4
TOKEN_BYTES = 8  # np.int64 / torch.long token ids


class Param(NamedTuple):
    """A params.yaml key an estimate grows with, and its default (the most raised one is the culprit)."""

    name: str
    value: Any
    default: float


class Need(NamedTuple):
    what: str
    bytes: int
    params: tuple[Param, ...]
    on_device: bool = True  # lives on the training device (the GPU when training on CUDA)
    other_fix: str = ""  # a fix besides lowering the params, e.g. another readout


def size_text(count: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale:
            value = count / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{count / 2**10:.1f} KiB"


def _numbers(path: Path) -> dict[str, int]:
    """`key value` lines (memory.stat) or one bare number (under the key ""); {} if unreadable."""
    try:
        lines = [line.split() for line in path.read_text().splitlines()]
    except OSError:
        return {}
    pairs = [(["", *words] if len(words) == 1 else words)[:2] for words in lines if words]
    return {key: int(value) for key, value in pairs if value.isdigit()}  # "max" (cgroup v2: no limit) is not a number


def _cgroup_available(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Room left under this process's cgroup memory limit (v2, or v1), page cache counted as free."""
    for limit_file, usage_file, stat_key in (
        (root / "memory.max", root / "memory.current", "inactive_file"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes", "total_inactive_file"),
    ):
        limit, usage = _numbers(limit_file).get(""), _numbers(usage_file).get("")
        if limit is None or usage is None or limit >= 2**60:  # v1 writes "no limit" as a huge number
            continue
        reclaimable = _numbers(limit_file.parent / "memory.stat").get(stat_key, 0)
        return max(limit - max(usage - reclaimable, 0), 0)
    return None


def available_memory() -> int:
    """Bytes of RAM this process can still take: psutil's (MemAvailable on Linux), or the cgroup's room if lower."""
    cgroup = _cgroup_available()
    return min(psutil.virtual_memory().available, cgroup if cgroup is not None else 2**63)


def check_fits(needs: list[Need], available: int, memory: str, task: str) -> None:
    """Raise UserError naming the largest contributor's most raised param if `needs` exceed `available`."""
    total = sum(need.bytes for need in needs)
    if total <= available or os.environ.get("RNNLAB_SKIP_MEMORY_CHECK") == "1":
        return
    largest = max(needs, key=lambda need: need.bytes)
    culprit = max(largest.params, key=lambda param: float(param.value) / param.default if param.default else 0.0)
    others = [param.name for param in largest.params if param.name != culprit.name]
    alternatives = (
        f" (or {', '.join(others)}{largest.other_fix})" if others else f" ({largest.other_fix[2:]})" if largest.other_fix else ""
    )
    raise UserError(
        f"{culprit.name}={culprit.value} needs about {size_text(total)} of {memory} {task} "
        f"(largest: {largest.what}, {size_text(largest.bytes)}) but {size_text(available)} is available. "
        f"Lower {culprit.name}{alternatives}."
    )
