"""Deterministic CPU math for torch: the same bits on every x86-64 CPU with AVX2+FMA, any thread count.

`enable()` builds (once, cached) and loads a small C++ library that takes over ATen's float32/float64 CPU kernels:
mm, addmm, bmm, baddbmm, addmv (every output element one sequential FMA chain over k, so neither MKL's per-CPU
path nor the thread split matters); tanh, sigmoid, exp, log, sqrt (elementwise.h says why); and, with
fused_recurrent, nn.RNN/LSTM/GRU.forward as one C++ autograd node per layer (FusedLayer). It never raises: when
the library can't be used, the status says why and torch's own kernels stay. RNNLAB_GEMM=0 skips it; the products
run on AVX-512F tiles where the CPU has them, else (or with RNNLAB_GEMM_ISA=avx2) on AVX2 tiles: same bits.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

NAME = "rnnlab-gemm 1"  # gemm.cpp kVersion: bumped whenever the numerics change
ISA = "AVX2+FMA"
ISA_SWITCH = "RNNLAB_GEMM_ISA"  # auto (default), avx2 or avx512f: which micro-kernels run
FALLBACK = "torch's own MKL kernels run instead (their bits depend on the machine)"


@dataclass(frozen=True)
class GemmStatus:
    active: bool
    fallback_reason: str = ""  # one line, when not active
    tiles: str | None = None  # the micro-kernels in use, "avx512f" or "avx2": speed only, not in the stamp


def enable(fused_recurrent: bool = True) -> GemmStatus:
    """Route float32/float64 CPU math to the deterministic kernels; idempotent, never raises."""
    status = load()
    if status.active:
        torch.ops.rnnlab_gemm.set_enabled(True)
        install(fused_recurrent)
    return status


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def inactive(reason: str) -> GemmStatus:
    return GemmStatus(False, f"{reason}; {FALLBACK}")


@functools.cache  # building and loading: once per process
def load() -> GemmStatus:
    if os.environ.get("RNNLAB_GEMM", "").strip().lower() in ("0", "false", "off", "no"):
        return inactive("RNNLAB_GEMM=0 in the environment")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return inactive(f"not an x86-64 CPU ({platform.machine()})")
    missing = {"avx2", "fma"} - cpu_flags()
    if missing:
        return inactive(f"the CPU lacks {' and '.join(sorted(missing)).upper()}")
    try:
        torch.ops.load_library(str(build()))  # the cache key covers the sources: its version is NAME (a test checks)
    except BuildError as error:
        return inactive(str(error))
    except (OSError, RuntimeError) as error:  # a damaged cache entry, an ABI mismatch
        return inactive(f"loading the library failed: {str(error).splitlines()[0]}")
    requested = os.environ.get(ISA_SWITCH, "").strip().lower() or "auto"
    try:
        return GemmStatus(True, tiles=torch.ops.rnnlab_gemm.select_isa(requested))
    except RuntimeError as error:  # an unknown name, or avx512f on a CPU without it
        return inactive(f"{ISA_SWITCH}={requested}: {str(error).splitlines()[0]}")


# The build: one g++ call, cached in $XDG_CACHE_HOME/rnn-lab/gemm/<key>/ per (sources, flags, torch, compiler).
# Not torch.utils.cpp_extension.load: same flags, same bits (measured), but every process that loads the
# cached library pays ~0.5 s for it (setuptools, a ninja check) against ~0.04 s here, in every stage and test.

HERE = Path(__file__).resolve().parent
SOURCES = tuple(sorted(path.name for path in HERE.iterdir() if path.suffix in (".cpp", ".h")))
TORCH_LIBRARIES = str(Path(torch.__file__).resolve().parent / "lib")
# -ffp-contract=off and no -ffast-math: every FMA in the result is one the source asks for, nothing is
# reassociated. -fopenmp: ATen's parallel_for is a header template around `#pragma omp parallel`.
FLAGS = ("-O3", "-std=c++20", "-mavx2", "-mfma", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", "-fPIC", "-shared",
         "-fvisibility=hidden", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")  # fmt: skip


class BuildError(Exception):
    """The library could not be built; the message is one line for the user."""


def build() -> Path:
    """The cached library, compiled first if needed (under a lock: once, even with racing processes)."""
    if shutil.which("g++") is None:
        raise BuildError("no g++ on PATH (install it: apt-get install g++)")
    compiler = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=False).stdout
    digest = hashlib.sha256(b"".join((HERE / name).read_bytes() for name in SOURCES))
    for part in (*FLAGS, torch.__version__, TORCH_LIBRARIES, compiler):
        digest.update(part.encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = cache / "rnn-lab" / "gemm" / digest.hexdigest()[:16]
    library = directory / "librnnlab_gemm.so"
    try:
        if library.is_file():
            return library
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(directory / "lock"):
            if library.is_file():  # another process built it while this one waited
                return library
            from torch.utils.cpp_extension import include_paths  # ~0.25 s (setuptools): only when compiling

            temporary = directory / f".build-{os.getpid()}.so"  # renamed into place once whole
            try:
                command = ["g++", *FLAGS, *(f"-I{path}" for path in include_paths()), str(HERE / "gemm.cpp"), "-o",
                           str(temporary), f"-L{TORCH_LIBRARIES}", f"-Wl,-rpath,{TORCH_LIBRARIES}", "-ltorch_cpu", "-lc10"]  # fmt: skip
                result = subprocess.run(command, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    raise BuildError(
                        "g++ failed: " + " | ".join([line for line in result.stderr.splitlines() if line.strip()][-6:])
                    )
                os.replace(temporary, library)
                return library
            finally:
                temporary.unlink(missing_ok=True)
    except OSError as error:
        raise BuildError(f"the build cache {directory} is not usable ({error}); set XDG_CACHE_HOME") from error


# nn.RNN / nn.LSTM / nn.GRU forward on CPU through the fused layers of recurrent.h: `install()` replaces the classes'
# `forward` (state_dict and checkpoints untouched) with one that runs each layer and direction as one autograd node.
# Calls it can't take (packed sequences, unbatched input, LSTM projections, GPU, other dtypes, tracing) run torch's
# own forward. Forward results equal torch's loop on the same GEMM bit for bit; gradients are summed in another order.

CLASSES: tuple[type[nn.RNNBase], ...] = (nn.RNN, nn.LSTM, nn.GRU)
_original: dict[type[nn.RNNBase], Any] = {}  # torch's own forward of each class


class FusedLayer(torch.autograd.Function):
    """One layer-direction over a time-major sequence: (T, B, I) -> output (T, B, H), h_n, c_n."""

    @staticmethod
    def forward(ctx: Any, cell: str, reverse: bool, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
                w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor | None, b_hh: torch.Tensor | None) -> tuple[torch.Tensor, ...]:  # fmt: skip
        output, h_n, c_n, time_major, *saved = torch.ops.rnnlab_gemm.recurrent_forward(
            cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse
        )
        ctx.cell, ctx.reverse, ctx.has_bias = cell, reverse, b_ih is not None
        # time_major: the forward's contiguous copy of a batch-first x, kept for backward's weight-gradient product.
        ctx.save_for_backward(x if time_major is None else time_major, h0, c0, w_ih, w_hh, output, *saved)
        return (output, h_n, c_n) if c0 is not None else (output, h_n)

    @staticmethod
    def backward(
        ctx: Any, grad_output: torch.Tensor, grad_hn: torch.Tensor, grad_cn: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, ...]:
        x, h0, c0, w_ih, w_hh, output, *saved = ctx.saved_tensors
        # needs_input_grad[2]: no input gradient for a one-hot input (the order task)
        grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, *grad_biases = torch.ops.rnnlab_gemm.recurrent_backward(
            ctx.cell, grad_output, grad_hn, grad_cn, x, h0, c0, w_ih, w_hh, ctx.has_bias, ctx.reverse, output, saved,
            ctx.needs_input_grad[2],
        )  # fmt: skip
        biases = grad_biases if ctx.has_bias else [None, None]
        return None, None, grad_x, grad_h0, grad_c0 if c0 is not None else None, grad_w_ih, grad_w_hh, *biases


def fusable(module: nn.RNNBase, input: Any, hx: Any) -> bool:
    """Whether the fused layers can run this call; otherwise torch's own forward does."""
    if not isinstance(input, torch.Tensor) or input.dim() != 3 or input.numel() == 0:
        return False
    if input.dtype not in (torch.float32, torch.float64) or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    states = hx if isinstance(hx, tuple) else (hx,)
    tensors = [input, *module.parameters(), *(state for state in states if state is not None)]
    return not getattr(module, "proj_size", 0) and all(t.device.type == "cpu" and t.dtype == input.dtype for t in tensors)


def fused_forward(self: nn.RNNBase, input: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, Any]:
    """Drop-in nn.RNN/LSTM/GRU.forward: same arguments, same results and state_dict."""
    if not fusable(self, input, hx):
        base = next(cls for cls in type(self).__mro__ if cls in _original)  # the patched class a subclass inherits
        return _original[base](self, input, hx)
    lstm = self.mode == "LSTM"
    directions = 2 if self.bidirectional else 1
    if hx is None:
        zeros = input.new_zeros(self.num_layers * directions, input.size(0 if self.batch_first else 1), self.hidden_size)
        hx = (zeros, zeros) if lstm else zeros
    self.check_forward_args(input, hx, None)
    h0, c0 = hx if lstm else (hx, None)
    sequence = input.transpose(0, 1) if self.batch_first else input  # (T, B, F), as torch's own loop reads it
    finals: list[tuple[torch.Tensor, ...]] = []
    for layer in range(self.num_layers):
        outputs = []
        for direction in range(directions):
            index, suffix = layer * directions + direction, f"_l{layer}" + ("_reverse" if direction else "")
            weights = [getattr(self, f"{name}{suffix}") for name in ("weight_ih", "weight_hh")]
            biases = [getattr(self, f"{name}{suffix}") for name in ("bias_ih", "bias_hh")] if self.bias else [None, None]
            output, *final = FusedLayer.apply(self.mode, direction == 1, sequence, h0[index],
                                              c0[index] if c0 is not None else None, *weights, *biases)  # fmt: skip
            outputs.append(output)
            finals.append(tuple(final))
        sequence = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
        if self.dropout and self.training and layer < self.num_layers - 1:
            # The mask from torch.rand, as the model's Dropout: F.dropout's bernoulli_ draws with MKL's generator on Intel.
            keep = torch.rand(sequence.shape, dtype=sequence.dtype) >= self.dropout
            sequence = sequence * (keep.to(sequence.dtype) / (1.0 - self.dropout))
    output = sequence.transpose(0, 1) if self.batch_first else sequence
    h_n = torch.stack([final[0] for final in finals])
    return output, ((h_n, torch.stack([final[1] for final in finals])) if lstm else h_n)


def install(fused: bool) -> None:
    """Route nn.RNN/LSTM/GRU.forward through the fused layers, or give torch's own back; idempotent."""
    for cls in CLASSES:
        _original.setdefault(cls, cls.forward)
        cls.forward = fused_forward if fused else _original[cls]
