"""Torch's process-wide settings for a stage: denormal flush, threads, the device, the mode's kernels."""

from __future__ import annotations

import os
import sys

import torch

from rnnlab.core.errors import UserError
from rnnlab.runtime import environment


def setup_torch(device_name: str, threads: int = 0) -> torch.device:
    """Call first in a stage's work, before any parallel torch op starts the OpenMP workers.

    Flushing denormals matters: vanishing gradients (the subject of this project) underflow into
    denormal floats, which x86 CPUs process ~10x slower; measured here, one vanilla-RNN training
    step took 1.16 s with denormals and 0.12 s without. Worker threads inherit the FP mode at
    creation, hence "first".

    Threads: the RNNLAB_THREADS environment variable wins, then `threads` (the train.threads param),
    then torch's default of one per core. In reproducible mode the count changes no bit.

    Then the mode's torch settings, which in reproducible mode put rnnlab's kernels in place of ATen's
    (rnnlab/runtime/environment.py). Random draws are seeded where they start
    (rnnlab.model.classifier.initial_model), not here.
    """
    torch.set_flush_denormal(True)
    threads = int(os.environ.get("RNNLAB_THREADS") or threads)
    if threads > 0:
        torch.set_num_threads(threads)
    device = resolve_device(device_name)
    for warning in environment.apply_torch_settings(device.type):
        print(warning, file=sys.stderr)
    return device


def resolve_device(name: str) -> torch.device:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UserError("train.device=cuda but no CUDA GPU is available to torch here. Set train.device=auto or cpu.")
    if name == "mps" and not mps:
        raise UserError("train.device=mps but no Apple MPS device is available here. Set train.device=auto or cpu.")
    return torch.device(name)
