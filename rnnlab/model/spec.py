"""What a model is, without torch: its config plus what the dataset fixes, and the sizes both imply.

The memory estimate (rnnlab/training/memory.py) and the model itself (rnnlab/model/classifier.py)
read the readout's width from `readout_size`, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.config.params import ModelConfig, model_from_dict
from rnnlab.data.arrays import Meta

GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # weight blocks per recurrent layer


def readout_size(config: ModelConfig, sequence_length: int) -> int:
    """Width of the readout the head sees: every step's state for concat, two pools for mean_max."""
    state = config.hidden_size * config.directions
    return {"concat": state * sequence_length, "mean_max": 2 * state}.get(config.readout, state)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: its config plus what the dataset fixes."""

    model: ModelConfig
    input_size: int
    num_classes: int
    sequence_length: int
    class_names: tuple[str, ...]
    pad: str = "post"  # data.pad of the arrays the model reads (always stored post-padded)

    @classmethod
    def from_meta(cls, model: ModelConfig, meta: Meta) -> "ModelSpec":
        return cls(model, meta.input_size, meta.num_classes, meta.sequence_length, meta.class_names, meta.pad)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_stored_dict(),
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "sequence_length": self.sequence_length,
            "class_names": list(self.class_names),
            "pad": self.pad,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ModelSpec":
        return cls(
            model=model_from_dict(raw["model"]),
            input_size=int(raw["input_size"]),
            num_classes=int(raw["num_classes"]),
            sequence_length=int(raw["sequence_length"]),
            class_names=tuple(raw["class_names"]),
            pad=str(raw.get("pad", "post")),  # checkpoints from before data.pad existed
        )
