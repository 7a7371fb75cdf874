"""params.yaml resolved per stage: the `params` stage checks the whole file once, then writes for each
stage exactly the values it reads; every other stage depends on its own file instead of params.yaml.

Why files instead of `params:` lists in dvc.yaml:
- a bad value stops the pipeline in the `params` stage, before DVC removes any other stage's outputs
  (DVC deletes a stage's outputs just before running it);
- a stage reruns only when a value it reads changes: `variants/<name>.json` holds the variant's
  resolved model/train config, so editing a baseline key that every variant overrides reruns nothing;
- DVC parses params.yaml once per `dvc repro` instead of once per stage, and dvc.lock records the
  params once.

Layout of the folder (dvc.yaml var `params`), each file a mapping of section name -> values:
    download.json, preprocess.json, xy.json, order_data.json, baseline.json
    tasks/<task>.json       {"task": {"name": ..., "variants": [...]}}  (the gradient figure's variant list)
    variants/<name>.json    {"variant": {"name", "task", "overrides"}, "model": ..., "train": ..., "runtime": ...}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from rnnlab.config.fields import Section
from rnnlab.config.params import Params, Variant
from rnnlab.config.sections import (BaselineConfig, DataConfig, DownloadConfig, ModelConfig, OrderDataConfig,
                                    RuntimeConfig, TrainConfig)
from rnnlab.core.errors import UserError
from rnnlab.core.files import atomic_directory, write_json

# The keys of `data` each text stage reads (tests/unit/config checks the library reads no others).
PREPROCESS_KEYS = ("valid_ratio", "split_seed", "vocab_size", "min_freq")
XY_KEYS = ("fix_length", "truncate", "pad")
RERUN = "Run `dvc repro params` (or `dvc repro`) to write it again from params.yaml."

S = TypeVar("S", bound=Section)


def _only(section: Section, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: getattr(section, key) for key in keys}


def _variant_file(variant: Variant, runtime: RuntimeConfig) -> dict[str, Any]:
    return {"variant": {"name": variant.name, "task": variant.task, "overrides": sorted(variant.overrides)},
            "model": variant.model.to_dict(), "train": variant.train.to_dict(), "runtime": runtime.to_dict()}


def resolved_files(params: Params) -> dict[str, dict[str, Any]]:
    """Relative path -> contents of every resolved file, for `params` (already validated)."""
    files: dict[str, dict[str, Any]] = {
        "download.json": {"download": params.download.to_dict()},
        "preprocess.json": {"data": _only(params.data, PREPROCESS_KEYS)},
        "xy.json": {"data": _only(params.data, XY_KEYS)},
        "order_data.json": {"order_data": params.order_data.to_dict()},
        "baseline.json": {"baseline": params.baseline.to_dict(), "runtime": params.runtime.to_dict()},
    }
    for task in params.tasks.values():
        files[f"tasks/{task.name}.json"] = {"task": {"name": task.name, "variants": list(task.variants)}}
        files.update({f"variants/{name}.json": _variant_file(variant, params.runtime) for name, variant in task.variants.items()})
    return files


def write_resolved(params: Params, out_dir: Path) -> int:
    """All resolved files in `out_dir` at once (a variant removed from params.yaml loses its file); returns the count."""
    files = resolved_files(params)
    with atomic_directory(out_dir) as temporary:
        for relative, payload in files.items():
            write_json(temporary / relative, payload)
    return len(files)


def _read(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: it is written by the params stage. {RERUN}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}). {RERUN}") from error
    if not isinstance(raw, dict):
        raise UserError(f"{path} is not a resolved params file. {RERUN}")
    return raw


def _section(raw: dict[str, Any], name: str, section: type[S], path: Path) -> S:
    if name not in raw:
        raise UserError(f"{path} has no '{name}' section. {RERUN}")
    return section.from_dict(raw[name], f"{path}: {name}")


def read_section(path: Path, name: str, section: type[S]) -> S:
    """One section of a resolved file, checked like params.yaml (a hand-edited file fails the same way)."""
    return _section(_read(path), name, section, Path(path))


def read_download(path: Path) -> DownloadConfig:
    return read_section(path, "download", DownloadConfig)


def read_data(path: Path) -> DataConfig:
    """preprocess.json or xy.json: the `data` keys that stage reads (the others keep their defaults, unread)."""
    return read_section(path, "data", DataConfig)


def read_order_data(path: Path) -> OrderDataConfig:
    return read_section(path, "order_data", OrderDataConfig)


def read_baseline(path: Path) -> tuple[BaselineConfig, RuntimeConfig]:
    raw = _read(path)
    return _section(raw, "baseline", BaselineConfig, path), _section(raw, "runtime", RuntimeConfig, path)


def read_task_variants(path: Path) -> tuple[str, list[str]]:
    """(task name, its variant names) from tasks/<task>.json."""
    task = _read(path).get("task")
    if not isinstance(task, dict) or not isinstance(task.get("variants"), list):
        raise UserError(f"{path} has no task with a variant list. {RERUN}")
    return str(task.get("name")), [str(name) for name in task["variants"]]


def read_variant(path: Path) -> tuple[Variant, RuntimeConfig]:
    """A variant as its train and evaluate stages see it, and the runtime it runs under."""
    raw = _read(path)
    identity = raw.get("variant")
    if not isinstance(identity, dict) or not {"name", "task", "overrides"} <= set(identity):
        raise UserError(f"{path} does not name its variant. {RERUN}")
    variant = Variant(str(identity["name"]), _section(raw, "model", ModelConfig, path), _section(raw, "train", TrainConfig, path),
                      str(identity["task"]), frozenset(map(str, identity["overrides"])))
    return variant, _section(raw, "runtime", RuntimeConfig, path)

