"""matplotlib figures (rnnlab/reporting/figures.py): read the PNG back and look at it,
and check that a rerun writes the same bytes (the figure is a DVC output)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colors
from matplotlib import image as mpimg

from rnnlab.core.errors import UserError
from rnnlab.reporting.figures import DPI, PALETTE, SIZE_INCHES, draw_gradients
from tests.support.stage_runner import assert_user_error, repo_params, run_stage, write_params


def profile_rows(slope: float, steps: int = 60) -> list[dict[str, float]]:
    return [
        {"steps_back": step, "log10_grad_norm_init": slope * step, "log10_grad_norm_trained": slope * step / 5, "sequences": 10}
        for step in range(steps)
    ]


def pixels(path: Path) -> np.ndarray:
    """(height, width, 3) floats in [0, 1]."""
    return mpimg.imread(path)[:, :, :3]


def has_colour(image: np.ndarray, name: str, tolerance: float = 0.02) -> bool:
    target = np.array(colors.to_rgb(name))
    return bool((np.abs(image - target).max(axis=2) < tolerance).any())


def test_gradient_figure_reads_back_as_a_drawn_chart(tmp_path: Path) -> None:
    path = tmp_path / "figure.png"
    draw_gradients({"order_rnn": profile_rows(-0.3), "order_lstm": profile_rows(-0.05)}, "title", path)
    image = pixels(path)
    assert image.shape == (round(SIZE_INCHES[1] * DPI), round(SIZE_INCHES[0] * DPI), 3)
    not_white = (image < 0.95).any(axis=2).mean()
    assert 0.02 < not_white < 0.5, not_white  # drawn on, but not a filled block
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # anti-aliased lines and text, not a flat fill
    # One colour per variant, shared by its trained and init lines; a third palette colour is unused.
    assert has_colour(image, PALETTE[0]) and has_colour(image, PALETTE[1])
    assert not has_colour(image, PALETTE[2])


def test_a_rerun_writes_identical_bytes(tmp_path: Path) -> None:
    profiles = {"order_rnn": profile_rows(-0.3), "order_gru": profile_rows(-0.1)}
    draw_gradients(profiles, "title", tmp_path / "a.png")
    draw_gradients(profiles, "title", tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert b"Software" not in (tmp_path / "a.png").read_bytes()  # no matplotlib version in the file


def test_more_lines_draw_more_ink(tmp_path: Path) -> None:
    one = {"order_rnn": profile_rows(-0.3)}
    draw_gradients(one, "t", tmp_path / "one.png")
    draw_gradients({**one, "order_gru": profile_rows(-0.1)}, "t", tmp_path / "two.png")
    ink = {name: (pixels(tmp_path / f"{name}.png") < 0.95).any(axis=2).sum() for name in ("one", "two")}
    assert ink["two"] > ink["one"]


def test_empty_profiles_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no steps"):
        draw_gradients({"order_rnn": []}, "t", tmp_path / "y.png")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_stage_names_a_profile_without_its_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, repo_params())
    (tmp_path / "profiles").mkdir()
    for name in repo_params()["order"]["variants"]:
        rows = profile_rows(-0.1) if name != "order_gru" else [{"steps_back": 0}]
        (tmp_path / "profiles" / f"{name}.json").write_text(json.dumps(rows))
    code, _out, err = run_stage(
        "stages.gradient_figure", ["--task", "order", "--profiles", "profiles", "--out", "f.png"], capsys
    )
    assert_user_error(code, err, "order_gru", "log10_grad_norm_trained", "dvc repro")
    assert not (tmp_path / "f.png").exists()
