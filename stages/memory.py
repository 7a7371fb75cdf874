"""Memory a stage's params need, estimated before anything is allocated, and refused if it cannot fit.

Without this a too-large `data.fix_length` or `model.hidden_size` ends in a raw numpy or torch
allocator traceback after minutes of work (or in the kernel's OOM killer). The estimates are
deliberately simple sums of the big arrays, each named after the params it grows with, so the
error can say which param to lower. They are checked against the measured peak of small real runs
(tests/test_hardening_resources.py): within 0.5x-2x of the growth in resident memory.

What is counted (float32 = 4 bytes, token ids are int64 = 8 bytes):

- xy: the int64 token id arrays (reviews x fix_length): the test split (encoded by a forked worker)
  and the larger of train/valid (encoded by this process) exist at the same time, plus each
  process's chunk mask (CHUNK_ROWS x fix_length booleans).
- train: the train and valid arrays as loaded from disk; every parameter DEVICE_WEIGHT_COPIES times
  on the training device (weight, gradient, Adam's state and step temporaries) plus the best-epoch
  copies in RAM; and the activations one
  training step keeps for backward (see `activation_floats`). Ensemble members train one at a
  time, so activations count once, weights once per member.

Not counted: the interpreter and torch themselves (a few hundred MB), and small tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.common import StageError
from stages.config import DataConfig, ModelConfig, Study, TrainConfig, Variant

if TYPE_CHECKING:  # torch is not imported by the xy stage
    import torch

    from stages.dataset import Meta

FLOAT_BYTES = 4
TOKEN_BYTES = 8  # np.int64 / torch.long token ids
# xy encodes this many reviews at a time (stages/xy.py CHUNK_ROWS); its boolean mask is that many rows.
XY_CHUNK_ROWS = 1000
# Copies of every parameter on the training device: weight, gradient, Adam's exp_avg and exp_avg_sq,
# and the two temporaries Adam's step makes (sqrt of exp_avg_sq, then its scaled denominator).
DEVICE_WEIGHT_COPIES = 6
# Copies in RAM: engine.fit keeps the best epoch's weights, and a new best is copied before the old
# one is dropped, so two exist for a moment.
BEST_STATE_COPIES = 2
# Floats the recurrent layer keeps per (sample, step, hidden unit, direction, layer), measured as
# the train stage's peak on CPU (torch's non-cuDNN cells; hidden 256, batch 128 x 500 steps: 5.0,
# 12.2 and 17.6): about 4 per gate (the input projection, its activation, and their gradients during
# backward) plus the hidden state. cuDNN on a GPU keeps less, so there this errs on the safe side.
RECURRENT_FLOATS = {"rnn": 5, "gru": 12, "lstm": 17}
# Floats kept per (sample, step, input feature): the embedding output, its dropout copy and its
# gradient. One-hot inputs are made as int64 (2 floats' worth) and then converted to float.
INPUT_FLOATS = {"embedding": 3, "one_hot": 5}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
SKIP_ENVIRONMENT = "RNNLAB_SKIP_MEMORY_CHECK"


@dataclass(frozen=True)
class Param:
    """A params.yaml key an estimate grows with, and its built-in default (to tell which was raised)."""

    name: str
    value: Any
    default: float

    def raised(self) -> float:
        """How far above its default the value is; the largest names the culprit."""
        return float(self.value) / self.default if self.default else 0.0


@dataclass(frozen=True)
class Need:
    """One named contributor to a stage's memory."""

    what: str
    bytes: int
    params: tuple[Param, ...]
    on_device: bool = True  # lives on the training device (the GPU when training on CUDA)
    other_fix: str = ""  # a fix besides lowering the params, e.g. another readout

    def culprit(self) -> Param:
        return max(self.params, key=Param.raised)


def breakdown(needs: list[Need]) -> dict[str, int]:
    return {need.what: need.bytes for need in needs}


def size_text(count: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale:
            value = count / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{count / 2**10:.1f} KiB"


# --- the xy stage ---------------------------------------------------------------------------


def xy_needs(split_reviews: dict[str, int], fix_length: int) -> list[Need]:
    """The xy stage's peak: test (forked worker) beside the larger of train/valid, plus chunk masks."""
    length = Param("data.fix_length", fix_length, DataConfig.fix_length)
    concurrent_rows = split_reviews.get("test", 0) + max(split_reviews.get("train", 0), split_reviews.get("valid", 0))
    masks = 2 * min(XY_CHUNK_ROWS, max(split_reviews.values(), default=0)) * fix_length  # one per process, 1 byte each
    return [
        Need("int64 token id arrays (reviews x fix_length)", concurrent_rows * fix_length * TOKEN_BYTES, (length,)),
        Need("padding masks", masks, (length,)),
    ]


# --- the train stage ------------------------------------------------------------------------


def parameter_counts(model: ModelConfig, input_size: int, num_classes: int, sequence_length: int) -> dict[str, int]:
    """Parameters of one network (stages/model.py RecurrentClassifier) by part: embedding, recurrent, head."""
    directions = 2 if model.bidirectional else 1
    gates = GATES[model.cell]
    features = model.embedding_dim if model.input_encoding == "embedding" else input_size
    recurrent = 0
    layer_input = features
    for size in model.layer_sizes:
        # weight_ih, weight_hh and two bias vectors per direction
        recurrent += directions * gates * size * (layer_input + size + 2)
        layer_input = size * directions
    state = model.hidden_size * directions
    readout = {"concat": state * sequence_length, "mean_max": 2 * state}.get(model.readout, state)
    if model.head_size > 0:
        head = readout * model.head_size + model.head_size + model.head_size * num_classes + num_classes
    else:
        head = readout * num_classes + num_classes
    embedding = input_size * model.embedding_dim if model.input_encoding == "embedding" else 0
    return {"embedding": embedding, "recurrent": recurrent, "head": head}


def activation_floats(model: ModelConfig, input_size: int, batch_size: int, sequence_length: int) -> dict[str, int]:
    """Floats one training step keeps for backward: inputs (batch x length x features x INPUT_FLOATS)
    and recurrent states (batch x length x hidden x directions x layers x RECURRENT_FLOATS[cell])."""
    directions = 2 if model.bidirectional else 1
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


def _place(study: Study, variant: Variant, section: str, key: str) -> str:
    """Where a value is set: the variant's override if it changes the study's, else the study's section."""
    prefix = "order." if study.name == "order" else ""
    base, own = getattr(study, section), getattr(variant, section)
    if getattr(own, key) != getattr(base, key):
        return f"{prefix}variants.{variant.name}.{section}.{key}"
    return f"{prefix}{section}.{key}"


def training_needs(study: Study, variant: Variant, meta: "Meta", data_dir: Path | None = None) -> list[Need]:
    """What training `variant` needs, by contributor; `data_dir` adds the loaded arrays."""
    model, train = variant.model, variant.train

    def param(section: str, key: str) -> Param:
        config = {"model": ModelConfig, "train": TrainConfig}[section]
        return Param(_place(study, variant, section, key), getattr(getattr(variant, section), key), getattr(config, key))

    if study.name == "order":
        length = Param("order.data.max_length", meta.sequence_length, DataConfig.fix_length)
    else:
        length = Param("data.fix_length", meta.sequence_length, DataConfig.fix_length)
    vocabulary = Param("data.vocab_size", meta.input_size, DataConfig.vocab_size)
    hidden, members, batch = param("model", "hidden_size"), param("model", "members"), param("train", "batch_size")
    # The lower layers' sizes grow the same contributors as hidden_size (judged against its default).
    lower = Param(_place(study, variant, "model", "lower_layer_sizes"), max(model.lower_layer_sizes, default=0), ModelConfig.hidden_size)
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


# --- what is available, and the check ----------------------------------------------------------


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2: no limit) is not a number


def _memory_stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Room left under this process's cgroup memory limit (v2, or v1), page cache counted as free."""
    for limit_file, usage_file, stat_key in (
        (root / "memory.max", root / "memory.current", "inactive_file"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes", "total_inactive_file"),
    ):
        limit, usage = _read_number(limit_file), _read_number(usage_file)
        if limit is None or usage is None or limit >= 2**60:  # v1 writes "no limit" as a huge number
            continue
        reclaimable = _memory_stat(limit_file.parent / "memory.stat", stat_key)
        return max(limit - max(usage - reclaimable, 0), 0)
    return None


def available_memory() -> int | None:
    """Bytes of RAM this process can still take: MemAvailable, or the cgroup's room if lower; None if unknown."""
    candidates = [value for value in (_meminfo_available(), _cgroup_available()) if value is not None]
    if not candidates:
        try:
            candidates = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            return None
    return min(candidates)


def available_device_memory(device: "torch.device") -> int | None:
    """Free memory on a CUDA device; None elsewhere (CPU and Apple MPS use the RAM)."""
    if device.type != "cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def check_fits(needs: list[Need], available: int | None, memory: str, task: str) -> None:
    """Raise StageError naming the largest contributor's culprit param if `needs` exceed `available`."""
    total = sum(need.bytes for need in needs)
    if available is None or total <= available or os.environ.get(SKIP_ENVIRONMENT) == "1":
        return
    largest = max(needs, key=lambda need: need.bytes)
    culprit = largest.culprit()
    others = [param.name for param in largest.params if param.name != culprit.name]
    alternatives = f" (or {', '.join(others)}{largest.other_fix})" if others else (f" ({largest.other_fix[2:]})" if largest.other_fix else "")
    raise StageError(
        f"{culprit.name}={culprit.value} needs about {size_text(total)} of {memory} {task} "
        f"(largest: {largest.what}, {size_text(largest.bytes)}) but {size_text(available)} is available. "
        f"Lower {culprit.name}{alternatives}."
    )


def check_xy_fits(split_reviews: dict[str, int], fix_length: int) -> None:
    check_fits(xy_needs(split_reviews, fix_length), available_memory(), "memory", "to encode the reviews")


def check_training_fits(study: Study, variant: Variant, meta: "Meta", data_dir: Path, device: "torch.device") -> None:
    """Refuse a variant whose weights, optimiser state and activations cannot fit (GPU and RAM on CUDA)."""
    needs = training_needs(study, variant, meta, data_dir)
    task = f"to train {variant.name}"
    if device.type == "cuda":
        check_fits([need for need in needs if need.on_device], available_device_memory(device), f"GPU memory ({device})", task)
        check_fits([need for need in needs if not need.on_device], available_memory(), "memory", task)
    else:
        check_fits(needs, available_memory(), "memory", task)
