"""Typed config dataclasses <-> JSON, strictly.

Every component has one dataclass config. ``config_from_dict`` rejects unknown keys (a typo must not be
silently ignored) and checks the basic types (floats must be finite: Python's json reads NaN and Infinity), so a bad ``config.json`` fails with a one-line message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

from xprompt.errors import ConfigError
from xprompt.io_utils import atomic_write_text

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _check_type(cls, name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):  # JSON NaN/Infinity
        raise ConfigError(f"{cls.__name__}.{name} must be a finite number, got {value}")
    wrong = hint in (int, float, str, bool) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    )
    if wrong:
        raise ConfigError(
            f"{cls.__name__}.{name} must be {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        return type(value)(value) if origin is list else tuple(value)
    return value


def config_from_dict(cls: type[T], data: dict, *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong basic types raise ``ConfigError``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown config key(s) {unknown}; valid keys: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _check_type(cls, k, v, hints.get(k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def load_json_object(path: str | Path, what: str = "config file") -> dict:
    """Read a JSON file that must hold an object; missing file / bad JSON -> ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path) -> T:
    return config_from_dict(cls, load_json_object(path), where=str(path))


def save_config(cfg: Any, path: str | Path) -> None:
    atomic_write_text(Path(path), json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n")
