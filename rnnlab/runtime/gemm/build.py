"""Build the GEMM library with g++ once per (source, flags, torch, compiler) and cache it.

No ninja, no setuptools: one g++ call. The cache lives in $XDG_CACHE_HOME/rnn-lab/gemm/<key>/
(default ~/.cache/...). Two processes starting at once build it once: the build runs under an
exclusive file lock, into a temporary file renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnlab.core.imports import COMPILED_SOURCES

HERE = Path(__file__).resolve().parent
# Every C++ file beside this module: the files the code stage fingerprints (rnnlab/core/imports.py), one list.
SOURCES = tuple(sorted(path.name for path in HERE.iterdir() if path.suffix in COMPILED_SOURCES))
LIBRARY_NAME = "librnnlab_gemm.so"
COMPILER = "g++"
# -ffp-contract=off and no -ffast-math: the compiler must not fuse the epilogue's multiply and add
# or reassociate anything; every FMA in the result is one the source asks for. -fopenmp: ATen's
# parallel_for is a header template around `#pragma omp parallel` (it joins torch's own libgomp).
FLAGS = (
    "-O3",
    "-std=c++20",  # the standard torch 2.13 and its headers are built with
    "-mavx2",
    "-mfma",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-fopenmp",
    "-fPIC",
    "-shared",
    "-fvisibility=hidden",
)
ERROR_LINES = 6


class BuildError(Exception):
    """The library could not be built; the message is one line for the user."""


@dataclass(frozen=True)
class Built:
    path: Path
    compile_seconds: float  # 0.0 when it came from the cache


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rnn-lab" / "gemm"


def torch_library_dir() -> str:
    return str(Path(torch.__file__).resolve().parent / "lib")


def compiler_version() -> str:
    if shutil.which(COMPILER) is None:
        raise BuildError(f"no {COMPILER} on PATH (install it: apt-get install g++)")
    result = subprocess.run([COMPILER, "--version"], capture_output=True, text=True, check=False)
    return result.stdout


def abi_flag() -> str:
    return f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"


def command(output: Path, include_paths: list[str]) -> list[str]:
    library_dir = torch_library_dir()
    return [
        COMPILER, *FLAGS, abi_flag(), *(f"-I{path}" for path in include_paths), str(HERE / "gemm.cpp"),
        "-o", str(output), f"-L{library_dir}", f"-Wl,-rpath,{library_dir}", "-ltorch_cpu", "-lc10",
    ]  # fmt: skip


def cache_key() -> str:
    """Hash of what decides the library's bytes: sources, flags, torch (version, location), compiler."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((HERE / name).read_bytes())
    for part in (*FLAGS, abi_flag(), torch.__version__, torch_library_dir(), compiler_version()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def compile_library(target: Path) -> float:
    """g++ into a temporary file beside `target`, renamed into place; returns the compile seconds.

    Include paths from torch.utils.cpp_extension, imported only here: it costs ~0.25 s (setuptools),
    too much for every process that loads a cached build.
    """
    from torch.utils.cpp_extension import include_paths

    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".build-", suffix=".so", delete=False) as handle:
        temporary = Path(handle.name)
    try:
        started = time.perf_counter()
        result = subprocess.run(command(temporary, include_paths()), capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if line.strip()][-ERROR_LINES:]
            raise BuildError(f"{COMPILER} failed: " + " | ".join(errors))
        os.replace(temporary, target)
        return seconds
    finally:
        temporary.unlink(missing_ok=True)


def build() -> Built:
    """The cached library, building it first if needed (under a lock: once, even with racing processes)."""
    directory = cache_root() / cache_key()
    library = directory / LIBRARY_NAME
    if library.is_file():
        return Built(library, 0.0)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if library.is_file():  # another process built it while we waited
                return Built(library, 0.0)
            return Built(library, compile_library(library))
    except OSError as error:
        raise BuildError(f"the build cache {directory} is not usable ({error}); set XDG_CACHE_HOME") from error
