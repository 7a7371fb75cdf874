"""Checkpoints store `{state_dict, config, ...}`; the model is rebuilt from the stored config on load."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from rnnlab.config.params import ModelConfig
from rnnlab.core.errors import ConfigError, UserError
from rnnlab.core.files import atomic_path
from rnnlab.model.classifier import Classifier, build_model
from rnnlab.model.spec import ModelSpec


def save_checkpoint(path: Path, model: Classifier, state_dict: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
    # The plain data goes through its JSON text first: pickle stores one string object once and then
    # refers to it, so equal dicts whose strings came from different places (an interned literal,
    # YAML, JSON) would give other bytes, and another md5 in dvc.lock, for the same checkpoint.
    metadata = json.loads(json.dumps({"config": model.spec.to_dict(), **extra}))
    # Save through a handle: given a path, torch names the zip's inner folder after the (random)
    # temporary file name, so identical weights would give different bytes and a new md5 in dvc.lock.
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
        torch.save({"state_dict": state_dict, **metadata}, handle)


def load_checkpoint(path: Path, expected: ModelConfig | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model from the checkpoint's own config; refuse one that differs from `expected`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint {path} not found; train it first (`dvc repro`).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        spec = ModelSpec.from_dict(checkpoint["config"])
    except pickle.UnpicklingError as error:
        # weights_only=True refused an object beyond tensors and plain data, before running any of it.
        raise UserError(
            f"{path} holds Python objects besides tensors and plain data, so it was refused unread "
            f"(checkpoints load with weights_only=True). Use a checkpoint written by the train stage: `dvc repro`."
        ) from error
    # Non-archive files fail in the unpickler too; truncated zip archives fail with OSError when read.
    except (KeyError, TypeError, ConfigError, RuntimeError, EOFError, OSError) as error:
        raise UserError(f"{path} is not an RNN Lab checkpoint or is damaged ({error}); retrain with `dvc repro`.") from error
    if expected is not None and expected != spec.model:
        stored, wanted = spec.model.to_dict(), expected.to_dict()
        changes = ", ".join(f"{key}: checkpoint {stored[key]!r} vs params {wanted[key]!r}" for key in stored if stored[key] != wanted[key])
        raise UserError(f"{path} was trained with a different model config ({changes}). Retrain it with `dvc repro`.")
    model = build_model(spec)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise UserError(f"{path}: weights do not fit the stored config ({error}); retrain with `dvc repro`.") from error
    return model, checkpoint
