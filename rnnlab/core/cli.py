"""The exit contract every stage and tool shares: user errors are one line and exit 2, interrupts exit 130."""

from __future__ import annotations

import signal
import sys
from typing import Any, Callable

from rnnlab.core.errors import UserError


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run an entry point's main: user errors print one clear line and exit 2; interrupts exit 130.

    SIGTERM is turned into KeyboardInterrupt so `finally` blocks remove temporary files.
    """
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    # A process started as a background job of a non-interactive shell inherits SIGINT ignored, and
    # Python then keeps ignoring it; a stage must still stop cleanly on Ctrl-C (DVC forwards it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no output was written for the unfinished step; rerun `dvc repro`.", file=sys.stderr)
        sys.exit(130)
