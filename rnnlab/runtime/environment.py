"""Reproducible CPU math: the same params give the same bits on every x86-64 CPU with AVX2 and FMA,
Intel or AMD, whatever its number of cores and threads.

What decided the bits before this mode (measured, `python -m bench --only repro`, docs/reproducibility.md):
- MKL, for every GEMM (and, out of MKL_VERBOSE's sight, tanh/exp/log/sqrt through its vector math
  library): it picks its code path per processor, so Intel and AMD disagree, and on Intel the thread
  count changes its bits;
- oneDNN, which runs nn.LSTM on CPU: its result depends on its ISA and on the thread count;
- ATen's kernel ISA (AVX-512 / AVX2 / none): vectorised kernels take other code paths;
- dropout masks: torch's `bernoulli_` draws them with MKL's VSL generator on Intel CPUs and with
  ATen's own generator elsewhere.

So `runtime.reproducible: true` (the default):
- routes float32/float64 CPU math to rnnlab's own kernels (rnnlab/runtime/gemm): GEMMs whose every
  output element is one sequential FMA chain, split over output tiles only; tanh, sigmoid, exp, log
  and sqrt without MKL; nn.RNN/LSTM/GRU as fused layers. The same bits on any CPU with AVX2+FMA, any
  thread count, and faster than torch's own kernels (bench);
- switches oneDNN off and pins ATen's kernels to AVX2 (ATEN_CPU_CAPABILITY), so the remaining ATen
  kernels run the same code everywhere;
- the model draws dropout masks with torch.rand (rnnlab/model/classifier.py Dropout);
- pins numpy's OpenBLAS (the linear baseline) to one kernel family and one thread.
Where the kernels cannot be used (no C++ compiler, a CPU without AVX2/FMA, CUDA), the stage says so,
torch's own kernels run, and the metrics' environment stamp names the fallback.

These libraries read their settings once, when they first load, so `configure()` must run before
torch (or numpy, for the baseline's OpenBLAS) is imported: every entry point (stages/, tools/, bench)
calls it with its validated params first and imports the torch-using library after. RNNLAB_REPRODUCIBLE
(0|1) overrides the params (the benchmark compares the two).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported after configure(), inside the functions that need it
    import torch

from rnnlab.config.params import RuntimeConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import write_json

SWITCH = "RNNLAB_REPRODUCIBLE"
# What the mode pins; each is read by its library when the library loads.
REPRODUCIBLE_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen kernels: AVX2 on every machine that has it
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # belt and braces: oneDNN is switched off in setup (apply_torch_settings)
    # What MKL still does where the kernels cannot run (the fallback): AVX2 kernels on AVX-512 CPUs too.
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",  # numpy/scipy's OpenBLAS (the baseline): one kernel family...
    "OPENBLAS_NUM_THREADS": "1",  # ...and one thread, as its threads split sums (the baseline fits in ~1 s)
}
# What the linear baseline computes with, in reproducible mode (its environment stamp).
BASELINE_MATH = "numpy/scipy OpenBLAS (Haswell kernels, 1 thread)"
# cuBLAS needs this before CUDA starts for deterministic GEMMs; harmless without a GPU.
CUDA_ENVIRONMENT = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


@dataclass(frozen=True)
class Mode:
    reproducible: bool = True


_state: dict[str, Any] = {"mode": None, "configured_before_torch": None, "kernels": None}


def _switch(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    return False if value in ("0", "false", "off", "no") else True if value in ("1", "true", "on", "yes") else None


def requested(config: RuntimeConfig | None = None) -> Mode:
    """The mode asked for: RNNLAB_REPRODUCIBLE if set, else the params' `runtime` section (default: reproducible)."""
    override = _switch(SWITCH)
    return Mode(reproducible=(config or RuntimeConfig()).reproducible if override is None else override)


def configure(config: RuntimeConfig | None = None) -> None:
    """Set the math libraries' environment for params.yaml's `runtime` section; a no-op after the first
    call in a process. Entry points call it before anything imports torch or numpy."""
    if _state["mode"] is not None:
        return
    mode = requested(config)
    _state["mode"] = mode
    _state["configured_before_torch"] = "torch" not in sys.modules
    for name, value in CUDA_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if not mode.reproducible:
        return
    for name, value in REPRODUCIBLE_ENVIRONMENT.items():
        # A machine that sets OPENBLAS_CORETYPE does so because other kernels are broken there; keep it.
        if name == "OPENBLAS_CORETYPE" and name in os.environ:
            continue
        os.environ[name] = value


def mode() -> Mode:
    """The configured mode (the default one if no entry point configured it)."""
    if _state["mode"] is None:
        configure()
    return _state["mode"]


def apply_torch_settings(device_type: str) -> list[str]:
    """Torch-side settings of the mode, after import; returns warnings for the stage to print."""
    import torch

    warnings: list[str] = []
    if device_type == "cuda":
        configure_cuda_determinism(torch)
    if not mode().reproducible:
        return warnings
    # oneDNN's LSTM kernels give other bits per ISA and per thread count; the fused layers do not.
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a module-level flag torch types as ContextProp
    capability = torch.backends.cpu.get_cpu_capability()
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
        warnings += enable_kernels()
    return warnings


def enable_kernels() -> list[str]:
    """rnnlab's deterministic kernels in place of ATen's (rnnlab/runtime/gemm); a warning if they can't be."""
    from rnnlab.runtime import gemm

    status = gemm.enable()
    _state["kernels"] = status
    return [] if status.active else [f"warning: reproducible math is not available here: {status.fallback_reason}."]


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


def math_library(device_type: str) -> str:
    """Who computes the products and the transcendental functions, as far as it decides the bits."""
    if device_type == "cuda":
        return "cuBLAS/cuDNN, deterministic algorithms"
    if device_type != "cpu":
        return f"torch on {device_type}"
    if not mode().reproducible:
        return "torch (MKL, oneDNN): machine-dependent"
    kernels = _state["kernels"]
    if kernels is None:
        return "torch (MKL): kernels not enabled"
    if kernels.active:
        return f"{kernels.name} ({kernels.isa}{', fused recurrent layers' if kernels.fused_recurrent else ''})"
    return f"torch (MKL), fallback: {kernels.fallback_reason.split(';')[0]}"


def result_environment(device: Any, math: str | None = None) -> dict[str, Any]:
    """What decides a result's bits: in the metrics JSON, so `dvc metrics diff` shows a change of it.

    The math library (rnnlab's kernels, or the fallback), ATen's kernel ISA, torch and the C library
    (the scalar tails of ATen's vectorised loops call its exp/log), the device. Nothing that does not
    decide the bits: the CPU model, its vendor and the thread count are recorded with the timings.
    `math` names another math library (the linear baseline's numpy/scipy).
    """
    import torch

    device_type = getattr(device, "type", str(device))
    environment = {
        "reproducible": mode().reproducible,
        "math": math or math_library(device_type),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "torch": str(torch.__version__),  # a str subclass that weights_only loading would refuse
        "libc": " ".join(platform.libc_ver()) or "unknown",
        "device": device_type,
    }
    if device_type == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(device)
    return environment


def machine_environment() -> dict[str, Any]:
    """The machine a run happened on: beside the timings, which depend on it."""
    import torch

    return {
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }


def describe_environment(environment: dict[str, Any] | None) -> str | None:
    """One short cell: `cpu, AVX2, rnnlab-gemm 1 (...), torch 2.13.0, reproducible` (a GPU is named)."""
    if not environment:
        return None
    parts = [
        environment.get("gpu") or environment.get("device", "?"),
        environment.get("cpu_capability", "?"),
        *([environment["math"]] if "math" in environment else []),
        *([f"{environment['threads']} threads"] if "threads" in environment else []),  # stamps before the kernels
        f"torch {environment.get('torch', '?')}",
        "cross-vendor reproducible"
        if environment.get("cross_vendor")
        else "reproducible"
        if environment.get("reproducible")
        else "not reproducible",
    ]
    return ", ".join(str(part) for part in parts)


def setup_torch(device_name: str, threads: int = 0) -> torch.device:
    """Torch's process-wide settings for a stage: call first in its work, before any parallel torch op
    starts the OpenMP workers (they inherit the floating-point mode when they are created).

    Flushing denormals matters: vanishing gradients (the subject of this project) underflow into
    denormal floats, which x86 CPUs process ~10x slower (one vanilla-RNN step: 1.16 s with, 0.12 s without).
    Threads: RNNLAB_THREADS wins, then `threads` (train.threads), then torch's default of one per core;
    in reproducible mode the count changes no bit. Then the mode's kernels in place of ATen's. Random
    draws are seeded where they start (rnnlab.model.classifier.initial_model), not here.
    """
    import torch

    threads = thread_count(threads)
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


def thread_count(threads: int) -> int:
    """RNNLAB_THREADS if set, else `threads` (train.threads); 0 = torch's default of one per core. More
    threads than cores only slow torch down, and far more crash its thread pool: 0..cores is allowed."""
    cores = os.cpu_count() or 1
    text = os.environ.get("RNNLAB_THREADS", "").strip()
    if text:
        threads = int(text) if text.isdigit() else -1
    if not 0 <= threads <= cores:
        source = f"RNNLAB_THREADS={text}" if text else f"train.threads={threads}"
        raise UserError(
            f"{source} is not a thread count for this machine: give a whole number in 1..{cores} "
            f"(its cores), or 0 for torch's default of one per core."
        )
    return threads


# Machine-dependent measurements (seconds, tokens/s) live in their own files (reports/timings/<variant>.json),
# deliberately not declared in dvc.yaml: DVC records every declared output's hash in dvc.lock, so a file that
# changes with the machine would make every rerun look like a change. The report reads both.


def read_timings(path: Path) -> dict[str, Any]:
    """The timings recorded so far, or {} (none yet, or a damaged file: timings are never critical)."""
    try:
        return dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def record_training(path: Path, variant: str, device: str, epoch_seconds: list[float], tokens_per_epoch: int) -> None:
    """Start a variant's timings afresh: its training just ran on this machine."""
    mean = sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else None
    write_json(
        path,
        {
            "variant": variant,
            "device": device,
            "machine": machine_environment(),
            "train_seconds_per_epoch": mean,
            "train_tokens_per_second": tokens_per_epoch / mean if mean else None,
            "epoch_seconds": [round(seconds, 3) for seconds in epoch_seconds],
        },
    )


def record_evaluation(path: Path, variant: str, eval_tokens_per_second: float) -> None:
    """Add the evaluation speed to what training recorded (or start the file if there is none)."""
    timings = read_timings(path) or {"variant": variant, "machine": machine_environment()}
    timings["eval_tokens_per_second"] = eval_tokens_per_second
    write_json(path, timings)
