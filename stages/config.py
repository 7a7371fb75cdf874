"""Typed configuration read from params.yaml.

Every stage validates the *whole* params file before doing any work, so a typo anywhere
(`model.cell: lsmt`, an unknown key, a variant overriding a key that does not exist) fails
fast with a message that names the key and the fix. Each stage then uses only its section.

The defaults below are the single visible block of defaults; params.yaml overrides them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

import yaml

PARAMS_FILE = Path("params.yaml")
IMDB_STUDY = "imdb"
ORDER_STUDY = "order"
STUDIES = (IMDB_STUDY, ORDER_STUDY)
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class ConfigError(ValueError):
    """A params.yaml problem a user can fix; the message says which key and how."""


def did_you_mean(value: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


@dataclass(frozen=True)
class Section:
    """Base for a params section: strict keys, strict types, declared choices and ranges."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Keys added after checkpoints were first committed: stored only when set (`to_stored_dict`).
    LATER_KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> "Section":
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a mapping of keys to values, got {type(raw).__name__}.")
        known = {f.name: f for f in fields(cls)}
        for key in raw:
            if key not in known:
                raise ConfigError(
                    f"Unknown key '{where}.{key}' in params.yaml.{did_you_mean(key, list(known))} "
                    f"Valid keys: {', '.join(known)}."
                )
        values = {name: _coerce(raw[name], f.type, f"{where}.{name}") for name, f in known.items() if name in raw}
        section = cls(**values)
        section.check(where)
        return section

    def check(self, where: str) -> None:
        for key, choices in self.CHOICES.items():
            value = getattr(self, key)
            if value not in choices:
                raise ConfigError(
                    f"Invalid {where}.{key}: '{value}'.{did_you_mean(value, choices)} "
                    f"Valid choices: {', '.join(choices)}."
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_stored_dict(self) -> dict[str, Any]:
        """to_dict for checkpoints: a later key at its default is left out, so retraining an unchanged
        config writes the same checkpoint bytes as before the key existed (dvc.lock hashes them);
        loading fills the default back in."""
        defaults = {f.name: f.default for f in fields(self)}
        return {key: value for key, value in self.to_dict().items() if key not in self.LATER_KEYS or value != defaults[key]}


def _coerce(value: Any, type_name: Any, where: str) -> Any:
    """Check a YAML value against a field's annotated type (annotations are strings here)."""
    expected = str(type_name)
    if expected == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}.")
        return value
    if expected == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}.")
        return value
    if expected == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}.")
        return float(value)
    if expected == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}.")
        return value
    if expected == "tuple[int, int]":
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ConfigError(f"{where} must be a list of two integers [first, last], got {value!r}.")
        return tuple(value)
    if expected == "tuple[int, ...]":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where} must be a list of integers such as [64], got {value!r}.")
        return tuple(value)
    raise AssertionError(f"unhandled type {expected} for {where}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DownloadConfig(Section):
    url: str = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
    md5: str = "7c2ac02c03563afcf9b574c7e56c153a"

    def check(self, where: str) -> None:
        super().check(where)
        _require(self.url.startswith(("http://", "https://")), f"{where}.url must be an http(s) URL, got '{self.url}'.")
        _require(
            re.fullmatch(r"[0-9a-f]{32}", self.md5) is not None,
            f"{where}.md5 must be 32 lowercase hex digits, got '{self.md5}'.",
        )


@dataclass(frozen=True)
class DataConfig(Section):
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"truncate": ("head", "tail", "head_tail"), "pad": ("post", "pre")}

    valid_ratio: float = 0.2
    split_seed: int = 0
    vocab_size: int = 10000
    min_freq: int = 10
    fix_length: int = 200
    # Which fix_length tokens a longer review keeps: the first (torchtext-legacy), the last, or the
    # first and last halves (the end of a review often states the verdict).
    truncate: str = "head"
    # Where a shorter review's padding goes: after it (torchtext) or before it (Keras pad_sequences),
    # which puts every review's last token in the last step.
    pad: str = "post"

    def check(self, where: str) -> None:
        super().check(where)
        _require(0.0 < self.valid_ratio < 1.0, f"{where}.valid_ratio must be in (0, 1), got {self.valid_ratio}.")
        _require(self.vocab_size >= 1, f"{where}.vocab_size must be >= 1, got {self.vocab_size}.")
        _require(self.min_freq >= 1, f"{where}.min_freq must be >= 1, got {self.min_freq}.")
        _require(self.fix_length >= 1, f"{where}.fix_length must be >= 1, got {self.fix_length}.")
        _require(self.split_seed >= 0, f"{where}.split_seed must be >= 0, got {self.split_seed}.")


@dataclass(frozen=True)
class OrderDataConfig(Section):
    """The temporal-order task (Hochreiter & Schmidhuber 1997, experiment 6a)."""

    train_size: int = 10000
    valid_size: int = 2000
    test_size: int = 2000
    min_length: int = 70
    max_length: int = 80
    early_window: tuple[int, int] = (10, 20)
    late_window: tuple[int, int] = (50, 60)
    seed: int = 0

    def check(self, where: str) -> None:
        super().check(where)
        for name in ("train_size", "valid_size", "test_size"):
            _require(getattr(self, name) >= 4, f"{where}.{name} must be >= 4 (one per class), got {getattr(self, name)}.")
        _require(self.seed >= 0, f"{where}.seed must be >= 0, got {self.seed}.")
        _require(
            1 <= self.min_length <= self.max_length,
            f"{where}.min_length must be >= 1 and <= max_length, got {self.min_length} and {self.max_length}.",
        )
        for name in ("early_window", "late_window"):
            first, last = getattr(self, name)
            # Position 0 holds E and the last position holds B, so windows live in 1 .. min_length - 2.
            _require(
                1 <= first <= last <= self.min_length - 2,
                f"{where}.{name} must satisfy 1 <= first <= last <= min_length - 2 ({self.min_length - 2}), "
                f"got [{first}, {last}].",
            )
        _require(
            self.early_window[1] < self.late_window[0],
            f"{where}.early_window must end before late_window starts, got {list(self.early_window)} "
            f"and {list(self.late_window)}.",
        )


@dataclass(frozen=True)
class ModelConfig(Section):
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "cell": ("rnn", "lstm", "gru"),
        "nonlinearity": ("tanh", "relu"),
        "input_encoding": ("embedding", "one_hot"),
        "readout": ("last", "mean", "max", "mean_max", "concat"),
        "activation": ("relu", "sigmoid", "tanh", "leaky_relu"),
        "init": ("torch", "keras"),
    }
    LATER_KEYS: ClassVar[tuple[str, ...]] = ("lower_layer_sizes",)

    cell: str = "rnn"
    nonlinearity: str = "tanh"  # only used by cell=rnn
    input_encoding: str = "embedding"
    embedding_dim: int = 128  # ignored for input_encoding=one_hot
    embedding_dropout: float = 0.0
    # Share of time steps whose whole input vector is zeroed in training (word dropout): the model
    # cannot lean on any single word. embedding_dropout zeroes single features instead.
    word_dropout: float = 0.0
    hidden_size: int = 256
    num_layers: int = 1
    # Recurrent layers of their own sizes below the num_layers x hidden_size stack, bottom first:
    # [64] with hidden_size 32 is the Keras write-up's SimpleRNN(64) -> SimpleRNN(32).
    lower_layer_sizes: tuple[int, ...] = ()
    bidirectional: bool = False
    dropout: float = 0.5
    readout: str = "last"
    # The write-ups read output[:, -1]: for a review shorter than fix_length that is a padding step.
    # True reproduces that bug on purpose; False reads the true last token.
    last_at_padded_end: bool = False
    activation: str = "relu"
    head_size: int = 256  # 0: the readout feeds the output layer directly
    # Independently initialised copies trained side by side (own optimiser, batch order seed + i);
    # the prediction averages their class probabilities. 1: a single network.
    members: int = 1
    # Initial weights: torch's defaults, or Keras's (glorot-uniform input and dense weights,
    # orthogonal recurrent weights, zero biases, LSTM forget-gate bias 1, embedding U(-0.05, 0.05)).
    init: str = "torch"

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Hidden size of every recurrent layer, bottom to top; the last one is what the readout sees."""
        return (*self.lower_layer_sizes, *(self.hidden_size,) * self.num_layers)

    def check(self, where: str) -> None:
        super().check(where)
        for name in ("embedding_dim", "hidden_size", "num_layers", "members"):
            _require(getattr(self, name) >= 1, f"{where}.{name} must be >= 1, got {getattr(self, name)}.")
        _require(all(size >= 1 for size in self.lower_layer_sizes),
                 f"{where}.lower_layer_sizes must hold sizes >= 1, got {list(self.lower_layer_sizes)}.")
        _require(self.head_size >= 0, f"{where}.head_size must be >= 0 (0 = no hidden head layer), got {self.head_size}.")
        for name in ("dropout", "embedding_dropout", "word_dropout"):
            value = getattr(self, name)
            _require(0.0 <= value < 1.0, f"{where}.{name} must be in [0, 1), got {value}.")


@dataclass(frozen=True)
class TrainConfig(Section):
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "device": ("auto", "cpu", "cuda", "mps"),
        "lr_schedule": ("constant", "cosine"),
        "optimizer": ("adam", "rmsprop", "sgd"),
        "keep": ("best", "last"),
    }
    LATER_KEYS: ClassVar[tuple[str, ...]] = ("keep",)

    epochs: int = 5
    batch_size: int = 100
    lr: float = 1e-4
    # adam (torch defaults), rmsprop (Keras's defaults: rho 0.9, epsilon 1e-7, as the Keras write-up
    # ran it) or sgd (plain, no momentum).
    optimizer: str = "adam"
    # cosine: the learning rate falls from `lr` to 0 along a half cosine, stepped after every batch,
    # so the last epochs take small steps instead of bouncing around at the peak rate.
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global gradient norm; 0 disables clipping
    # The weights the checkpoint keeps: the epoch with the best validation accuracy, or the last
    # epoch's (Keras's fit returns those; the Keras write-up's figure is after its last epoch).
    keep: str = "best"
    seed: int = 0
    device: str = "auto"
    # torch intra-op CPU threads for training; 0 = torch's default (one per core), or a fixed 2 at the
    # runtime.cross_vendor level (MKL's COMPATIBLE GEMMs depend on the count). Tiny models (the order
    # task's hidden 4) run several times slower with >1 thread on a busy CPU.
    threads: int = 0

    def check(self, where: str) -> None:
        super().check(where)
        _require(self.epochs >= 1, f"{where}.epochs must be >= 1, got {self.epochs}.")
        _require(self.batch_size >= 1, f"{where}.batch_size must be >= 1, got {self.batch_size}.")
        _require(self.lr > 0.0, f"{where}.lr must be > 0, got {self.lr}.")
        _require(self.weight_decay >= 0.0, f"{where}.weight_decay must be >= 0, got {self.weight_decay}.")
        _require(self.grad_clip >= 0.0, f"{where}.grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip}.")
        _require(self.seed >= 0, f"{where}.seed must be >= 0, got {self.seed}.")
        _require(self.threads >= 0, f"{where}.threads must be >= 0 (0 = torch's default), got {self.threads}.")


@dataclass(frozen=True)
class BaselineConfig(Section):
    """TF-IDF + logistic regression on the same token-id inputs as the recurrent models."""

    ngram_max: int = 1
    c_grid: tuple[int, int] = (-2, 2)  # log10 range of C values tried on validation
    max_iter: int = 1000

    def check(self, where: str) -> None:
        super().check(where)
        _require(self.ngram_max >= 1, f"{where}.ngram_max must be >= 1, got {self.ngram_max}.")
        _require(self.c_grid[0] <= self.c_grid[1], f"{where}.c_grid must be [low, high] with low <= high.")
        _require(self.max_iter >= 1, f"{where}.max_iter must be >= 1, got {self.max_iter}.")


@dataclass(frozen=True)
class RuntimeConfig(Section):
    """How the math libraries run; read before torch loads (stages/runtime.py)."""

    # Pin kernel ISAs, threads and dropout masks so the same params give the same bits on any x86-64
    # CPU with AVX2 of one vendor (stages/runtime.py; cost: python -m bench --only repro).
    reproducible: bool = True
    # Also MKL's COMPATIBLE branch, so Intel and AMD CPUs agree too: ~2-3x slower CPU training.
    cross_vendor: bool = False


@dataclass(frozen=True)
class Variant:
    name: str
    model: ModelConfig
    train: TrainConfig


@dataclass(frozen=True)
class Study:
    """A baseline model/train config plus named variants that override it."""

    name: str
    model: ModelConfig
    train: TrainConfig
    variants: dict[str, Variant] = field(default_factory=dict)

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise ConfigError(
                f"Unknown variant '{name}' in study '{self.name}'.{did_you_mean(name, list(self.variants))} "
                f"Variants: {', '.join(self.variants) or '(none)'}."
            )
        return self.variants[name]


@dataclass(frozen=True)
class Params:
    download: DownloadConfig
    data: DataConfig
    baseline: BaselineConfig
    order_data: OrderDataConfig
    studies: dict[str, Study]
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def study(self, name: str) -> Study:
        if name not in self.studies:
            raise ConfigError(f"Unknown study '{name}'.{did_you_mean(name, list(self.studies))} Studies: {', '.join(STUDIES)}.")
        return self.studies[name]

    def find_variant(self, name: str) -> tuple[Study, Variant]:
        for study in self.studies.values():
            if name in study.variants:
                return study, study.variants[name]
        every = [v for s in self.studies.values() for v in s.variants]
        raise ConfigError(f"Unknown variant '{name}'.{did_you_mean(name, every)} Variants: {', '.join(every)}.")


TOP_LEVEL_KEYS = ("download", "data", "model", "train", "variants", "baseline", "order", "runtime")
ORDER_KEYS = ("data", "model", "train", "variants")


def _check_keys(raw: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in allowed:
            place = f"{where}.{key}" if where else key
            raise ConfigError(
                f"Unknown key '{place}' in params.yaml.{did_you_mean(key, allowed)} Valid keys: {', '.join(allowed)}."
            )


def _parse_variants(raw: Any, model: ModelConfig, train: TrainConfig, where: str) -> dict[str, Variant]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must map variant names to overrides, e.g. `relu: {{model: {{activation: relu}}}}`.")
    variants: dict[str, Variant] = {}
    for name, overrides in raw.items():
        place = f"{where}.{name}"
        if not isinstance(name, str) or not VARIANT_NAME.match(name):
            raise ConfigError(f"Variant name {name!r} in {where} must use letters, digits, '_' or '-' only.")
        overrides = overrides or {}
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"{place} must be a mapping with 'model' and/or 'train' overrides.")
        _check_keys(overrides, ("model", "train"), place)
        variants[name] = Variant(
            name=name,
            model=_override(model, overrides.get("model"), f"{place}.model"),
            train=_override(train, overrides.get("train"), f"{place}.train"),
        )
    return variants


def _override(base: Section, raw: Any, where: str) -> Any:
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys to values.")
    known = {f.name for f in fields(base)}
    for key in raw or {}:
        if key not in known:
            raise ConfigError(
                f"{where}.{key}: a variant can only override keys that exist.{did_you_mean(key, sorted(known))} "
                f"Valid keys: {', '.join(f.name for f in fields(base))}."
            )
    return type(base).from_dict({**base.to_dict(), **(raw or {})}, where)


def _parse_study(name: str, raw: Mapping[str, Any], where_prefix: str) -> Study:
    def place(key: str) -> str:
        return f"{where_prefix}{key}"

    model = ModelConfig.from_dict(raw.get("model"), place("model"))
    train = TrainConfig.from_dict(raw.get("train"), place("train"))
    variants = _parse_variants(raw.get("variants"), model, train, place("variants"))
    return Study(name=name, model=model, train=train, variants=variants)


def parse_params(raw: Any) -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("params.yaml must be a mapping of sections (data, model, train, variants, ...).")
    _check_keys(raw, TOP_LEVEL_KEYS, "")
    order_raw = raw.get("order") or {}
    if not isinstance(order_raw, Mapping):
        raise ConfigError("params.yaml: 'order' must be a mapping with data, model, train and variants.")
    _check_keys(order_raw, ORDER_KEYS, "order")
    studies = {
        IMDB_STUDY: _parse_study(IMDB_STUDY, raw, ""),
        ORDER_STUDY: _parse_study(ORDER_STUDY, order_raw, "order."),
    }
    clash = set(studies[IMDB_STUDY].variants) & set(studies[ORDER_STUDY].variants)
    if clash:
        raise ConfigError(
            f"Variant names must be unique across studies (they name metrics/<variant>.json): {', '.join(sorted(clash))}."
        )
    return Params(
        download=DownloadConfig.from_dict(raw.get("download"), "download"),
        data=DataConfig.from_dict(raw.get("data"), "data"),
        baseline=BaselineConfig.from_dict(raw.get("baseline"), "baseline"),
        order_data=OrderDataConfig.from_dict(order_raw.get("data"), "order.data"),
        studies=studies,
        runtime=RuntimeConfig.from_dict(raw.get("runtime"), "runtime"),
    )


MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_unique_keys(node: yaml.Node, where: list[str], name: str) -> None:
    """Refuse a mapping that repeats a key, as DVC's YAML reader does; PyYAML would keep the last silently."""
    if isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            _check_unique_keys(item, [*where, str(position)], name)
    if not isinstance(node, yaml.MappingNode):
        return
    first_lines: dict[tuple[str, str], int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
            continue  # `<<:` merges may override on purpose
        key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
        if key in first_lines:
            place = f"under '{'.'.join(where)}'" if where else "at the top level"
            raise ConfigError(
                f"{name} line {line}: duplicate key '{key_node.value}' {place} (first on line {first_lines[key]}). "
                f"Keep one of them."
            )
        first_lines[key] = line
        _check_unique_keys(value_node, [*where, key_node.value], name)


def parse_params_yaml(text: str, name: str = str(PARAMS_FILE)) -> Any:
    """The raw params mapping, refusing invalid YAML and duplicate keys (`name` labels the messages)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, [], name)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ConfigError(f"{name} is not valid YAML: {error}") from error
    finally:
        loader.dispose()


def read_params_file(path: Path | str = PARAMS_FILE) -> Any:
    """The raw params.yaml mapping (for tools that edit it), checked like load_params checks it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run the stage from the repository root (where params.yaml is).")
    return parse_params_yaml(path.read_text(encoding="utf-8"), str(path))


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    return parse_params(read_params_file(path))


def model_from_dict(raw: Mapping[str, Any]) -> ModelConfig:
    return ModelConfig.from_dict(raw, "checkpoint.config.model")


__all__ = [
    "ConfigError",
    "DataConfig",
    "DownloadConfig",
    "ModelConfig",
    "OrderDataConfig",
    "Params",
    "RuntimeConfig",
    "Study",
    "TrainConfig",
    "Variant",
    "load_params",
    "parse_params",
    "parse_params_yaml",
    "read_params_file",
    "replace",
]
