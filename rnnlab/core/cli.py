"""The exit contract every stage and tool shares: user errors are one line and exit 2, interrupts exit 130."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from rnnlab.core import files
from rnnlab.core.errors import UserError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Set by DVC in the environment of every stage command it runs (DVC_ROOT too).
DVC_STAGE_ENV = "DVC_STAGE"


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """Stop the stage; later stop signals are ignored, so they cannot cut its cleanup short. (When `dvc`
    dies, each of its threads that exits sends the parent-death signal again: measured, two SIGTERMs.)"""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def stop_with_parent(signal_number: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `signal_number` to this process when its parent dies (prctl PR_SET_PDEATHSIG).

    `kill -KILL` of `dvc repro` alone would otherwise leave its stage running as an orphan, which the
    next `dvc repro` races with; SIGTERM stops the stage through the same cleanup as Ctrl-C. 0 clears
    the request. Returns whether it was made (False off Linux, where this is a no-op).
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if signal_number and os.getppid() != parent:  # the parent died just before the request took effect
        os.kill(os.getpid(), signal_number)
    return True


def run_cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run an entry point's main: user errors print one clear line and exit 2; interrupts exit 130.

    SIGTERM is turned into KeyboardInterrupt so `finally` blocks remove temporary files; a stage that
    DVC runs also gets SIGTERM when `dvc` itself dies (even by SIGKILL), instead of running on alone.
    """
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    # A process started as a background job of a non-interactive shell inherits SIGINT ignored, and
    # Python then keeps ignoring it; a stage must still stop cleanly on Ctrl-C (DVC forwards it).
    signal.signal(signal.SIGINT, raise_keyboard_interrupt)
    # Only under DVC: a stage run by hand in the background (`nohup python -m stages.train ... &`)
    # must outlive the shell that started it.
    if os.environ.get(DVC_STAGE_ENV):
        stop_with_parent(signal.SIGTERM)
    try:
        main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(files.INTERRUPTED, file=sys.stderr)
        sys.exit(130)
