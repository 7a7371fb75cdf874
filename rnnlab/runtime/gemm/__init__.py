"""Deterministic CPU math for torch: the same bits on every x86-64 CPU with AVX2+FMA, any thread count.

`enable()` builds (once, cached) and loads a small C++ library that takes over ATen's CPU kernels,
float32 and float64 only (other dtypes keep ATen's):
- mm, addmm, bmm, baddbmm, addmv (and their out= / in-place forms): every output element is one
  sequential FMA chain over k, so neither MKL's per-CPU code path nor the thread split matters;
- tanh, sigmoid, exp, log, sqrt: ATen sends all but sigmoid to MKL's vector math library, which
  MKL_VERBOSE does not show (elementwise.h says why each is replaced);
- with fused_recurrent (the default), nn.RNN/LSTM/GRU.forward runs each layer as one C++ autograd
  node (recurrent.py): the same forward bits as torch's own loop on these kernels, gradients summed
  in another (fixed) order, and train steps faster than unpinned torch's (bench/gemm_speed.py).

Call it after `import torch` and before the first operation whose bits matter. It never raises:
when the library can't be used, the status says why and torch's own kernels stay in place.
RNNLAB_GEMM=0 skips it. The products run on AVX-512F tiles where the CPU has them, AVX2 tiles
elsewhere or with RNNLAB_GEMM_ISA=avx2: the same bits either way (avx512.h), only the speed differs.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rnnlab.runtime.gemm import build, recurrent

NAME = "rnnlab-gemm 1"  # gemm.cpp kVersion: bumped whenever the numerics change
ISA = "AVX2+FMA"
SWITCH = "RNNLAB_GEMM"
ISA_SWITCH = "RNNLAB_GEMM_ISA"  # auto (default), avx2 or avx512f: which micro-kernels run
FALLBACK = "torch's own MKL kernels run instead (their bits depend on the machine)"


@dataclass(frozen=True)
class GemmStatus:
    active: bool
    name: str
    isa: str
    fallback_reason: str | None = None  # one line, when not active
    fused_recurrent: bool = False  # nn.RNN/LSTM/GRU.forward through recurrent.py
    tiles: str | None = None  # the micro-kernels in use, "avx512f" or "avx2": speed only, not in the stamp
    library: Path | None = None
    compile_seconds: float = 0.0  # 0.0 when the build came from the cache
    load_seconds: float = 0.0  # building (if needed) + loading the library


_loaded: GemmStatus | None = None  # building and loading: once per process
_status: GemmStatus | None = None  # what is in place now


def enable(fused_recurrent: bool = True) -> GemmStatus:
    """Route float32/float64 CPU math to the deterministic kernels; idempotent, never raises."""
    global _loaded, _status
    if _loaded is None:
        _loaded = _load()
    _status = _loaded
    if _loaded.active:
        torch.ops.rnnlab_gemm.set_enabled(True)
        (recurrent.install if fused_recurrent else recurrent.uninstall)()
        _status = replace(_loaded, fused_recurrent=fused_recurrent)
    return _status


def disable() -> None:
    """Give ATen's own kernels and torch's recurrent forward back (benchmarks); enable() undoes it."""
    global _status
    if _loaded is not None and _loaded.active:
        torch.ops.rnnlab_gemm.set_enabled(False)
        recurrent.uninstall()
        _status = replace(_loaded, active=False, fallback_reason=f"disable() was called; {FALLBACK}")


def status() -> GemmStatus | None:
    """The status of the last enable(), or None before it."""
    return _status


def unusable_reason() -> str | None:
    """Why this machine can't run the kernels, or None."""
    if os.environ.get(SWITCH, "").strip().lower() in ("0", "false", "off", "no"):
        return f"{SWITCH}=0 in the environment"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"not an x86-64 CPU ({platform.machine()})"
    missing = {"avx2", "fma"} - cpu_flags()
    if missing:
        return f"the CPU lacks {' and '.join(sorted(missing)).upper()}"
    return None


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _load() -> GemmStatus:
    reason = unusable_reason()
    if reason is not None:
        return inactive(reason)
    started = time.perf_counter()
    try:
        built = build.build()
        torch.ops.load_library(str(built.path))
        version = torch.ops.rnnlab_gemm.version()
    except build.BuildError as error:
        return inactive(str(error))
    except (OSError, RuntimeError) as error:  # a damaged cache entry, an ABI mismatch
        return inactive(f"loading the library failed: {str(error).splitlines()[0]}")
    if version != NAME:
        return inactive(f"the library says {version!r}, this loader expects {NAME!r}")
    requested = os.environ.get(ISA_SWITCH, "").strip().lower() or "auto"
    try:
        tiles = torch.ops.rnnlab_gemm.select_isa(requested)
    except RuntimeError as error:  # an unknown name, or avx512f on a CPU without it
        return inactive(f"{ISA_SWITCH}={requested}: {str(error).splitlines()[0]}")
    return GemmStatus(True, NAME, ISA, tiles=tiles, library=built.path, compile_seconds=built.compile_seconds,
                      load_seconds=time.perf_counter() - started)  # fmt: skip


def inactive(reason: str) -> GemmStatus:
    return GemmStatus(False, NAME, ISA, f"{reason}; {FALLBACK}")
