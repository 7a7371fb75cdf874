"""The whole params.yaml, validated: every stage and tool checks the *whole* file before doing any work,
so a typo anywhere (`model.cell: lsmt`, an unknown key, a variant overriding a key that does not exist)
fails fast with a message that names the key and the fix. Each stage then uses only its section.

A task (`imdb`, `order`) is a baseline model/train config plus named variants that override it; the
metrics files call it `study`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from rnnlab.config.fields import Section, did_you_mean
from rnnlab.config.sections import (BaselineConfig, DataConfig, DownloadConfig, ModelConfig, OrderDataConfig,
                                    RuntimeConfig, TrainConfig)
from rnnlab.core.errors import ConfigError

PARAMS_FILE = Path("params.yaml")
IMDB_TASK = "imdb"
ORDER_TASK = "order"
TASKS = (IMDB_TASK, ORDER_TASK)
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
TOP_LEVEL_KEYS = ("download", "data", "model", "train", "variants", "baseline", "order", "runtime")
ORDER_KEYS = ("data", "model", "train", "variants")


@dataclass(frozen=True)
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
        if f"{section}.{key}" in self.overrides:
            return f"{prefix}variants.{self.name}.{section}.{key}"
        return f"{prefix}{section}.{key}"


@dataclass(frozen=True)
class Task:
    """A baseline model/train config plus named variants that override it."""

    name: str
    model: ModelConfig
    train: TrainConfig
    variants: dict[str, Variant] = field(default_factory=dict)

    @property
    def params_prefix(self) -> str:
        """Where the task's sections live in params.yaml: `` for imdb, `order.` for the order task."""
        return "" if self.name == IMDB_TASK else f"{self.name}."

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise ConfigError(f"Unknown variant '{name}' in task '{self.name}'.{did_you_mean(name, self.variants)} "
                              f"Variants: {', '.join(self.variants) or '(none)'}.")
        return self.variants[name]


@dataclass(frozen=True)
class Params:
    download: DownloadConfig
    data: DataConfig
    baseline: BaselineConfig
    order_data: OrderDataConfig
    tasks: dict[str, Task]
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise ConfigError(f"Unknown task '{name}'.{did_you_mean(name, self.tasks)} Tasks: {', '.join(TASKS)}.")
        return self.tasks[name]

    def find_variant(self, name: str) -> tuple[Task, Variant]:
        for task in self.tasks.values():
            if name in task.variants:
                return task, task.variants[name]
        every = [variant for task in self.tasks.values() for variant in task.variants]
        raise ConfigError(f"Unknown variant '{name}'.{did_you_mean(name, every)} Variants: {', '.join(every)}.")


def _check_keys(raw: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in allowed:
            place = f"{where}.{key}" if where else key
            raise ConfigError(f"Unknown key '{place}' in params.yaml.{did_you_mean(key, allowed)} Valid keys: {', '.join(allowed)}.")


def _override(base: Section, raw: Any, where: str) -> Any:
    """`base` with a variant's overrides; only keys the section has can be overridden."""
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys to values.")
    known = [f.name for f in fields(base)]
    for key in raw or {}:
        if key not in known:
            raise ConfigError(f"{where}.{key}: a variant can only override keys that exist.{did_you_mean(key, sorted(known))} "
                              f"Valid keys: {', '.join(known)}.")
    return type(base).from_dict({**base.to_dict(), **(raw or {})}, where)


def _parse_variants(raw: Any, task: str, model: ModelConfig, train: TrainConfig, where: str) -> dict[str, Variant]:
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
        variants[name] = Variant(name, _override(model, overrides.get("model"), f"{place}.model"),
                                 _override(train, overrides.get("train"), f"{place}.train"), task,
                                 frozenset(f"{section}.{key}" for section, keys in overrides.items() for key in keys or {}))
    return variants


def _parse_task(name: str, raw: Mapping[str, Any], prefix: str) -> Task:
    model = ModelConfig.from_dict(raw.get("model"), f"{prefix}model")
    train = TrainConfig.from_dict(raw.get("train"), f"{prefix}train")
    return Task(name, model, train, _parse_variants(raw.get("variants"), name, model, train, f"{prefix}variants"))


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
    tasks = {IMDB_TASK: _parse_task(IMDB_TASK, raw, ""), ORDER_TASK: _parse_task(ORDER_TASK, order_raw, "order.")}
    clash = set(tasks[IMDB_TASK].variants) & set(tasks[ORDER_TASK].variants)
    if clash:
        raise ConfigError(f"Variant names must be unique across tasks (they name metrics/<variant>.json): {', '.join(sorted(clash))}.")
    return Params(
        download=DownloadConfig.from_dict(raw.get("download"), "download"),
        data=DataConfig.from_dict(raw.get("data"), "data"),
        baseline=BaselineConfig.from_dict(raw.get("baseline"), "baseline"),
        order_data=OrderDataConfig.from_dict(order_raw.get("data"), "order.data"),
        tasks=tasks,
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
            raise ConfigError(f"{name} line {line}: duplicate key '{key_node.value}' {place} (first on line {first_lines[key]}). "
                              f"Keep one of them.")
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
