"""Build each actor's frozen config: defaults, then the TOML file, then PORCH_* variables, then flags."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actors.errors import UsageError
from bus.endpoints import Endpoints, resolve_data_dir
from bus.hub import HubConfig

HUB_KEYS = {
    "fsync": str,
    "batch_max": int,
    "segment_bytes": int,
    "pub_hwm": int,
    "dedup_window": int,
    "marker_interval_s": float,
    "ingest": str,
    "publish": str,
    "request": str,
    "insecure": bool,
}


def load_toml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path}: {exc}") from None


def _section(
    toml: Mapping[str, Any], name: str, keys: dict[str, type], environ: Mapping[str, str]
) -> dict[str, Any]:
    table = toml.get(name, {})
    if not isinstance(table, dict):
        raise UsageError(f"config: [{name}] must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        kind = keys.get(key)
        if kind is None:
            raise UsageError(f"config: [{name}] has unknown key {key!r}; known: {', '.join(keys)}")
        if kind is float and type(value) is int:
            value = float(value)
        if type(value) is not kind:
            raise UsageError(f"config: [{name}] {key} must be {kind.__name__}, got {value!r}")
        values[key] = value
    for key, kind in keys.items():
        text = environ.get(f"PORCH_{name.upper()}_{key.upper()}")
        if text is not None:
            values[key] = _parse_env(f"PORCH_{name.upper()}_{key.upper()}", text, kind)
    return values


def _parse_env(var: str, text: str, kind: type) -> Any:
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise UsageError(f"{var}={text!r}: expected true or false")
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{var}={text!r}: expected {kind.__name__}") from None


def hub_config(
    *,
    data_dir: str | None,
    config_file: str | None,
    environ: Mapping[str, str],
    flags: Mapping[str, Any],
) -> HubConfig:
    """The hub's config from every source, later ones winning; validated."""
    values = _section(load_toml(config_file), "hub", HUB_KEYS, environ)
    values.update({k: v for k, v in flags.items() if v is not None})
    root = resolve_data_dir(data_dir, dict(environ))
    local = Endpoints.local(root)
    endpoints = Endpoints(
        ingest=values.pop("ingest", local.ingest),
        publish=values.pop("publish", local.publish),
        request=values.pop("request", local.request),
    )
    return HubConfig(data_dir=root, endpoints=endpoints, **values)
