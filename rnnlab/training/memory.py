"""Memory training a variant needs: weights with their gradients and optimiser state, activations, data.

What is counted (float32 = 4 bytes, token ids are int64 = 8 bytes): the train and valid arrays as
loaded from disk; every parameter DEVICE_WEIGHT_COPIES times on the training device (weight,
gradient, Adam's state and step temporaries) plus the best-epoch copies in RAM; and the activations
one training step keeps for backward (see `activation_floats`). Ensemble members train one at a
time, so activations count once, weights once per member. Not counted: the interpreter and torch
themselves (a few hundred MB), and small tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rnnlab.config.params import ORDER_TASK, DataConfig, ModelConfig, TrainConfig, Variant
from rnnlab.core.memory import FLOAT_BYTES, Need, Param, available_device_memory, available_memory, check_fits
from rnnlab.model.spec import GATES, readout_size

if TYPE_CHECKING:
    import torch

    from rnnlab.data.arrays import Meta

# Copies of every parameter on the training device: weight, gradient, Adam's exp_avg and exp_avg_sq,
# and the two temporaries Adam's step makes (sqrt of exp_avg_sq, then its scaled denominator).
DEVICE_WEIGHT_COPIES = 6
# Copies in RAM: the training loop keeps the best epoch's weights, and a new best is copied before the
# old one is dropped, so two exist for a moment.
BEST_STATE_COPIES = 2
# Floats the recurrent layer keeps per (sample, step, hidden unit, direction, layer), measured as
# the train stage's peak on CPU (torch's non-cuDNN cells; hidden 256, batch 128 x 500 steps: 5.0,
# 12.2 and 17.6): about 4 per gate (the input projection, its activation, and their gradients during
# backward) plus the hidden state. cuDNN on a GPU keeps less, so there this errs on the safe side.
RECURRENT_FLOATS = {"rnn": 5, "gru": 12, "lstm": 17}
# Floats kept per (sample, step, input feature): the embedding output, its dropout copy and its
# gradient. One-hot inputs are made as int64 (2 floats' worth) and then converted to float.
INPUT_FLOATS = {"embedding": 3, "one_hot": 5}


def parameter_counts(model: ModelConfig, input_size: int, num_classes: int, sequence_length: int) -> dict[str, int]:
    """Parameters of one network (rnnlab/model/classifier.py RecurrentClassifier) by part: embedding, recurrent, head."""
    directions = model.directions
    gates = GATES[model.cell]
    features = model.embedding_dim if model.input_encoding == "embedding" else input_size
    recurrent = 0
    layer_input = features
    for size in model.layer_sizes:
        # weight_ih, weight_hh and two bias vectors per direction
        recurrent += directions * gates * size * (layer_input + size + 2)
        layer_input = size * directions
    readout = readout_size(model, sequence_length)
    if model.head_size > 0:
        head = readout * model.head_size + model.head_size + model.head_size * num_classes + num_classes
    else:
        head = readout * num_classes + num_classes
    embedding = input_size * model.embedding_dim if model.input_encoding == "embedding" else 0
    return {"embedding": embedding, "recurrent": recurrent, "head": head}


def activation_floats(model: ModelConfig, input_size: int, batch_size: int, sequence_length: int) -> dict[str, int]:
    """Floats one training step keeps for backward: inputs (batch x length x features x INPUT_FLOATS)
    and recurrent states (batch x length x hidden x directions x layers x RECURRENT_FLOATS[cell])."""
    directions = model.directions
    features = model.embedding_dim if model.input_encoding == "embedding" else input_size
    steps = batch_size * sequence_length
    recurrent = steps * sum(model.layer_sizes) * directions * RECURRENT_FLOATS[model.cell]
    if model.readout != "last":  # the masked copy of every step's output
        recurrent += steps * model.hidden_size * directions
    return {"inputs": steps * features * INPUT_FLOATS[model.input_encoding], "recurrent": recurrent}


def data_bytes(data_dir: Path) -> int:
    """The train and valid arrays the train stage loads (their .npy files hold them uncompressed)."""
    files = [Path(data_dir) / split / f"{name}.npy" for split in ("train", "valid") for name in ("X", "lengths", "y")]
    return sum(path.stat().st_size for path in files if path.is_file())


def training_needs(variant: Variant, meta: "Meta", data_dir: Path | None = None) -> list[Need]:
    """What training `variant` needs, by contributor; `data_dir` adds the loaded arrays."""
    model, train = variant.model, variant.train

    def param(section: str, key: str) -> Param:
        config = {"model": ModelConfig, "train": TrainConfig}[section]
        return Param(variant.params_key(section, key), getattr(getattr(variant, section), key), getattr(config, key))

    if variant.task == ORDER_TASK:
        length = Param("order.data.max_length", meta.sequence_length, DataConfig.fix_length)
    else:
        length = Param("data.fix_length", meta.sequence_length, DataConfig.fix_length)
    vocabulary = Param("data.vocab_size", meta.input_size, DataConfig.vocab_size)
    hidden, members, batch = param("model", "hidden_size"), param("model", "members"), param("train", "batch_size")
    # The lower layers' sizes grow the same contributors as hidden_size (judged against its default).
    lower = Param(variant.params_key("model", "lower_layer_sizes"), max(model.lower_layer_sizes, default=0), ModelConfig.hidden_size)
    counts = parameter_counts(model, meta.input_size, meta.num_classes, meta.sequence_length)
    weights = DEVICE_WEIGHT_COPIES * FLOAT_BYTES * model.members
    activations = activation_floats(model, meta.input_size, train.batch_size, meta.sequence_length)
    one_hot = model.input_encoding == "one_hot"
    needs = [
        Need("embedding weights with gradients and Adam state", counts["embedding"] * weights,
             (param("model", "embedding_dim"), vocabulary, members)),
        Need("recurrent weights with gradients and Adam state", counts["recurrent"] * weights,
             (hidden, param("model", "num_layers"), lower, members) + ((vocabulary,) if one_hot else ()),
             other_fix=", or set model.bidirectional=false" if model.bidirectional else ""),
        Need("output head weights with gradients and Adam state", counts["head"] * weights,
             (hidden, param("model", "head_size"), members) + ((length,) if model.readout == "concat" else ()),
             other_fix=", or use a readout other than concat" if model.readout == "concat" else ""),
        Need("input activations (batch x length x features)", activations["inputs"] * FLOAT_BYTES,
             (batch, length) + ((vocabulary,) if one_hot else (param("model", "embedding_dim"),)),
             other_fix=", or use model.input_encoding=embedding" if one_hot else ""),
        Need("recurrent activations (batch x length x hidden)", activations["recurrent"] * FLOAT_BYTES,
             (batch, length, hidden, param("model", "num_layers"), lower)),
    ]
    needs.append(Need("best-epoch copies of the weights", sum(counts.values()) * model.members * FLOAT_BYTES * BEST_STATE_COPIES,
                      (hidden, members), on_device=False))
    if data_dir is not None:
        needs.append(Need("train and valid token arrays", data_bytes(data_dir), (length,), on_device=False))
    return [need for need in needs if need.bytes > 0]


def check_training_fits(variant: Variant, meta: "Meta", data_dir: Path, device: "torch.device") -> None:
    """Refuse a variant whose weights, optimiser state and activations cannot fit (GPU and RAM on CUDA)."""
    needs = training_needs(variant, meta, data_dir)
    purpose = f"to train {variant.name}"
    if device.type == "cuda":
        check_fits([need for need in needs if need.on_device], available_device_memory(device), f"GPU memory ({device})", purpose)
        check_fits([need for need in needs if not need.on_device], available_memory(), "memory", purpose)
    else:
        check_fits(needs, available_memory(), "memory", purpose)
