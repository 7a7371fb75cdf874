"""The exit contract every stage and tool shares: user errors are one line and exit 2, interrupts exit 130."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from rnnlab.core.errors import UserError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
INTERRUPTED = (
    "interrupted: no output was replaced, each is as it was before this run (nothing is half-written); rerun `dvc repro`."
)


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """Stop the stage; later stop signals are ignored, so they cannot cut its cleanup short. (When `dvc`
    dies, each of its threads that exits sends the parent-death signal again: measured, two SIGTERMs.)"""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def stop_with_parent(signal_number: int = signal.SIGTERM) -> bool:
    """Have Linux send `signal_number` (0: none) when the parent dies: `kill -KILL` of `dvc repro` would otherwise leave
    its stage running as an orphan that the next `dvc repro` races with. Returns whether the request was made."""
    parent = os.getppid()
    try:
        made = sys.platform.startswith("linux") and ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if made and signal_number and os.getppid() != parent:  # the parent died just before the request took effect
        os.kill(os.getpid(), signal_number)
    return made


def run_cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run an entry point's main: user errors print one line and exit 2; interrupts (SIGTERM too, so `finally`
    blocks clean up) exit 130."""
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    # Also SIGINT: a background job of a non-interactive shell inherits it ignored, and Ctrl-C must still stop it.
    signal.signal(signal.SIGINT, raise_keyboard_interrupt)
    # Only under DVC (which sets DVC_STAGE): a stage run by hand with `nohup ... &` must outlive its shell.
    if os.environ.get("DVC_STAGE"):
        stop_with_parent(signal.SIGTERM)
    try:
        main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
