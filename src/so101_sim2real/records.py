"""Small YAML records (board.yaml, camera.yaml, KEY=VALUE settings): read, check each field, say what
is wrong in one line.

:func:`parse_yaml` is the project's YAML reader: YAML 1.1 as PyYAML reads it, except that a number
in exponent form is a float as in YAML 1.2 (``1e-5``, ``1e308``, ``2E3``), where YAML 1.1 wants a
dot and a signed exponent (``1.0e-5``) and reads the rest as text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from types import EllipsisType
from typing import Any, overload

import yaml

from so101_sim2real.errors import So101Error, did_you_mean

_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.1's floats (PyYAML's pattern: sexagesimal, .inf, .nan, underscores) and YAML 1.2's
# exponent forms: 1e5, 1E-5, +2.5e3, .5e1. A plain integer stays an integer.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats (see the module's docstring)."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, _FLOAT if tag == _FLOAT_TAG else pattern) for tag, pattern in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def parse_yaml(text: str) -> Any:
    """YAML text as data, safely (no objects), numbers read as a person means them; raises
    :class:`yaml.YAMLError` as :func:`yaml.safe_load` does."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader


def parse_sets(items: Iterable[str], option: str, example: str) -> list[tuple[str, Any]]:
    """The one ``KEY=VALUE`` grammar of ``--set`` and ``--set-spec``: a dotted key and a YAML value
    (``learner.actor_lr=1e-5``, ``observation.disparity.normalise_region=crop``), in order."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise So101Error(f"{option} {item!r}: expected KEY=VALUE, e.g. {example}")
        try:
            out.append((key.strip(), parse_yaml(raw)))
        except yaml.YAMLError:
            raise So101Error(f"{option} {item!r}: the value is not valid YAML") from None
    return out


def read_yaml(path: str | Path, what: str, name: str | None = None) -> Any:
    """A YAML file's contents; a one-line :class:`So101Error` (starting with ``name``, by default the
    path) when it is missing, unreadable or not YAML."""
    path = Path(path)
    name = name or str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise So101Error(f"{name}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise So101Error(f"{name}: cannot read this {what} ({getattr(exc, 'strerror', None) or exc})") from None
    from so101_sim2real.spec import yaml_problem

    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise So101Error(f"{name}: {yaml_problem(exc)}") from None


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; a one-line :class:`So101Error` for anything else."""
    data = read_yaml(path, what)
    if not isinstance(data, dict):
        raise So101Error(f"{path}: a {what} is a YAML mapping of fields, not {type(data).__name__}")
    return data


class Fields:
    """Typed access to a record's fields; every failure names the file and the field."""

    def __init__(self, data: dict[str, Any], path: str | Path, known: Iterable[str]):
        self.data, self.path, self.known = data, str(path), list(known)
        for key in data:
            if key not in self.known:
                raise self.error(key, "unknown field" + did_you_mean(key, self.known))

    def error(self, name: str, problem: str) -> So101Error:
        return So101Error(f"{self.path}: {name}: {problem}")

    def get(self, name: str, default: Any = ...) -> Any:
        if name not in self.data:
            if default is ...:
                raise self.error(name, "missing")
            return default
        return self.data[name]

    @overload
    def number(self, name: str, default: None, minimum: float | None = None) -> float | None: ...
    @overload
    def number(self, name: str, default: float | EllipsisType = ..., minimum: float | None = None) -> float: ...
    def number(self, name: str, default: Any = ..., minimum: float | None = None) -> float | None:
        value = self.get(name, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(name, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise self.error(name, f"expected a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be at least {minimum}, got {value}")
        return float(value)

    def text(self, name: str, default: Any = ..., choices: Iterable[str] | None = None) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            raise self.error(name, f"expected text, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def flag(self, name: str, default: Any = ...) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {value!r}")
        return value

    def numbers(self, name: str, default: Any = ..., length: Iterable[int] | None = None) -> list[float]:
        value = self.get(name, default)
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            raise self.error(name, f"expected a list of numbers, got {value!r}")
        allowed = list(length) if length is not None else None
        if allowed is not None and len(value) not in allowed:
            raise self.error(name, f"expected {' or '.join(map(str, allowed))} numbers, got {len(value)}")
        return [float(v) for v in value]

    def positive_ints(self, name: str, count: int) -> tuple[int, ...]:
        value = self.get(name)
        if (not isinstance(value, list) or len(value) != count
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            raise self.error(name, f"expected {count} positive whole numbers, got {value!r}")
        return tuple(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
