"""Reproducible CPU math: the same params give the same bits on any x86-64 CPU with AVX2.

Measured on this project's machines (`python -m bench --only repro`, README "Reproducibility"),
the same training gives other weights when any of these change:
- ATen's kernel ISA (AVX-512 / AVX2 / none): vectorised kernels such as `normal_` (embedding init)
  take other code paths, so an AVX-512 machine and an AVX2-only one drift apart;
- oneDNN, which runs nn.LSTM on CPU: its result depends on its ISA *and* on the thread count;
- MKL's GEMM code path, chosen per processor. MKL's conditional numerical reproducibility (CNR)
  fixes it, but on AMD processors MKL accepts only the COMPATIBLE branch (MKL_VERBOSE reports
  `CNR:AUTO` for MKL_CBWR=AVX2). CNR promises equal bits for an equal thread count, and STRICT
  (thread-count independence) does not hold on the COMPATIBLE branch: a (20x8)x(8x8) GEMM gave three
  results for 1, 2 and 3 threads. So the mode also fixes the thread count (REPRODUCIBLE_THREADS
  unless train.threads says otherwise) instead of taking one per core;
- dropout masks: torch's `bernoulli_` draws them with MKL's VSL generator on Intel CPUs and with
  ATen's own generator elsewhere, so the model draws its masks itself (stages/model.py Dropout).

These libraries read their settings once, when they first load, so `configure()` must run before
torch (or numpy, for the baseline's OpenBLAS) is imported: `stages/__init__.py` calls it, which
Python runs before any stage module. `runtime.reproducible` in params.yaml switches the mode; the
environment variable RNNLAB_REPRODUCIBLE=0|1 overrides it (the benchmark compares both).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

SWITCH = "RNNLAB_REPRODUCIBLE"
# torch/MKL threads when train.threads is 0: fixed, because MKL's reproducible GEMMs depend on it.
# Two: what the project's 2-core machines have; a 1-core machine runs them interleaved, same bits.
REPRODUCIBLE_THREADS = 2
# What the mode pins; each is read by its library when the library loads.
REPRODUCIBLE_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen kernels: AVX2 on every machine that has it
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # belt and braces: oneDNN is switched off in setup (engine.py)
    "MKL_CBWR": "COMPATIBLE",  # the one CNR branch MKL honours on Intel and AMD processors alike
    "OPENBLAS_CORETYPE": "Haswell",  # numpy/scipy's OpenBLAS (the baseline): one kernel family
}
# cuBLAS needs this before CUDA starts for deterministic GEMMs; harmless without a GPU.
CUDA_ENVIRONMENT = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}

_state: dict[str, Any] = {"reproducible": None, "configured_before_torch": None}


def requested(params_file: Path = Path("params.yaml")) -> bool:
    """The mode asked for: RNNLAB_REPRODUCIBLE if set, else params.yaml `runtime.reproducible` (default on).

    Read without validation: stages validate the whole file right after, with clear errors.
    """
    override = os.environ.get(SWITCH, "").strip().lower()
    if override in ("0", "false", "off", "no"):
        return False
    if override in ("1", "true", "on", "yes"):
        return True
    try:
        import yaml

        raw = yaml.safe_load(params_file.read_text(encoding="utf-8")) if params_file.is_file() else None
        value = raw.get("runtime", {}).get("reproducible", True) if isinstance(raw, dict) else True
    except Exception:  # a broken params.yaml is reported by load_params, with the fix
        return True
    return value if isinstance(value, bool) else True


def configure(reproducible: bool | None = None) -> None:
    """Set the math libraries' environment; a no-op after the first call in a process."""
    if _state["reproducible"] is not None:
        return
    reproducible = requested() if reproducible is None else reproducible
    _state["reproducible"] = reproducible
    _state["configured_before_torch"] = "torch" not in sys.modules
    for name, value in CUDA_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if not reproducible:
        return
    for name, value in REPRODUCIBLE_ENVIRONMENT.items():
        # A machine that sets OPENBLAS_CORETYPE does so because other kernels are broken there; keep it.
        if name == "OPENBLAS_CORETYPE" and name in os.environ:
            continue
        os.environ[name] = value


def is_reproducible() -> bool:
    if _state["reproducible"] is None:
        configure()
    return bool(_state["reproducible"])


def apply_torch_settings(device_type: str) -> list[str]:
    """Torch-side settings of the mode, after import; returns warnings for the stage to print."""
    import torch

    warnings: list[str] = []
    if device_type == "cuda":
        configure_cuda_determinism(torch)
    if not is_reproducible():
        return warnings
    # oneDNN's LSTM kernels give other bits per ISA and per thread count; ATen's own RNN code
    # (MKL GEMMs + ATen pointwise ops) does not. Measured cost: ~10% on the LSTM study, 0 on RNN/GRU.
    torch.backends.mkldnn.enabled = False
    capability = torch.backends.cpu.get_cpu_capability()
    if not _state["configured_before_torch"]:
        warnings.append(
            "warning: torch was imported before stages/runtime.py set the reproducible-mode environment, "
            "so kernels may differ from the committed results; import stages first."
        )
    elif capability != "AVX2" and platform.machine() in ("x86_64", "AMD64"):
        warnings.append(
            f"warning: this CPU runs {capability} kernels, not AVX2: results are reproducible on this machine "
            "but may differ from those of AVX2 machines (the committed results)."
        )
    return warnings


def configure_cuda_determinism(torch: Any) -> None:
    """What PyTorch offers for run-to-run determinism on CUDA (README: what it does and does not cover).

    warn_only: an op without a deterministic CUDA kernel warns instead of stopping the run.
    """
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def result_environment(device: Any) -> dict[str, Any]:
    """What decides the bits of a result: in metrics JSON, so `dvc metrics diff` shows a change of it.

    The CPU model is left out on purpose (see machine_environment): in reproducible mode it does not
    change a single bit, and in metrics it would make every rerun on another machine look like a
    change. The thread count is in: it decides MKL's bits, and the mode fixes it.
    """
    import torch

    environment = {
        "reproducible": is_reproducible(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "torch": str(torch.__version__),  # a str subclass that weights_only loading would refuse
        "device": getattr(device, "type", str(device)),
        "threads": torch.get_num_threads(),
    }
    if environment["device"] == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(device)
    return environment


def machine_environment() -> dict[str, Any]:
    """The machine a run happened on: beside the timings, which depend on it."""
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }
