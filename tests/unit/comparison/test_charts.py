"""The review's chart worker: how it stops when the review fails."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from rnnlab.comparison.charts import ChartDrawer
from rnnlab.core.cli import raise_keyboard_interrupt
from rnnlab.core.errors import UserError


def touch_then_sleep(path: str) -> None:
    Path(path).touch()
    time.sleep(60)


def test_a_failed_review_stops_its_busy_chart_worker_without_a_traceback(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """CI once printed the worker's KeyboardInterrupt traceback beside the review's one-line error: the worker
    had inherited the CLI's SIGTERM handler, and the pool's terminate() reached it mid-chart."""
    started = tmp_path / "started"
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # as run_cli installs it
    try:
        with pytest.raises(UserError), ChartDrawer(tmp_path) as drawer:
            drawer.pool.apply_async(touch_then_sleep, (str(started),))
            deadline = time.monotonic() + 60
            while not started.exists():  # the worker is inside a job (after its matplotlib warm-up)
                assert time.monotonic() < deadline, "the chart worker never started its job"
                time.sleep(0.01)
            stopping = time.monotonic()
            raise UserError("the review failed")
        assert time.monotonic() - stopping < 10  # killed, not waited for
        assert signal.getsignal(signal.SIGTERM) is raise_keyboard_interrupt  # this process's handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "Traceback" not in capfd.readouterr().err
