"""One task's gradient profiles (plots/gradients/<variant>.json) -> PNG: ||dL/dx|| against steps back from the
last symbol on a log scale, trained (solid) and at initialisation (dashed), one colour per variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlab.core.errors import UserError
from rnnlab.core.files import read_json
from rnnlab.reporting.figures import Panel, Series, line_figure


def draw(profiles: dict[str, list[dict[str, Any]]], title: str, path: Path) -> None:
    series = []
    for color, (name, rows) in enumerate(profiles.items()):
        try:  # the rows hold log10 norms, the axis is log
            steps = [row["steps_back"] for row in rows]
            trained = [10.0 ** row["log10_grad_norm_trained"] for row in rows]
            initial = [10.0 ** row["log10_grad_norm_init"] for row in rows]
        except (KeyError, TypeError) as error:
            raise UserError(f"gradient profile of {name} lacks {error}; rerun its evaluate stage (`dvc repro`).") from error
        series += [Series(f"{name} trained", steps, trained, color), Series(f"{name} init", steps, initial, color, dashed=True)]
    if not any(line.x for line in series):
        raise UserError("the gradient profiles hold no steps; rerun the evaluate stages (`dvc repro`).")
    line_figure(Panel(series, title, "steps back from the last symbol", "mean ||dL/dx_t||", log_y=True), path)


def draw_task(profiles_dir: Path, variants: list[str], task: str, out: Path) -> None:
    hint = "Run its evaluate stage (`dvc repro`)."
    profiles = {name: read_json(profiles_dir / f"{name}.json", f"gradient profile of {name}", hint) for name in variants}
    draw(profiles, f"{'Temporal-order task' if task == 'order' else task}: gradient reaching each input step", out)
    print(f"gradient_figure: {len(profiles)} variants -> {out}")
