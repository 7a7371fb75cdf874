"""Reproducible CPU math: the same params give the same bits on every x86-64 CPU with AVX2 and FMA, Intel or AMD,
at any thread count. `runtime.reproducible: true` (the default; RNNLAB_REPRODUCIBLE=0|1 overrides it) routes float
CPU math to rnnlab's own kernels (rnnlab/runtime/gemm), switches oneDNN off, pins ATen to AVX2 and numpy's OpenBLAS
to one kernel family and thread (docs/reproducibility.md: what decides the bits, and how it was measured). These
libraries read their settings when they load, so every entry point calls `configure()` before importing torch or numpy.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported after configure(), inside the functions that need it
    import torch

from rnnlab.config.params import RuntimeConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import write_json

SWITCH = "RNNLAB_REPRODUCIBLE"
REPRODUCIBLE_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # belt and braces: oneDNN is switched off in apply_torch_settings
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # what MKL still does in the fallback
    "OPENBLAS_CORETYPE": "Haswell",  # the baseline's OpenBLAS: one kernel family...
    "OPENBLAS_NUM_THREADS": "1",  # ...and one thread, as its threads split sums (the baseline fits in ~1 s)
}
BASELINE_MATH = "numpy/scipy OpenBLAS (Haswell kernels, 1 thread)"

# mode: reproducible or not (None until configured); cpu_math: who computes on the CPU, once the kernels are enabled
_state: dict[str, Any] = {"mode": None, "configured_before_torch": None, "cpu_math": None}


def requested(config: RuntimeConfig | None = None) -> bool:
    """Whether the math is reproducible: RNNLAB_REPRODUCIBLE if set, else the params' `runtime` section (default: yes)."""
    override = os.environ.get(SWITCH, "").strip().lower()
    if override in ("0", "false", "off", "no", "1", "true", "on", "yes"):
        return override in ("1", "true", "on", "yes")
    return (config or RuntimeConfig()).reproducible


def configure(config: RuntimeConfig | None = None) -> None:
    """Set the math libraries' environment for params.yaml's `runtime` section; a no-op after the first call."""
    if _state["mode"] is not None:
        return
    _state["mode"] = requested(config)
    _state["configured_before_torch"] = "torch" not in sys.modules
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; read when CUDA starts
    if _state["mode"]:
        for name, value in REPRODUCIBLE_ENVIRONMENT.items():
            # A machine that sets OPENBLAS_CORETYPE does so because other kernels are broken there; keep it.
            if not (name == "OPENBLAS_CORETYPE" and name in os.environ):
                os.environ[name] = value


def reproducible() -> bool:
    """The configured mode (the default one if no entry point configured it)."""
    configure()
    return bool(_state["mode"])


def apply_torch_settings(device_type: str) -> list[str]:
    """Torch-side settings of the mode, after import; returns warnings for the stage to print."""
    import torch

    if not reproducible():  # torch's own kernels, the fast non-deterministic ones on CUDA too
        return []
    if device_type == "cuda":  # what PyTorch offers; an op without a deterministic kernel warns, not stops
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a module-level flag torch types as ContextProp
    capability = torch.backends.cpu.get_cpu_capability()
    warnings: list[str] = []
    if not _state["configured_before_torch"]:
        warnings.append(
            "warning: torch was imported before rnnlab.runtime.environment.configure() set the reproducible-mode "
            "environment, so kernels may differ from the committed results; configure the runtime first."
        )
    elif capability != "AVX2" and platform.machine() in ("x86_64", "AMD64"):
        warnings.append(
            f"warning: this CPU runs {capability} kernels, not AVX2: results are reproducible on this machine "
            "but may differ from those of AVX2 machines (the committed results)."
        )
    if device_type == "cpu":
        from rnnlab.runtime import gemm

        kernels = gemm.enable()
        if kernels.active:
            _state["cpu_math"] = f"{gemm.NAME} ({gemm.ISA}, fused recurrent layers)"
        else:
            _state["cpu_math"] = f"torch (MKL), fallback: {kernels.fallback_reason.split(';')[0]}"
            warnings.append(f"warning: reproducible math is not available here: {kernels.fallback_reason}.")
    return warnings


def math_library(device_type: str) -> str:
    """Who computes the products and the transcendental functions, as far as it decides the bits."""
    if device_type == "cuda":
        return "cuBLAS/cuDNN, deterministic algorithms" if reproducible() else "cuBLAS/cuDNN: non-deterministic"
    if device_type != "cpu":
        return f"torch on {device_type}"
    if not reproducible():
        return "torch (MKL, oneDNN): machine-dependent"
    return _state["cpu_math"] or "torch (MKL): kernels not enabled"


def result_environment(device: Any, math: str | None = None) -> dict[str, Any]:
    """What decides a result's bits, in the metrics so `dvc metrics diff` shows a change of it: the math library
    (or `math`, the baseline's), ATen's ISA, torch, the C library (ATen's scalar tails call its exp/log), the
    device. The CPU model and thread count decide no bit: they go with the timings."""
    import torch

    device_type = getattr(device, "type", str(device))
    environment = {
        "reproducible": reproducible(),
        "math": math or math_library(device_type),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "torch": str(torch.__version__),  # a str subclass that weights_only loading would refuse
        "libc": " ".join(platform.libc_ver()) or "unknown",
        "device": device_type,
    }
    if device_type == "cuda":  # the GPU model and the software that picks its kernels
        environment |= {
            "gpu": torch.cuda.get_device_name(device),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "driver": nvidia_driver(),
        }
    return environment


def nvidia_driver(version_file: Path = Path("/proc/driver/nvidia/version")) -> str:
    """The NVIDIA kernel driver's version (e.g. 550.54.15), as the driver reports it; torch does not say."""
    text = version_file.read_text(errors="replace") if version_file.is_file() else ""
    found = re.search(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
    return found.group(1) if found else "unknown"


def machine_environment() -> dict[str, Any]:
    """The machine a run happened on: beside the timings, which depend on it."""
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    return {
        "cpu_model": names[0] if names else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }


def describe_environment(environment: dict[str, Any] | None) -> str | None:
    """One short cell: `cpu, AVX2, rnnlab-gemm 1 (...), torch 2.13.0, reproducible` (a GPU is named)."""
    if not environment:
        return None
    device = environment.get("gpu") or environment.get("device", "?")
    math = [environment["math"]] if "math" in environment else []  # stamps from before the kernels have none
    mode = "reproducible" if environment.get("reproducible") else "not reproducible"
    parts = [device, environment.get("cpu_capability", "?"), *math, f"torch {environment.get('torch', '?')}", mode]
    return ", ".join(str(part) for part in parts)


def setup_torch(device_name: str, threads: int = 0) -> torch.device:
    """Torch's process-wide settings for a stage, before any parallel op starts the OpenMP workers (they
    inherit the floating-point mode). Denormals are flushed: vanishing gradients underflow into them, which
    x86 CPUs process ~10x slower (one vanilla-RNN step: 1.16 s with, 0.12 s without)."""
    import torch

    cores = os.cpu_count() or 1
    text = os.environ.get("RNNLAB_THREADS", "").strip()  # overrides train.threads
    if text:
        threads = int(text) if text.isdigit() else -1
    if not 0 <= threads <= cores:  # more threads than cores only slow torch down, and far more crash its thread pool
        source = f"RNNLAB_THREADS={text}" if text else f"train.threads={threads}"
        raise UserError(
            f"{source} is not a thread count for this machine: give a whole number in 1..{cores} "
            f"(its cores), or 0 for torch's default of one per core."
        )
    torch.set_flush_denormal(True)
    if threads > 0:
        torch.set_num_threads(threads)
    device = resolve_device(device_name)
    for warning in apply_torch_settings(device.type):
        print(warning, file=sys.stderr)
    return device


def resolve_device(name: str) -> torch.device:
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "cuda" and not cuda:
        raise UserError("train.device=cuda but no CUDA GPU is available to torch here. Set train.device=auto or cpu.")
    if name == "mps" and not mps:
        raise UserError("train.device=mps but no Apple MPS device is available here. Set train.device=auto or cpu.")
    return torch.device(("cuda" if cuda else "mps" if mps else "cpu") if name == "auto" else name)


# Timings (reports/timings/<variant>.json) are deliberately not DVC outputs: a file that changes with the machine
# would make every rerun look like a change in dvc.lock. The report reads them beside the metrics.


def read_timings(path: Path) -> dict[str, Any]:
    """The timings recorded so far, or {} (none yet, or a damaged file: timings are never critical)."""
    try:
        return dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def record_training(path: Path, variant: str, device: str, epoch_seconds: list[float], tokens_per_epoch: int) -> None:
    """Start a variant's timings afresh: its training just ran on this machine."""
    mean = sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else None
    timings = {"variant": variant, "device": device, "machine": machine_environment(), "train_seconds_per_epoch": mean}
    timings["train_tokens_per_second"] = tokens_per_epoch / mean if mean else None
    write_json(path, timings | {"epoch_seconds": [round(seconds, 3) for seconds in epoch_seconds]})


def record_evaluation(path: Path, variant: str, eval_tokens_per_second: float) -> None:
    """Add the evaluation speed to what training recorded (or start the file if there is none)."""
    timings = read_timings(path) or {"variant": variant, "machine": machine_environment()}
    write_json(path, timings | {"eval_tokens_per_second": eval_tokens_per_second})
