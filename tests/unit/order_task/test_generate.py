"""Properties of the temporal-order generator (stage `order_data`) and its params validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from rnnlab.config.params import OrderDataConfig, parse_params
from rnnlab.core.errors import ConfigError
from rnnlab.data.arrays import load_meta, load_split
from rnnlab.order_task.generate import CLASS_NAMES, INDEX, SYMBOLS, generate
from stages.order_data import main
from tests.support.stage_runner import write_params as write_repo_params

FILLER = [INDEX[symbol] for symbol in "abcd"]
MARKERS = [INDEX["X"], INDEX["Y"]]
# The class is the ordered pair of markers: XX -> Q, XY -> R, YX -> S, YY -> U.
EXPECTED_CLASS = {("X", "X"): "Q", ("X", "Y"): "R", ("Y", "X"): "S", ("Y", "Y"): "U"}


def make_config(**overrides: object) -> OrderDataConfig:
    raw = {"train_size": 8, "valid_size": 8, "test_size": 8, **overrides}
    return OrderDataConfig.from_dict(raw, "order.data")


def sample(count: int = 2000, seed: int = 0, **overrides: object) -> tuple[OrderDataConfig, np.ndarray, np.ndarray, np.ndarray]:
    config = make_config(**overrides)
    x, lengths, y = generate(count, config, np.random.default_rng(seed))
    return config, x, lengths, y


def marker_positions(row: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isin(row, MARKERS))


@pytest.mark.parametrize("lengths_and_windows", [
    {},  # the write-up's defaults: lengths 70-80, windows 10-20 and 50-60
    {"min_length": 100, "max_length": 110},  # the paper's hard setting, same windows
    {"min_length": 5, "max_length": 7, "early_window": [1, 1], "late_window": [3, 3]},  # tightest legal case
])
def test_every_sequence_has_the_documented_structure(lengths_and_windows: dict[str, object]) -> None:
    config, x, lengths, y = sample(**lengths_and_windows)
    assert x.shape == (len(y), config.max_length) and x.dtype == np.int64
    assert lengths.min() >= config.min_length and lengths.max() <= config.max_length
    for row, length, label in zip(x, lengths, y):
        assert row[0] == INDEX["E"], "starts with E"
        assert row[length - 1] == INDEX["B"], "ends with B at length - 1"
        assert np.all(row[length:] == INDEX["<pad>"]), "post-padded"
        inside = row[1 : length - 1]
        assert np.isin(inside, FILLER + MARKERS).all(), "only a/b/c/d/X/Y between E and B"
        positions = marker_positions(row)
        assert len(positions) == 2, "exactly two markers in the whole sequence"
        early, late = positions
        assert config.early_window[0] <= early <= config.early_window[1]
        assert config.late_window[0] <= late <= config.late_window[1]
        pair = (SYMBOLS[row[early]], SYMBOLS[row[late]])
        assert CLASS_NAMES[label] == EXPECTED_CLASS[pair]


def test_both_ends_of_the_length_range_and_every_window_position_occur() -> None:
    # Inclusive bounds: an off-by-one in rng.integers would silently drop max_length or a window edge.
    config, x, lengths, _y = sample(count=4000)
    assert set(lengths.tolist()) == set(range(config.min_length, config.max_length + 1))
    markers = np.array([marker_positions(row) for row in x])
    assert set(markers[:, 0].tolist()) == set(range(config.early_window[0], config.early_window[1] + 1))
    assert set(markers[:, 1].tolist()) == set(range(config.late_window[0], config.late_window[1] + 1))


@pytest.mark.parametrize("count", [4, 1000, 1003])
def test_classes_are_balanced_exactly(count: int) -> None:
    _config, _x, _lengths, y = sample(count=count)
    counts = np.bincount(y, minlength=len(CLASS_NAMES))
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == count


def test_each_marker_symbol_is_not_predictable_from_its_position() -> None:
    # If X and Y landed at different positions, a model could cheat by position; check both X and Y
    # occur at every early-window position.
    _config, x, _lengths, _y = sample(count=4000)
    early = np.array([marker_positions(row)[0] for row in x])
    symbols = x[np.arange(len(x)), early]
    for position in np.unique(early):
        assert set(symbols[early == position].tolist()) == set(MARKERS)


def test_same_seed_same_data_other_seed_other_data() -> None:
    _c, x1, l1, y1 = sample(count=500, seed=3)
    _c, x2, l2, y2 = sample(count=500, seed=3)
    _c, x3, l3, y3 = sample(count=500, seed=4)
    assert np.array_equal(x1, x2) and np.array_equal(l1, l2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert not np.array_equal(y1, y3)


def write_params(directory: Path, **data: object) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    params["order"]["data"].update(data)
    write_repo_params(directory, params)


def run_stage(directory: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.chdir(directory)
        main(["--out", str(out)])


def test_stage_writes_the_shared_format_deterministically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repository_params = Path("params.yaml").resolve()
    monkeypatch.chdir(repository_params.parent)
    sizes = {"train_size": 40, "valid_size": 12, "test_size": 8}
    first, second, other = tmp_path / "first", tmp_path / "second", tmp_path / "other"
    for directory, seed in ((first, 0), (second, 0), (other, 1)):
        directory.mkdir()
        write_params(directory, seed=seed, **sizes)
    for directory in (first, second, other):
        run_stage(directory, directory / "out", monkeypatch)

    meta = load_meta(first / "out")
    assert meta.input_size == len(SYMBOLS) and meta.class_names == CLASS_NAMES and meta.sequence_length == 80
    assert json.loads((first / "out" / "meta.json").read_text())["pad_index"] == INDEX["<pad>"] == 0
    for split, size in (("train", 40), ("valid", 12), ("test", 8)):
        assert len(load_split(first / "out", split)) == size
        for name in ("X", "lengths", "y"):
            a = (first / "out" / split / f"{name}.npy").read_bytes()
            assert a == (second / "out" / split / f"{name}.npy").read_bytes(), f"{split}/{name} not deterministic"
    assert (first / "out" / "train" / "X.npy").read_bytes() != (other / "out" / "train" / "X.npy").read_bytes()
    # The three splits are independent streams, not copies of one another.
    assert not np.array_equal(load_split(first / "out", "valid").x[:8], load_split(first / "out", "test").x)


def test_changing_one_split_size_leaves_the_other_splits_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path("params.yaml").resolve().parent)
    small, large = tmp_path / "small", tmp_path / "large"
    for directory, train_size in ((small, 20), (large, 60)):
        directory.mkdir()
        write_params(directory, train_size=train_size, valid_size=12, test_size=8)
        run_stage(directory, directory / "out", monkeypatch)
    for split in ("valid", "test"):
        assert (small / "out" / split / "X.npy").read_bytes() == (large / "out" / split / "X.npy").read_bytes()


@pytest.mark.parametrize("overrides, message", [
    ({"early_window": [0, 20]}, "early_window must satisfy 1 <= first"),  # position 0 holds E
    ({"late_window": [50, 69]}, "late_window must satisfy"),  # min_length - 2 = 68 is the last free position
    ({"early_window": [20, 10]}, "early_window must satisfy"),  # reversed
    ({"early_window": [10, 50]}, "early_window must end before late_window starts"),  # overlapping windows
    ({"early_window": [10]}, "must be a list of two integers"),
    ({"early_window": [10.5, 20]}, "must be a list of two integers"),
    ({"min_length": 90}, "min_length must be >= 1 and <= max_length"),
    ({"min_length": 50, "max_length": 80}, "late_window must satisfy"),  # windows must fit the shortest sequence
    ({"train_size": 3}, "train_size must be >= 4"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"window": [1, 2]}, "Unknown key 'order.data.window'"),
])
def test_bad_order_data_params_fail_with_a_message_naming_the_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_config(**overrides)


def test_the_papers_hard_setting_is_reachable_by_params_alone() -> None:
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    params["order"]["data"].update(min_length=100, max_length=110)
    config = parse_params(params).order_data
    assert (config.min_length, config.max_length) == (100, 110)


def test_committed_params_are_the_write_ups_settings() -> None:
    # The README's comparison with the write-up only holds for these values.
    order = parse_params(yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))).task("order")
    assert (order.model.hidden_size, order.model.num_layers, order.model.input_encoding) == (4, 1, "one_hot")
    assert (order.train.batch_size, order.train.lr, order.train.epochs) == (256, 0.005, 20)
    assert {name: variant.model.cell for name, variant in order.variants.items()} == {
        "order_rnn": "rnn", "order_lstm": "lstm", "order_gru": "gru",
        "order_rnn_fix": "rnn", "order_lstm_fix": "lstm", "order_gru_fix": "gru"}
    for cell in ("rnn", "lstm", "gru"):  # the write-up's settings stay on the plain variants
        assert (order.variants[f"order_{cell}"].model.init, order.variants[f"order_{cell}"].train.lr) == ("torch", 0.005)
        assert (order.variants[f"order_{cell}_fix"].model.init, order.variants[f"order_{cell}_fix"].train.lr) == ("keras", 0.01)



def test_negative_train_threads_is_rejected() -> None:
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    params["order"]["train"]["threads"] = -1
    with pytest.raises(ConfigError, match=re.escape("order.train.threads must be >= 0")):
        parse_params(params)
