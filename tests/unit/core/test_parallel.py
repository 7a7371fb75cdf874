"""The forked worker (rnnlab/core/parallel.py): a stop signal that lands as its work ends prints nothing."""

from __future__ import annotations

import multiprocessing
import signal

import pytest

from rnnlab.core import parallel


def test_a_sigterm_landing_as_the_work_ends_is_no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent's SIGTERM (it leaves the block after its own failure) can fire the child's handler while the
    child restores the default action; seen in a test run as a KeyboardInterrupt traceback beside the one line."""
    real_signal = signal.signal

    def handler_fires_on_restore(number: int, action: object) -> object:
        if action is signal.SIG_DFL:
            raise KeyboardInterrupt(f"signal {number}")
        return real_signal(number, action)

    receiver, sender = multiprocessing.Pipe(duplex=False)
    monkeypatch.setattr(parallel.signal, "signal", handler_fires_on_restore)
    try:
        parallel._call_and_send(sender, lambda: 1 / 0, ())  # must return quietly, sending nothing
    finally:
        real_signal(signal.SIGTERM, signal.SIG_DFL)
    assert not receiver.poll()
