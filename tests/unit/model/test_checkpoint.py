"""Unit tests for checkpoints: {state_dict, config} saved and rebuilt with weights_only loading."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rnnlab.config.params import ModelConfig
from rnnlab.core.errors import UserError
from rnnlab.model.classifier import ModelSpec, RecurrentClassifier, load_checkpoint, save_checkpoint

SPEC = ModelSpec(
    ModelConfig(cell="gru", embedding_dim=6, hidden_size=8, head_size=5, bidirectional=True, readout="mean", dropout=0.0),
    input_size=13, num_classes=2, sequence_length=9, class_names=("neg", "pos"),
)


def trained_like_model(seed: int = 0) -> RecurrentClassifier:
    torch.manual_seed(seed)
    return RecurrentClassifier(SPEC).eval()


def sample() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 13, (5, 9), generator=generator), torch.tensor([9, 1, 4, 6, 2])


def save(path: Path, model: RecurrentClassifier) -> None:
    save_checkpoint(path, model, model.state_dict(), {"variant": "relu", "best_epoch": 3})


def test_round_trip_reproduces_outputs(tmp_path: Path) -> None:
    model = trained_like_model()
    path = tmp_path / "model.pt"
    save(path, model)
    loaded, checkpoint = load_checkpoint(path, expected=SPEC.model)
    assert loaded.spec == SPEC
    assert checkpoint["variant"] == "relu" and checkpoint["best_epoch"] == 3
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(*sample()), loaded(*sample()))
    # A differently initialised model gives different outputs, so equality above means something.
    with torch.no_grad():
        assert not torch.equal(trained_like_model(seed=1)(*sample()), loaded(*sample()))


def test_same_weights_give_byte_identical_files(tmp_path: Path) -> None:
    # DVC tracks checkpoints by md5: a deterministic rerun must not change dvc.lock.
    save(tmp_path / "first.pt", trained_like_model())
    save(tmp_path / "second.pt", trained_like_model())
    assert (tmp_path / "first.pt").read_bytes() == (tmp_path / "second.pt").read_bytes()


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save(path, trained_like_model())
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no pickled classes inside
    assert set(raw) >= {"state_dict", "config"}
    assert raw["config"]["model"]["cell"] == "gru"


def test_config_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save(path, trained_like_model())
    with pytest.raises(UserError, match="cell: checkpoint 'gru' vs params 'lstm'"):
        load_checkpoint(path, expected=replace(SPEC.model, cell="lstm"))


def test_missing_checkpoint_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dvc repro"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("damage", ["text", "empty", "truncated"])
def test_damaged_checkpoint_is_a_user_error(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "good.pt"
    save(good, trained_like_model())
    contents = {"text": b"not a checkpoint", "empty": b"", "truncated": good.read_bytes()[: good.stat().st_size // 2]}
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(contents[damage])
    with pytest.raises(UserError, match="damaged"):
        load_checkpoint(damaged)


def test_the_bytes_do_not_depend_on_where_equal_strings_came_from(tmp_path: Path) -> None:
    """An interned literal and the same text read from JSON are one pickled object or two: not in a checkpoint."""
    model = trained_like_model()
    literal = {"variant": "relu", "environment": {"torch": "2.13.0", "device": "cpu"}, "init": "torch"}
    parsed = json.loads(json.dumps(literal))
    save_checkpoint(tmp_path / "a.pt", model, model.state_dict(), literal)
    save_checkpoint(tmp_path / "b.pt", model, model.state_dict(), parsed)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


DAMAGES = {
    "no state_dict": (lambda raw: raw.pop("state_dict"), "no 'state_dict' entry"),
    "absurd sizes": (lambda raw: raw["config"]["model"].update(hidden_size=10**9), "weights but it holds 943"),
    "numbers as class names": (lambda raw: raw["config"].update(class_names=[0, 1]), "are not 2 strings"),
    "a string as class names": (lambda raw: raw["config"].update(class_names="ne"), "are not 2 strings"),
    "NaN weights": (lambda raw: next(iter(raw["state_dict"].values())).fill_(float("nan")), "NaN or infinite weights"),
}


def damage_checkpoint(path: Path, damage: str) -> None:
    """Rewrite the checkpoint at `path` with one of DAMAGES (tests/stages use it too)."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    DAMAGES[damage][0](raw)
    torch.save(raw, path)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_one_line_before_the_model_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    damage: str) -> None:
    path = tmp_path / "model.pt"
    save(path, trained_like_model())
    damage_checkpoint(path, damage)

    def never(*args: object) -> None:
        raise AssertionError("the model was built")

    monkeypatch.setattr("rnnlab.model.classifier.build_model", never)
    with pytest.raises(UserError) as raised:
        load_checkpoint(path)
    message = str(raised.value)
    assert DAMAGES[damage][1] in message and "\n" not in message and "dvc repro" in message, message
