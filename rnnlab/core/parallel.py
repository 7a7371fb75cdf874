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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a block that allocates millions of small objects.

    The text stages build millions of token strings and lists and create no reference cycles;
    left on, the collector rescans them over and over (measured: ~40% of tokenizing time).
    Reference counting still frees everything; the collector is restored afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def children_stop_quietly(ignore_interrupt: bool = False) -> Iterator[None]:
    """Fork worker processes inside this block: they start with SIGTERM's default action (so terminating
    them kills them, instead of raising KeyboardInterrupt in multiprocessing's own code, which prints a
    traceback beside the parent's one-line error) and, with `ignore_interrupt`, ignoring SIGINT (a Ctrl-C
    reaches the whole process group; the parent then terminates them). This process's handlers are
    restored after the block. Must run in the main thread, as signal.signal does.
    """
    changes = {signal.SIGTERM: signal.SIG_DFL} | ({signal.SIGINT: signal.SIG_IGN} if ignore_interrupt else {})
    previous = {number: signal.signal(number, handler) for number, handler in changes.items()}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


T = TypeVar("T")


class ForkedCall(Generic[T]):
    """`function(*args)` in a forked child process, so a second core works beside this process.

    Fork shares this process's memory copy-on-write, so large arguments (review texts) are not
    pickled; only the result, or the exception the call raised, comes back through a pipe.
    Use as a context manager: leaving the block early terminates the child (SIGTERM, so its
    atomic writes clean up) instead of leaving it running.
    """

    def __init__(self, function: Callable[..., T], *args: Any) -> None:
        context = multiprocessing.get_context("fork")
        self._receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_call_and_send, args=(sender, function, args))
        # The child starts with SIGTERM's default action and turns it into KeyboardInterrupt only
        # around `function` (which may have temporaries to clean up): a SIGTERM from a parent that
        # leaves early then never raises in multiprocessing's own start-up or exit code, which would
        # print a traceback beside the parent's one-line error.
        with children_stop_quietly():
            self._process.start()
        sender.close()

    def result(self) -> T:
        """Wait for the child; return its result or re-raise its exception here."""
        try:
            succeeded, value = self._receiver.recv()
        except EOFError:
            self._process.join()
            raise UserError(f"A worker process died (exit code {self._process.exitcode}); rerun the stage.") from None
        self._process.join()
        if not succeeded:
            raise value
        return value

    def __enter__(self) -> ForkedCall[T]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._receiver.close()


def _call_and_send(sender: Any, function: Callable[..., Any], args: tuple) -> None:
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        outcome = (True, function(*args))
    except BaseException as error:  # KeyboardInterrupt too: the parent decides what to do
        outcome = (False, error)
    # The work is over (its atomic writes finished or cleaned up): back to the default action.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(BrokenPipeError):
        try:
            sender.send(outcome)
        except Exception as error:  # an unpicklable result or exception
            sender.send((False, RuntimeError(f"worker failed: {outcome[1]!r} ({error})")))
