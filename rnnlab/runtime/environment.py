"""Reproducible CPU math: the same params give the same bits on other machines.

Measured on this project's machines (`python -m bench --only repro`, docs/reproducibility.md),
the same training gives other weights when any of these change:
- ATen's kernel ISA (AVX-512 / AVX2 / none): vectorised kernels take other code paths, so an
  AVX-512 machine and an AVX2-only one can drift apart;
- oneDNN, which runs nn.LSTM on CPU: its result depends on its ISA *and* on the thread count;
- dropout masks: torch's `bernoulli_` draws them with MKL's VSL generator on Intel CPUs and with
  ATen's own generator elsewhere, so the model draws its masks itself (rnnlab/model/layers.py Dropout);
- MKL's GEMM code path, chosen per processor. On AMD EPYC (measured) MKL runs one path whatever
  MKL_ENABLE_INSTRUCTIONS allows and whatever the thread count; on Intel it picks AVX-512 kernels
  where it can. Its conditional numerical reproducibility (CNR) makes Intel and AMD agree, but on
  AMD it honours only the COMPATIBLE branch (MKL_VERBOSE prints `CNR:AUTO` for MKL_CBWR=AVX2),
  which runs SSE2 code (~2-3x slower training), and CNR promises equal bits only for an equal
  thread count (STRICT does not hold on that branch: a (20x8)x(8x8) GEMM gave 3 results for 1-3 threads).

So there are two levels (params.yaml `runtime`):
- reproducible (default): ATen pinned to AVX2, oneDNN off, MKL capped at AVX2 instructions,
  vendor-neutral dropout. Same bits on every x86-64 CPU with AVX2 of one vendor, whatever its
  generation or core count: with these pins the thread count changed no bit (bench, e2e test).
- cross_vendor: also MKL's COMPATIBLE CNR branch, so Intel and AMD CPUs agree too, with the thread
  count fixed (REPRODUCIBLE_THREADS unless train.threads says otherwise); ~2-3x slower.

These libraries read their settings once, when they first load, so `configure()` must run before
torch (or numpy, for the baseline's OpenBLAS) is imported: every entry point (stages/, tools/, bench)
calls it with its validated params first and imports the torch-using library after. RNNLAB_REPRODUCIBLE
and RNNLAB_CROSS_VENDOR (0|1) override the params (the benchmark compares the levels).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlab.config.sections import RuntimeConfig

SWITCH = "RNNLAB_REPRODUCIBLE"
CROSS_VENDOR_SWITCH = "RNNLAB_CROSS_VENDOR"
# torch/MKL threads when train.threads is 0 at the cross_vendor level: fixed, because MKL's COMPATIBLE
# branch gives equal bits only for an equal thread count. Two: what this project's machines have. (At
# the reproducible level the count changes no bit, measured: it follows the machine's cores.)
REPRODUCIBLE_THREADS = 2
# What the mode pins; each is read by its library when the library loads.
REPRODUCIBLE_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen kernels: AVX2 on every machine that has it
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # belt and braces: oneDNN is switched off in setup (apply_torch_settings)
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # Intel AVX-512 CPUs run MKL's AVX2 kernels, as AVX2-only ones do
    "OPENBLAS_CORETYPE": "Haswell",  # numpy/scipy's OpenBLAS (the baseline): one kernel family
}
CROSS_VENDOR_ENVIRONMENT = {
    "MKL_CBWR": "COMPATIBLE",  # the one CNR branch MKL honours on Intel and AMD processors alike
}
# cuBLAS needs this before CUDA starts for deterministic GEMMs; harmless without a GPU.
CUDA_ENVIRONMENT = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


@dataclass(frozen=True)
class Mode:
    reproducible: bool = True
    cross_vendor: bool = False  # implies reproducible


_state: dict[str, Any] = {"mode": None, "configured_before_torch": None}


def _switch(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    return False if value in ("0", "false", "off", "no") else True if value in ("1", "true", "on", "yes") else None


def requested(config: RuntimeConfig | None = None) -> Mode:
    """The mode asked for: the environment switches if set, else the params' `runtime` section (default: reproducible)."""
    config = config or RuntimeConfig()

    def setting(switch: str, value: bool) -> bool:
        override = _switch(switch)
        return value if override is None else override

    cross_vendor = setting(CROSS_VENDOR_SWITCH, config.cross_vendor)
    return Mode(reproducible=setting(SWITCH, config.reproducible) or cross_vendor, cross_vendor=cross_vendor)


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
    pinned = {**REPRODUCIBLE_ENVIRONMENT, **(CROSS_VENDOR_ENVIRONMENT if mode.cross_vendor else {})}
    for name, value in pinned.items():
        # A machine that sets OPENBLAS_CORETYPE does so because other kernels are broken there; keep it.
        if name == "OPENBLAS_CORETYPE" and name in os.environ:
            continue
        os.environ[name] = value


def mode() -> Mode:
    """The configured mode (the default one if no entry point configured it)."""
    if _state["mode"] is None:
        configure()
    return _state["mode"]


def is_reproducible() -> bool:
    return mode().reproducible


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
            "warning: torch was imported before rnnlab.runtime.environment.configure() set the reproducible-mode "
            "environment, so kernels may differ from the committed results; configure the runtime first."
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

    The CPU model and the thread count are left out on purpose (see machine_environment): in
    reproducible mode they do not change a single bit, and in metrics they would make every rerun on
    another machine look like a change. At the cross_vendor level the thread count decides MKL's bits,
    so it is recorded there.
    """
    import torch

    environment = {
        "reproducible": mode().reproducible,
        "cross_vendor": mode().cross_vendor,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "torch": str(torch.__version__),  # a str subclass that weights_only loading would refuse
        "device": getattr(device, "type", str(device)),
    }
    if environment["cross_vendor"]:
        environment["threads"] = torch.get_num_threads()
    if environment["device"] == "cuda":
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
    """One short cell: `cpu, AVX2, torch 2.13.0, reproducible` (a GPU is named; threads where they decide bits)."""
    if not environment:
        return None
    parts = [environment.get("gpu") or environment.get("device", "?"), environment.get("cpu_capability", "?"),
             *([f"{environment['threads']} threads"] if "threads" in environment else []),
             f"torch {environment.get('torch', '?')}",
             "cross-vendor reproducible" if environment.get("cross_vendor")
             else "reproducible" if environment.get("reproducible") else "not reproducible"]
    return ", ".join(str(part) for part in parts)
