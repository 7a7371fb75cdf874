"""Live progress bars for the long loops: training batches, evaluation, gradient diagnostics.

tqdm draws them on stderr only when stderr is a terminal (`disable=None`): under `dvc queue`, CI or a
redirected log they stay silent, and the per-epoch lines are all that is printed, as before. A bar
only reads numbers the loop has already computed (no extra torch op, no random draw), so the weights
are bit-identical with or without a terminal. Tokens/s shown here never reach a DVC output.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def progress_bar(total: int, description: str, unit: str = "batch") -> tqdm:
    """A transient bar (cleared when done, so the per-epoch line stays the only record)."""
    # sys.stderr looked up at call time: a test can put a fake terminal there.
    return tqdm(total=total, desc=description, unit=unit, leave=False, disable=None, file=sys.stderr, dynamic_ncols=True)


class Throughput:
    """Tokens per second since creation, for a bar's postfix."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.tokens = 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def per_second(self) -> float:
        return self.tokens / max(time.perf_counter() - self.started, 1e-9)


def show_running(bar: tqdm, throughput: Throughput, loss: float | None = None, accuracy: float | None = None) -> None:
    """Advance `bar` by one batch and show the running loss, accuracy and tokens/s."""
    if not bar.disable:  # formatting is skipped when nobody sees it
        postfix = {}
        if loss is not None:
            postfix["loss"] = f"{loss:.4f}"
        if accuracy is not None:
            postfix["acc"] = f"{accuracy:.4f}"
        postfix["tok/s"] = f"{throughput.per_second():,.0f}"
        bar.set_postfix(postfix, refresh=False)
    bar.update(1)
