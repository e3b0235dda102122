"""Flat TOML configs (training recipes, export profiles) backed by frozen dataclasses.

The dataclass is the single source of truth for names, types and defaults; files and CLI
overrides are validated against it, and every problem is reported at once.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from mtop_edge.errors import MtopEdgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(MtopEdgeError):
    """A config file or override that does not fit the config's fields."""

    exit_code = 2


def field_types(cls: type) -> dict[str, type]:
    """Each field's type: int, float, str, bool, or an Enum class (whose values the file and CLI spell)."""
    return typing.get_type_hints(cls)


def load_config(
    cls: type[T],
    path: str | Path | None,
    overrides: Mapping[str, Any],
    choices: Mapping[str, tuple] = {},
    legacy: Callable[[dict], dict] | None = None,
) -> T:
    """Read a flat TOML file (or start from defaults), apply overrides (None = keep), validate.

    ``legacy`` rewrites the file's fields written by an older version into today's names.

    Raises:
        ConfigError: unreadable TOML, unknown fields, wrong types or values outside ``choices``.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
        if legacy is not None:
            values = legacy(values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown field(s): {', '.join(unknown)}; valid: {', '.join(names)}")
    problems = []
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        expected = types[f.name]
        if isinstance(expected, type) and issubclass(expected, Enum):
            valid = [member.value for member in expected]
            if isinstance(value, expected) or value in valid:
                values[f.name] = expected(value)
            else:
                problems.append(f"{f.name} must be one of {', '.join(valid)}, got {value!r}")
            continue
        takes_float = expected is float or float in typing.get_args(expected)  # also `float | None`
        if takes_float and isinstance(value, int) and not isinstance(value, bool):
            values[f.name] = value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            problems.append(f"{f.name} must be {getattr(expected, '__name__', expected)}, got {value!r}")
        elif f.name in choices and value not in choices[f.name]:
            problems.append(f"{f.name} must be one of {', '.join(map(str, choices[f.name]))}, got {value!r}")
    if problems:
        raise ConfigError("bad config: " + "; ".join(problems))
    return cls(**values)


def to_toml(config: Any) -> str:
    """A config dataclass as flat TOML."""
    lines = []
    for key, value in dataclasses.asdict(config).items():
        if isinstance(value, Enum):
            value = value.value
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
