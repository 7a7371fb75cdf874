"""params.yaml, checked whole before any work (pydantic; `_message` makes its first error one line with
the fix). Every stage reads it whole, so a bad value anywhere stops the stage; dvc.yaml lists the keys each
stage reads, so a stage reruns only when one of them changes."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import reprlib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from ruamel.yaml import YAML, MappingNode, SequenceNode
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import YAMLError

from rnnlab.core.errors import ConfigError

STRICT = ConfigDict(strict=True, extra="forbid")  # YAML's `1` is not `true`, nor "256" an integer


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value  # YAML and JSON give lists


# A field's description is how a message states its rule or type, where the bound or type alone would not.
IntPair = Annotated[tuple[int, int], BeforeValidator(_as_tuple), Field(description="a list of two integers [first, last]")]
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Sizes = Annotated[tuple[Positive, ...], BeforeValidator(_as_tuple), Field(description="a list of integers such as [64]")]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0, description="in [0, 1)")]  # a dropout probability


class Section:
    """A params section: a frozen pydantic dataclass; field order is kept (checkpoints store it)."""

    __pydantic_fields__: ClassVar[dict[str, FieldInfo]]
    RETIRED: ClassVar[dict[str, str]] = {}  # a removed key -> what to do
    LATER: ClassVar[tuple[str, ...]] = ()  # keys added after checkpoints were first committed

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> typing.Self:
        raw = _mapping(raw, cls.__pydantic_fields__, where, cls.RETIRED)
        try:
            return cls(**raw)
        except ValidationError as error:
            raise ConfigError(_message(cls, raw, error, where)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass

    def to_stored_dict(self) -> dict[str, Any]:
        """For checkpoints: a LATER key at its default is left out, so an unchanged config writes the same bytes."""
        defaults = self.__pydantic_fields__
        return {key: value for key, value in self.to_dict().items() if key not in self.LATER or value != defaults[key].default}


@dataclass(frozen=True, config=STRICT)
class DownloadConfig(Section):
    url: Annotated[str, Field(pattern=r"^https?://\S+$", description="an http(s) URL")] = (
        "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
    )
    md5: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="32 lowercase hex digits")] = (
        "7c2ac02c03563afcf9b574c7e56c153a"
    )


@dataclass(frozen=True, config=STRICT)
class DataConfig(Section):
    valid_ratio: Annotated[float, Field(gt=0.0, lt=1.0, description="in (0, 1)")] = 0.2
    split_seed: NonNegative = 0
    vocab_size: Positive = 10000
    min_freq: Positive = 10
    fix_length: Positive = 200
    truncate: Literal["head", "tail", "head_tail"] = "head"  # the first tokens (torchtext), the last, or both halves
    pad: Literal["post", "pre"] = "post"  # padding after a review (torchtext) or before it (Keras pad_sequences)


@dataclass(frozen=True, config=STRICT)
class OrderDataConfig(Section):
    """The temporal-order task (Hochreiter & Schmidhuber 1997, experiment 6a)."""

    train_size: Annotated[int, Field(ge=4, description=">= 4 (one per class)")] = 10000
    valid_size: Annotated[int, Field(ge=4, description=">= 4 (one per class)")] = 2000
    test_size: Annotated[int, Field(ge=4, description=">= 4 (one per class)")] = 2000
    min_length: Positive = 70
    max_length: int = 80
    early_window: IntPair = (10, 20)
    late_window: IntPair = (50, 60)
    seed: NonNegative = 0

    @model_validator(mode="after")
    def _windows_fit(self) -> OrderDataConfig:
        if self.min_length > self.max_length:
            raise ValueError(f"min_length must be >= 1 and <= max_length, got {self.min_length} and {self.max_length}.")
        for name in ("early_window", "late_window"):
            first, last = getattr(self, name)
            if not 1 <= first <= last <= self.min_length - 2:  # position 0 holds E, the last one B
                raise ValueError(
                    f"{name} must satisfy 1 <= first <= last <= min_length - 2 ({self.min_length - 2}), got [{first}, {last}]."
                )
        if self.early_window[1] >= self.late_window[0]:
            raise ValueError(
                f"early_window must end before late_window starts, got {list(self.early_window)} and {list(self.late_window)}."
            )
        return self


@dataclass(frozen=True, config=STRICT)
class ModelConfig(Section):
    LATER: ClassVar[tuple[str, ...]] = ("lower_layer_sizes",)

    cell: Literal["rnn", "lstm", "gru"] = "rnn"
    nonlinearity: Literal["tanh", "relu"] = "tanh"  # only used by cell=rnn
    input_encoding: Literal["embedding", "one_hot"] = "embedding"
    embedding_dim: Positive = 128  # ignored for input_encoding=one_hot
    embedding_dropout: Fraction = 0.0  # zeroes single features
    word_dropout: Fraction = 0.0  # zeroes whole time steps, so the model cannot lean on any single word
    hidden_size: Positive = 256
    num_layers: Positive = 1
    # Layers of their own sizes below the num_layers x hidden_size stack, bottom first: [64] with
    # hidden_size 32 is the Keras write-up's SimpleRNN(64) -> SimpleRNN(32).
    lower_layer_sizes: Sizes = ()
    bidirectional: bool = False
    dropout: Fraction = 0.5
    readout: Literal["last", "mean", "max", "mean_max", "concat"] = "last"
    last_at_padded_end: bool = False  # True reproduces the write-ups' bug: "last" read at a padding step
    activation: Literal["relu", "sigmoid", "tanh", "leaky_relu"] = "relu"
    head_size: Annotated[int, Field(ge=0, description=">= 0 (0 = no hidden head layer)")] = 256
    members: Positive = 1  # an ensemble of independently initialised copies, probabilities averaged
    init: Literal["torch", "keras"] = "torch"  # keras: glorot/orthogonal weights, zero biases, forget-gate bias 1

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Hidden size of every recurrent layer, bottom to top; the last one is what the readout sees."""
        return (*self.lower_layer_sizes, *(self.hidden_size,) * self.num_layers)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1


@dataclass(frozen=True, config=STRICT)
class TrainConfig(Section):
    LATER: ClassVar[tuple[str, ...]] = ("keep",)

    epochs: Positive = 5
    batch_size: Positive = 100
    lr: Annotated[float, Field(gt=0.0)] = 1e-4
    optimizer: Literal["adam", "rmsprop", "sgd"] = "adam"  # rmsprop with Keras's defaults (rho 0.9, epsilon 1e-7)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: from lr to 0, stepped after every batch
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    grad_clip: Annotated[float, Field(ge=0.0, description=">= 0 (0 disables clipping)")] = 0.0  # max global gradient norm
    keep: Literal["best", "last"] = "best"  # the best validation epoch's weights, or the last epoch's (Keras's fit)
    seed: NonNegative = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: Annotated[int, Field(ge=0, description=">= 0 (0 = torch's default)")] = 0  # no bit changes in reproducible mode


@dataclass(frozen=True, config=STRICT)
class BaselineConfig(Section):
    """TF-IDF + logistic regression on the same token-id inputs as the recurrent models."""

    ngram_max: Positive = 1
    c_grid: IntPair = (-2, 2)  # log10 range of C values tried on validation
    max_iter: Positive = 1000

    @model_validator(mode="after")
    def _grid_ordered(self) -> BaselineConfig:
        if self.c_grid[0] > self.c_grid[1]:
            raise ValueError("c_grid must be [low, high] with low <= high.")
        return self


@dataclass(frozen=True, config=STRICT)
class RuntimeConfig(Section):
    """How the math libraries run; read before torch loads (rnnlab/runtime/environment.py)."""

    RETIRED: ClassVar[dict[str, str]] = {
        "cross_vendor": "was removed: reproducible mode now gives the same bits on Intel and AMD CPUs. Delete the line.",
    }
    reproducible: bool = True  # the same bits on any x86-64 CPU with AVX2+FMA, any thread count


TYPE_WORDS = {
    "bool_type": "true or false",
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "literal_error": "a string",
}
BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
SHORT = reprlib.Repr()  # a bad value as shown in a message: nested lists (YAML aliases) cut short
SHORT.maxlevel, SHORT.maxlist, SHORT.maxstring = 2, 4, 60


def did_you_mean(value: object, choices: Iterable[object]) -> str:
    close = difflib.get_close_matches(str(value), [str(choice) for choice in choices], n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def _message(section: type[Section], raw: Mapping[str, Any], error: ValidationError, where: str) -> str:
    first = error.errors()[0]
    kind, location, context = first["type"], first["loc"], first.get("ctx", {})
    if kind == "value_error":  # a rule that ties several keys together
        return f"{where}.{context['error']}"
    key = str(location[0])
    place, value, field = f"{where}.{key}", raw[key], section.__pydantic_fields__[key]
    if kind == "string_pattern_mismatch":
        return f"{place} must be {field.description}, got '{value}'."
    bounds = [f"{BOUNDS[name]} {limit:g}" for name, limit in context.items() if name in BOUNDS]
    if bounds:  # a list item's bound is the error's; a field's description states both ends or a note
        holds = f"must hold integers {bounds[0]}" if len(location) > 1 else f"must be {field.description or bounds[0]}"
        return f"{place} {holds}, got {value}."
    if typing.get_origin(field.annotation) is Literal and isinstance(value, str):
        choices = typing.get_args(field.annotation)
        return f"Invalid {place}: '{value}'.{did_you_mean(value, choices)} Valid choices: {', '.join(choices)}."
    words = field.description if typing.get_origin(field.annotation) is tuple else TYPE_WORDS.get(kind)
    if words is None:
        return f"{place}: {first['msg']}, got {SHORT.repr(value)}."
    return f"{place} must be {words}, got {SHORT.repr(value)}."


PARAMS_FILE = Path("params.yaml")
IMDB_TASK, ORDER_TASK = "imdb", "order"
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
TOP_LEVEL_KEYS = ("download", "data", "model", "train", "variants", "baseline", "order", "runtime")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A task's baseline config with the variant's overrides applied."""

    name: str
    model: ModelConfig
    train: TrainConfig
    task: str = IMDB_TASK
    overrides: frozenset[str] = frozenset()  # "section.key" the variant sets itself, e.g. "model.activation"

    def params_key(self, section: str, key: str) -> str:
        """Where in params.yaml this variant's `section.key` is set: its own override, or the task's section."""
        prefix = "" if self.task == IMDB_TASK else f"{self.task}."
        own = f"variants.{self.name}." if f"{section}.{key}" in self.overrides else ""
        return f"{prefix}{own}{section}.{key}"


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    model: ModelConfig
    train: TrainConfig
    variants: dict[str, Variant]


@dataclasses.dataclass(frozen=True)
class Params:
    download: DownloadConfig
    data: DataConfig
    baseline: BaselineConfig
    order_data: OrderDataConfig
    tasks: dict[str, Task]
    runtime: RuntimeConfig

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise ConfigError(f"Unknown task '{name}'.{did_you_mean(name, self.tasks)} Tasks: {', '.join(self.tasks)}.")
        return self.tasks[name]

    def find_variant(self, name: str) -> tuple[Task, Variant]:
        for task in self.tasks.values():
            if name in task.variants:
                return task, task.variants[name]
        every = [variant for task in self.tasks.values() for variant in task.variants]
        raise ConfigError(f"Unknown variant '{name}'.{did_you_mean(name, every)} Variants: {', '.join(every)}.")


def _mapping(raw: Any, allowed: Iterable[str], where: str, retired: Mapping[str, str] | None = None) -> Mapping[str, Any]:
    """`raw` (None: empty) as a mapping whose keys are all `allowed`; checked before pydantic, as a misspelt key is
    the likelier cause of any other error."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'params.yaml'} must be a mapping of keys to values, got {type(raw).__name__}.")
    for key in raw:
        place = f"{where}.{key}" if where else key
        if retired and key in retired:
            raise ConfigError(f"{place} {retired[key]}")
        if key not in allowed:
            raise ConfigError(
                f"Unknown key '{place}' in params.yaml.{did_you_mean(key, allowed)} Valid keys: {', '.join(allowed)}."
            )
    return raw


def _parse_task(name: str, raw: Mapping[str, Any], prefix: str) -> Task:
    model = ModelConfig.from_dict(raw.get("model"), f"{prefix}model")
    train = TrainConfig.from_dict(raw.get("train"), f"{prefix}train")
    listed = raw.get("variants") or {}
    if not isinstance(listed, Mapping):
        raise ConfigError(f"{prefix}variants must map variant names to overrides, e.g. `relu: {{model: {{activation: relu}}}}`.")
    variants = {}
    override_keys = {"model": ModelConfig.__pydantic_fields__, "train": TrainConfig.__pydantic_fields__}
    for variant, overrides in listed.items():
        place = f"{prefix}variants.{variant}"
        if not isinstance(variant, str) or not VARIANT_NAME.match(variant):
            raise ConfigError(f"Variant name {variant!r} in {prefix}variants must use letters, digits, '_' or '-' only.")
        overrides = _mapping(overrides, ("model", "train"), place)
        changed = {part: _mapping(overrides.get(part), fields, f"{place}.{part}") for part, fields in override_keys.items()}
        variants[variant] = Variant(
            variant,
            ModelConfig.from_dict({**model.to_dict(), **changed["model"]}, f"{place}.model"),
            TrainConfig.from_dict({**train.to_dict(), **changed["train"]}, f"{place}.train"),
            name,
            frozenset(f"{part}.{key}" for part, keys in changed.items() for key in keys),
        )
    return Task(name, model, train, variants)


def parse_params(raw: Any) -> Params:
    raw = _mapping(raw, TOP_LEVEL_KEYS, "")
    order = _mapping(raw.get("order"), ("data", "model", "train", "variants"), "order")
    tasks = {IMDB_TASK: _parse_task(IMDB_TASK, raw, ""), ORDER_TASK: _parse_task(ORDER_TASK, order, "order.")}
    clash = set(tasks[IMDB_TASK].variants) & set(tasks[ORDER_TASK].variants)
    if clash:
        raise ConfigError(
            f"Variant names must be unique across tasks (they name metrics/<variant>.json): {', '.join(sorted(clash))}."
        )
    return Params(
        DownloadConfig.from_dict(raw.get("download"), "download"),
        DataConfig.from_dict(raw.get("data"), "data"),
        BaselineConfig.from_dict(raw.get("baseline"), "baseline"),
        OrderDataConfig.from_dict(order.get("data"), "order.data"),
        tasks,
        RuntimeConfig.from_dict(raw.get("runtime"), "runtime"),
    )


def _duplicate_message(text: str, error: DuplicateKeyError, name: str) -> str:
    """ruamel's DuplicateKeyError (ten lines) as one: both lines and where the mapping is. The walk enters only
    the child whose text holds that mapping, so aliases (an alias bomb too) are never expanded."""
    fallback = f"{name} line {error.problem_mark.line + 1}: {error.problem}. Keep one of them."
    target = error.context_mark.index  # where the mapping with the repeated key starts
    node = YAML(typ="safe").compose(text)
    path: list[str] = []
    while not (isinstance(node, MappingNode) and node.start_mark.index == target):
        if isinstance(node, MappingNode):
            children = [(str(key.value), value) for key, value in node.value]
        else:
            children = [(str(index), item) for index, item in enumerate(node.value)] if isinstance(node, SequenceNode) else []
        holding = [(key, child) for key, child in children if child.start_mark.index <= target < child.end_mark.index]
        if not holding:
            return fallback
        path.append(holding[0][0])
        node = holding[0][1]
    first_lines: dict[str, int] = {}
    for key, _value in node.value:
        if key.value in first_lines:
            place = f"under '{'.'.join(path)}'" if path else "at the top level"
            return (
                f"{name} line {key.start_mark.line + 1}: duplicate key '{key.value}' {place} "
                f"(first on line {first_lines[key.value]}). Keep one of them."
            )
        first_lines[key.value] = key.start_mark.line + 1
    return fallback


def parse_params_yaml(text: str, name: str = str(PARAMS_FILE)) -> Any:
    """As DVC reads it (YAML 1.2), without repeated keys; an alias is built once, so alias bombs load at once."""
    try:
        return YAML(typ="safe").load(text)
    except DuplicateKeyError as error:
        raise ConfigError(_duplicate_message(text, error, name)) from None
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{name}{line} is not valid YAML: {getattr(error, 'problem', None) or error}.") from None


def read_params_file(path: Path | str = PARAMS_FILE) -> Any:
    """The raw params.yaml mapping (for tools that edit it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run the stage from the repository root (where params.yaml is).")
    return parse_params_yaml(path.read_text(encoding="utf-8"), str(path))


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    return parse_params(read_params_file(path))


def lookup(params: Any, key: str) -> Any:
    """params.yaml's value at a dotted key, as `dvc.yaml`'s `params:` and `dvc exp run -S` name it (None: not there)."""
    return functools.reduce(lambda node, part: node.get(part) if isinstance(node, dict) else None, key.split("."), params)
