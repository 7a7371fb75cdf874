"""One generic check for every params key, driven by the section's annotations and field metadata.

A key's type annotation says what YAML value it takes (bool, int, float, str, a `Literal` of choices,
`tuple[int, int]`, `tuple[int, ...]`); `setting(default, ...)` adds a range, a pattern or a note for
the message. `Section.from_dict` refuses unknown keys with a "did you mean", checks every value
with `check_value`, and then the section's own `check` for rules that tie several keys together.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, Mapping

from rnnlab.core.errors import ConfigError

FIELD_CHECK = "check"  # the metadata key `setting` stores its Check under
# Stored in checkpoints only when set (see Section.to_stored_dict).
LATER_KEY = "later"


def did_you_mean(value: object, choices: typing.Iterable[object]) -> str:
    close = difflib.get_close_matches(str(value), [str(choice) for choice in choices], n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


@dataclass(frozen=True)
class Check:
    """What a key's value must satisfy beyond its type; the messages say it in the same words."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: value > low, else value >= low
    high_open: bool = False  # True: value < high, else value <= high
    pattern: str | None = None  # a regular expression a string must match in full
    pattern_text: str = ""  # the pattern in words, e.g. "32 lowercase hex digits"
    note: str = ""  # said after the rule, e.g. "(0 = no hidden head layer)"

    def holds(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def rule(self) -> str:
        """`in (0, 1)`, `in [0, 1)`, `>= 1`, `> 0` or `<= 5`."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


def setting(default: Any, later: bool = False, **check: Any) -> Any:
    """A section field with its default and what its value must satisfy (keywords of `Check`).

    later=True: a key added after checkpoints were first committed; see Section.to_stored_dict.
    """
    metadata = {FIELD_CHECK: Check(**check), LATER_KEY: later}
    if isinstance(default, (list, dict, set)):
        raise TypeError("section defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=metadata)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """The value as the annotation's type, or a ConfigError saying what the key takes."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}.")
        return value
    if annotation is int:
        if not _integer(value):
            raise ConfigError(f"{where} must be an integer, got {value!r}.")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}.")
        return float(value)
    if annotation is str or origin is Literal:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}.")
        if origin is Literal and value not in arguments:
            raise ConfigError(f"Invalid {where}: '{value}'.{did_you_mean(value, arguments)} "
                              f"Valid choices: {', '.join(arguments)}.")
        return value
    if origin is tuple and arguments == (int, int):
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(map(_integer, value)):
            raise ConfigError(f"{where} must be a list of two integers [first, last], got {value!r}.")
        return tuple(value)
    if origin is tuple and arguments == (int, Ellipsis):
        if not isinstance(value, (list, tuple)) or not all(map(_integer, value)):
            raise ConfigError(f"{where} must be a list of integers such as [64], got {value!r}.")
        return tuple(value)
    raise TypeError(f"unsupported annotation {annotation!r} for {where}")


def check_value(value: Any, annotation: Any, check: Check, where: str) -> Any:
    """Type first, then the range (every element of a list) and the pattern."""
    value = _check_type(value, annotation, where)
    note = f" {check.note}" if check.note else ""
    if check.low is not None or check.high is not None:
        items = value if isinstance(value, tuple) else (value,)
        if not all(check.holds(item) for item in items):
            shown = list(value) if isinstance(value, tuple) else value
            holds = "must hold integers" if isinstance(value, tuple) else "must be"
            raise ConfigError(f"{where} {holds} {check.rule()}{note}, got {shown}.")
    if check.pattern is not None and re.fullmatch(check.pattern, value) is None:
        raise ConfigError(f"{where} must be {check.pattern_text}{note}, got '{value}'.")
    return value


@functools.cache
def _annotations(section: type) -> dict[str, Any]:
    return typing.get_type_hints(section)


@dataclass(frozen=True)
class Section:
    """Base for a params section: strict keys, typed values, each key's own rule, then `check`."""

    RETIRED: ClassVar[dict[str, str]] = {}  # key -> what happened to it and what to do, for keys that are gone

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> "Section":
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a mapping of keys to values, got {type(raw).__name__}.")
        known = {field.name: field for field in fields(cls)}
        for key in raw:
            if key in cls.RETIRED:
                raise ConfigError(f"{where}.{key} {cls.RETIRED[key]}")
            if key not in known:
                raise ConfigError(f"Unknown key '{where}.{key}' in params.yaml.{did_you_mean(key, known)} "
                                  f"Valid keys: {', '.join(known)}.")
        annotations = _annotations(cls)
        values = {name: check_value(raw[name], annotations[name], field.metadata.get(FIELD_CHECK, Check()), f"{where}.{name}")
                  for name, field in known.items() if name in raw}
        section = cls(**values)
        section.check(where)
        return section

    def check(self, where: str) -> None:
        """Rules that tie several keys together; a section overrides it when it has some."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_stored_dict(self) -> dict[str, Any]:
        """to_dict for checkpoints: a later key at its default is left out, so retraining an unchanged
        config writes the same checkpoint bytes as before the key existed (dvc.lock hashes them);
        loading fills the default back in."""
        later_at_default = {field.name for field in fields(self)
                            if field.metadata.get(LATER_KEY) and getattr(self, field.name) == field.default}
        return {key: value for key, value in self.to_dict().items() if key not in later_at_default}


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
