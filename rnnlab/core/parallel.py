"""Work on the second core, and big allocation bursts without the cyclic garbage collector."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import signal
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from rnnlab.core.cli import raise_keyboard_interrupt
from rnnlab.core.errors import UserError

T = TypeVar("T")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The text stages build millions of token strings and lists and no reference cycles: the collector
    would rescan them over and over (measured: ~40% of tokenizing time). Reference counting still frees them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class ForkedCall(Generic[T]):
    """`function(*args)` in a forked child: its arguments (review texts) are shared copy-on-write, not pickled;
    the result or the exception comes back through a pipe. Leaving the block early terminates the child."""

    def __init__(self, function: Callable[..., T], *args: Any) -> None:
        context = multiprocessing.get_context("fork")
        self._receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_call_and_send, args=(sender, function, args))
        # The child starts with SIGTERM's default action (turned into KeyboardInterrupt only around `function`):
        # a SIGTERM raising in multiprocessing's own code would print a traceback beside the parent's one line.
        previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            self._process.start()
        finally:
            signal.signal(signal.SIGTERM, previous)
        sender.close()

    def result(self) -> T:
        """Wait for the child; return its result or re-raise its exception here."""
        try:
            succeeded, value = self._receiver.recv()
        except EOFError:  # the child died without a word
            succeeded, value = False, None
        self._process.join()
        if succeeded:
            return value
        raise value or UserError(f"A worker process died (exit code {self._process.exitcode}); rerun the stage.")

    def __enter__(self) -> ForkedCall[T]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._process.is_alive():
            self._process.terminate()  # SIGTERM: its atomic writes clean up
        self._process.join()
        self._receiver.close()


def _call_and_send(sender: Any, function: Callable[..., Any], args: tuple) -> None:
    with contextlib.suppress(KeyboardInterrupt):  # the parent's SIGTERM landed as the work ended: it reads nothing
        signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
        try:
            outcome = (True, function(*args))
        except BaseException as error:  # KeyboardInterrupt too: the parent decides what to do
            outcome = (False, error)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the work is over (its writes finished or cleaned up)
        with contextlib.suppress(BrokenPipeError):
            try:
                sender.send(outcome)
            except Exception as error:  # an unpicklable result or exception
                sender.send((False, RuntimeError(f"worker failed: {outcome[1]!r} ({error})")))
