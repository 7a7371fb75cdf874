"""Reproducible CPU math (rnnlab/runtime/environment.py): the environment is set before torch loads, the thread
count is fixed, dropout masks do not depend on the CPU vendor, and CUDA gets PyTorch's determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rnnlab.comparison.verdicts import environment_difference
from rnnlab.config.params import RuntimeConfig, parse_params
from rnnlab.core.errors import ConfigError
from rnnlab.model.classifier import Dropout, keep_mask
from rnnlab.runtime import environment as runtime

REPO = Path(__file__).resolve().parents[3]
PROBE = """
import json, os, sys
{before}
from pathlib import Path
from rnnlab.config.params import load_params
from rnnlab.runtime import environment
environment.configure(load_params().runtime if Path("params.yaml").is_file() else None)  # as an entry point does
from rnnlab.runtime.environment import setup_torch
import torch
setup_torch("cpu")
print(json.dumps({{
    "capability": str(torch.backends.cpu.get_cpu_capability()),
    "mkl_cbwr": os.environ.get("MKL_CBWR"), "aten": os.environ.get("ATEN_CPU_CAPABILITY"),
    "mkl_isa": os.environ.get("MKL_ENABLE_INSTRUCTIONS"), "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    "math": environment.math_library("cpu"),
    "onednn": torch.backends.mkldnn.enabled, "threads": torch.get_num_threads(),
    "reproducible": environment.reproducible(), "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
}}))
"""


def probe(tmp_path: Path, params: str | None = "runtime: {reproducible: true}\n", before: str = "",
          **environment: str) -> tuple[dict, str]:
    """Run a fresh stage-like process in tmp_path (its own params.yaml) and report its math settings."""
    (tmp_path / "params.yaml").unlink(missing_ok=True)
    if params is not None:
        (tmp_path / "params.yaml").write_text(params, encoding="utf-8")
    env = {key: value for key, value in os.environ.items()
           if key not in ("RNNLAB_THREADS", "RNNLAB_REPRODUCIBLE", "MKL_CBWR", "OPENBLAS_NUM_THREADS",
                          "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    env.update(PYTHONPATH=str(REPO), **environment)
    completed = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1]), completed.stderr


def test_reproducible_mode_pins_the_kernels_before_torch_loads_and_puts_rnnlabs_in_place(tmp_path: Path) -> None:
    settings, stderr = probe(tmp_path)
    assert settings["reproducible"] is True
    assert settings["aten"] == "avx2" and settings["mkl_isa"] == "AVX2" and settings["openblas_threads"] == "1"
    assert settings["mkl_cbwr"] is None  # MKL's slow COMPATIBLE branch is no longer needed
    if "avx2" in Path("/proc/cpuinfo").read_text():
        assert settings["capability"] == "AVX2"  # AVX-512 machines too: the pin took effect
        assert settings["math"].startswith("rnnlab-gemm") and "warning" not in stderr
    assert settings["onednn"] is False  # oneDNN's LSTM bits depend on ISA and thread count
    assert settings["threads"] == len(os.sched_getaffinity(0))  # one per core: the count changes no bit
    assert settings["cublas"] == ":4096:8"


def test_the_switch_in_params_and_the_environment_override(tmp_path: Path) -> None:
    settings, _ = probe(tmp_path, params="runtime: {reproducible: false}\n")
    assert settings["reproducible"] is False and settings["mkl_isa"] is None and settings["onednn"] is True
    assert settings["math"] == "torch (MKL, oneDNN): machine-dependent"
    settings, _ = probe(tmp_path, params="runtime: {reproducible: false}\n", RNNLAB_REPRODUCIBLE="1")
    assert settings["reproducible"] is True and settings["aten"] == "avx2"
    settings, _ = probe(tmp_path, params=None, RNNLAB_THREADS="1")
    assert settings["reproducible"] is True  # no params.yaml: the default is on
    assert settings["threads"] == 1  # an explicit count wins (and is recorded)


def test_a_machine_without_the_kernels_falls_back_and_says_so(tmp_path: Path) -> None:
    settings, stderr = probe(tmp_path, RNNLAB_GEMM="0")
    assert settings["math"] == "torch (MKL), fallback: RNNLAB_GEMM=0 in the environment"
    assert "warning: reproducible math is not available here: RNNLAB_GEMM=0" in stderr


def test_retired_cross_vendor_key_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"runtime.cross_vendor was removed: reproducible mode now gives the same bits on "
                                          r"Intel and AMD CPUs. Delete the line."):
        parse_params({"runtime": {"reproducible": True, "cross_vendor": True}})


def test_torch_imported_first_is_reported(tmp_path: Path) -> None:
    settings, stderr = probe(tmp_path, before="import torch")
    assert "torch was imported before rnnlab.runtime.environment.configure()" in stderr
    assert settings["aten"] == "avx2"  # set, but too late for the kernels: hence the warning


def test_requested_follows_the_params_unless_the_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.SWITCH, raising=False)
    assert runtime.requested(RuntimeConfig(reproducible=False)) is False
    assert runtime.requested(None) is True
    monkeypatch.setenv(runtime.SWITCH, "off")
    assert runtime.requested(RuntimeConfig()) is False


def test_cuda_gets_deterministic_algorithms(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, warn_only=False: calls.append((mode, warn_only)))
    fake_cudnn = SimpleNamespace(deterministic=False, benchmark=True)
    monkeypatch.setattr(torch.backends, "cudnn", fake_cudnn)
    runtime.apply_torch_settings("cuda")
    assert calls == [(True, True)]
    assert fake_cudnn.deterministic is True and fake_cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # set before CUDA could start
    assert runtime.math_library("cuda") == "cuBLAS/cuDNN, deterministic algorithms"


def test_cuda_keeps_its_fast_kernels_when_reproducible_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "reproducible", lambda: False)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: pytest.fail("determinism asked for"))
    fake_cudnn = SimpleNamespace(deterministic=False, benchmark=True)
    monkeypatch.setattr(torch.backends, "cudnn", fake_cudnn)
    assert runtime.apply_torch_settings("cuda") == []
    assert fake_cudnn.deterministic is False and fake_cudnn.benchmark is True
    assert runtime.math_library("cuda") == "cuBLAS/cuDNN: non-deterministic"


def test_cpu_runs_do_not_switch_on_cuda_determinism(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: pytest.fail("CUDA-only setting used"))
    runtime.apply_torch_settings("cpu")


def test_result_environment_names_the_gpu_and_its_software_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    monkeypatch.setattr(runtime, "nvidia_driver", lambda: "570.86.15")
    environment = runtime.result_environment(torch.device("cuda"))
    assert environment["device"] == "cuda" and environment["gpu"] == "NVIDIA H200"
    assert (environment["cuda"], environment["cudnn"], environment["driver"]) == ("12.8", 91002, "570.86.15")
    cpu = runtime.result_environment(torch.device("cpu"))
    assert set(cpu) == {"reproducible", "math", "cpu_capability", "torch", "libc", "device"}
    assert isinstance(cpu["torch"], str) and type(cpu["torch"]) is str  # plain str: weights_only loads it
    # The review calls a CPU run and a GPU run different environments, naming what differs.
    assert environment_difference({"environment": cpu}, {"environment": environment}) == "cuda, cudnn, device, driver, gpu, math"


@pytest.mark.parametrize(("text", "version"), [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n", "550.54.15"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16)\n", "570.86.15"),
    ("something else\n", "unknown"),
])
def test_the_nvidia_driver_version_is_read_from_the_driver(text: str, version: str, tmp_path: Path) -> None:
    (tmp_path / "version").write_text(text)
    assert runtime.nvidia_driver(tmp_path / "version") == version
    assert runtime.nvidia_driver(tmp_path / "absent") == "unknown"


def test_machine_environment_names_the_cpu() -> None:
    machine = runtime.machine_environment()
    assert machine["cpu_model"] and machine["cpu_cores"] >= 1 and machine["threads"] >= 1


def test_dropout_mask_comes_from_torch_rand_not_bernoulli(monkeypatch: pytest.MonkeyPatch) -> None:
    # bernoulli_ draws with MKL's VSL generator on Intel and ATen's elsewhere: it must not be used.
    monkeypatch.setattr(torch.Tensor, "bernoulli_", lambda *a, **k: pytest.fail("bernoulli_ used"))
    inputs = torch.ones(64, 32)
    torch.manual_seed(3)
    dropped = Dropout(0.25).train()(inputs)
    torch.manual_seed(3)
    expected = (torch.rand(64, 32) >= 0.25).float() / 0.75
    assert torch.equal(dropped, expected)
    assert torch.equal(Dropout(0.25).eval()(inputs), inputs)
    assert torch.equal(Dropout(0.0).train()(inputs), inputs)


def test_keep_mask_drops_about_p_and_rescales() -> None:
    torch.manual_seed(0)
    mask = keep_mask((100_000,), 0.3, torch.ones(1))
    assert abs(float((mask == 0).float().mean()) - 0.3) < 0.01
    assert torch.allclose(mask[mask > 0], torch.tensor(1 / 0.7))
