"""Stage configs: frozen dataclasses built from plain mappings (Python or TOML), checked at the door.

A config mapping may name only the dataclass's fields; anything else is refused with a one-line
error naming the stage, the key and the keys allowed. Values are checked against the field's
declared type (str, int, float, bool, list/tuple of those, dict). `explicit` records which keys
the user set: a stage may apply a default column role only where the column exists, but a
column the user named must exist.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from stages.errors import StageConfigError

C = TypeVar("C")


def parse_config(cls: type[C], stage: str, values: Mapping[str, Any] | None) -> C:
    """Build `cls` from `values`, refusing unknown keys and values of the wrong type."""
    if values is None:
        values = {}
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise StageConfigError(
            f"{stage}: config must be a table of settings, got {type(values).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "explicit"}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise StageConfigError(f"{stage}: unknown config key {key!r} (allowed: {allowed})")
        kwargs[key] = _check(stage, key, value, hints[key])
    try:
        return cls(**kwargs, explicit=frozenset(kwargs))  # type: ignore[call-arg]
    except (TypeError, ValueError) as exc:
        if isinstance(exc, StageConfigError):
            raise
        raise StageConfigError(f"{stage}: {exc}") from exc


def _check(stage: str, key: str, value: Any, hint: Any) -> Any:
    """Check `value` against `hint` and return it normalised (lists become tuples)."""
    if _matches(value, hint):
        return _freeze(value)
    raise StageConfigError(
        f"{stage}: config {key!r} must be {_describe(hint)}, got {type(value).__name__} {value!r}"[
            :300
        ]
    )


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        if origin is tuple:
            return len(value) == len(args) and all(
                _matches(v, a) for v, a in zip(value, args, strict=True)
            )
        return all(_matches(item, args[0]) for item in value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        if not args:
            return True
        return all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return False


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _freeze(v) for k, v in value.items()}
    return value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        return f"a list of {_describe(args[0])}"
    if origin in (dict, Mapping):
        return "a table" if not args else f"a table of {_describe(args[1])}"
    if hint is type(None):
        return "none"
    return getattr(hint, "__name__", str(hint))


def check_timezone(stage: str, name: str) -> str:
    """`name` if pandas knows the time zone, else a one-line `StageConfigError`."""
    import pandas as pd

    try:
        pd.Timestamp("2026-01-01", tz=name)
    except Exception as exc:  # pandas raises several types for a bad name ("" -> IndexError)
        raise StageConfigError(f"{stage}: unknown timezone {name!r}") from exc
    return name
