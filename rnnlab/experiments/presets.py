"""Run a named, committed experiment definition (presets/<name>.yaml) as one `dvc exp run`.

A preset file holds `params` (a nested mapping merged into params.yaml; keys it lacks are added),
`targets` (the stages to run), `experiment` (the default name) and `description`. The merged params
are checked like params.yaml itself before DVC is called, so a typo fails at once with a "did you mean".
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rnnlab.config.params import Params, did_you_mean, parse_params, parse_params_yaml
from rnnlab.core.errors import ConfigError
from rnnlab.core.files import PIPELINE_FILE

PRESETS_DIR = Path("presets")
PRESET_KEYS = ("experiment", "description", "params", "targets")
# Which params mapping a foreach stage iterates over, so a target `stage@variant` can be checked.
TASK_OF_FOREACH = {"${variants}": "imdb", "${order.variants}": "order"}


@dataclass(frozen=True)
class Preset:
    name: str
    experiment: str
    description: str
    params: dict[str, Any]
    targets: list[str]


def available(directory: Path = PRESETS_DIR) -> list[str]:
    return sorted(path.stem for path in directory.glob("*.yaml"))


def load_preset(name: str, directory: Path = PRESETS_DIR) -> Preset:
    path = directory / f"{name}.yaml"
    if not path.is_file():
        names = available(directory)
        raise ConfigError(
            f"No preset '{name}' in {directory}/.{did_you_mean(name, names)} Presets: {', '.join(names) or '(none)'}."
        )
    raw = parse_params_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path} must be a mapping with keys {', '.join(PRESET_KEYS)}.")
    for key in raw:
        if key not in PRESET_KEYS:
            raise ConfigError(
                f"Unknown key '{key}' in {path}.{did_you_mean(key, PRESET_KEYS)} Valid keys: {', '.join(PRESET_KEYS)}."
            )
    params, targets = raw.get("params") or {}, raw.get("targets") or []
    if not isinstance(params, Mapping) or not params:
        raise ConfigError(f"{path}: 'params' must be a non-empty mapping of params.yaml sections.")
    if not isinstance(targets, list) or not all(isinstance(target, str) for target in targets):
        raise ConfigError(f"{path}: 'targets' must be a list of stage names, e.g. [evaluate@strong].")
    return Preset(name, str(raw.get("experiment") or name), str(raw.get("description") or ""), dict(params), targets)


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        nested = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = deep_merge(merged[key], value) if nested else copy.deepcopy(value)
    return merged


def changed_params(base: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys whose value changed; a whole added (removed) key is prefixed with + (~)."""
    changes: dict[str, Any] = {}
    for key in sorted(set(base) | set(new), key=str):
        path = f"{prefix}{key}"
        if key not in new:
            changes[f"~{path}"] = None
        elif key not in base:
            changes[f"+{path}"] = new[key]
        elif isinstance(base[key], dict) and isinstance(new[key], dict):
            changes.update(changed_params(base[key], new[key], f"{path}."))
        elif base[key] != new[key]:
            changes[path] = new[key]
    return changes


def setting(key: str, value: Any) -> str:
    """A `-S` argument: the value in YAML flow style, as `dvc exp run -S` parses it."""
    if key.startswith("~"):
        return key
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def apply_setting(params: dict[str, Any], argument: str) -> dict[str, Any]:
    """params with one `-S` argument applied as DVC does: `key=value` changes, `+key=value` adds, `~key` removes."""
    removing = argument.startswith("~")
    key, separator, text = argument.lstrip("~").partition("=")
    if not removing and not separator:
        raise ConfigError(f"-S {argument}: expected key=value, +key=value or ~key.")
    adding = key.startswith("+")
    *parents, last = key.lstrip("+").split(".")
    result = copy.deepcopy(params)
    node = result
    for depth, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            if not adding:
                raise ConfigError(f"-S {argument}: '{'.'.join(parents[: depth + 1])}' is not in params.yaml.")
            node[part] = {}
        node = node[part]
    if removing:
        node.pop(last, None)
    elif last not in node and not adding:
        raise ConfigError(
            f"-S {argument}: '{key}' is not in params.yaml.{did_you_mean(last, list(node))} Use -S +{key}=... to add it."
        )
    else:
        node[last] = yaml.safe_load(text)
    return result


def check_targets(targets: list[str], params: Params) -> None:
    """Each target is a stage of dvc.yaml, or `stage@variant` of a foreach stage over a task's variants."""
    stages = (yaml.safe_load(PIPELINE_FILE.read_text(encoding="utf-8")) or {}).get("stages", {})
    for target in targets:
        stage, at, key = target.partition("@")
        if stage not in stages or (at and "foreach" not in stages[stage]):
            raise ConfigError(f"Target '{target}' is not a stage of {PIPELINE_FILE}.{did_you_mean(stage, sorted(stages))}")
        if at:
            task = TASK_OF_FOREACH.get(str(stages[stage]["foreach"]), "")
            variants = list(params.task(task).variants) if task else []
            if key not in variants:
                raise ConfigError(
                    f"Target '{target}': no variant '{key}' for {stage}.{did_you_mean(key, variants)} Variants: {', '.join(variants)}."
                )


def experiment_arguments(
    preset: Preset, base: dict[str, Any], extra: list[str] | None = None
) -> tuple[list[str], dict[str, Any]]:
    """The `dvc exp run` arguments (-S settings, then targets) for `preset` plus `extra` on top of `base`,
    checked, and the params they give."""
    merged = deep_merge(base, preset.params)
    settings = [setting(key, value) for key, value in changed_params(base, merged).items()]
    for argument in extra or []:
        merged = apply_setting(merged, argument)
    check_targets(preset.targets, parse_params(merged))  # the whole merged file, as every stage checks it
    arguments = [argument for each in [*settings, *(extra or [])] for argument in ("-S", each)]
    return [*arguments, *preset.targets], merged
