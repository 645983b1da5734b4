"""Build each actor's frozen config: defaults, then the TOML file, then PORCH_* variables, then flags."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actors.errors import UsageError
from actors.shared.snapshotter import SnapshotPolicy
from bus.curve import Curve
from bus.endpoints import Endpoints, check, resolve_data_dir, run_dir
from bus.errors import BusError
from bus.hub import HubConfig
from store.retention import RetentionPolicy

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
    "archive": str,
    "archive_after_s": float,
    "archive_max_bytes": int,
    "archive_check_s": float,
}
ORCHESTRATOR_KEYS = {"tasks": str, "insecure": bool}
CURVE_KEYS = {"keys": str, "client": str}
SNAPSHOT_KEYS = {"every_events": int, "every_s": float}
RETENTION_KEYS = {
    "enabled": bool,
    "keep_last": int,
    "keep_days": float,
    "remove_outputs": bool,
    "interval_s": float,
}
SECTIONS = ("hub", "orchestrator", "curve", "snapshots", "retention")
ENV_CONFIG = "PORCH_CONFIG"


def load_toml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with Path(path).open("rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path}: {exc}") from None
    for name in table:
        if name not in SECTIONS:
            raise UsageError(
                f"config file {path}: unknown table [{name}]; known: {', '.join(SECTIONS)}"
            )
    return table


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


def config_path(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """The config file from ``--config``, else ``PORCH_CONFIG``."""
    return flag or environ.get(ENV_CONFIG) or None


def network(
    *, data_dir: str | None, config_file: str | None, environ: Mapping[str, str]
) -> tuple[Endpoints, str]:
    """The hub's endpoints (with CURVE keys when set) and the orchestrator's tasks address.

    Without a config file (or with one that names none) they are the data dir's ipc sockets.
    """
    toml = load_toml(config_file)
    hub = _section(toml, "hub", HUB_KEYS, environ)
    orch = _section(toml, "orchestrator", ORCHESTRATOR_KEYS, environ)
    root = resolve_data_dir(data_dir, dict(environ))
    endpoints = _endpoints(hub, root, toml, environ)
    tasks = orch.get("tasks", f"ipc://{run_dir(root) / 'tasks.sock'}")
    try:
        for address in (*endpoints.all(), tasks):
            check(address)
    except BusError as exc:
        raise UsageError(f"config file {config_file}: {exc}") from None
    if endpoints.curve is not None and not endpoints.is_local():
        try:  # every user of this connects to the hub: its keys must be there now
            endpoints.curve.client_pair()
            endpoints.curve.server_public()
        except BusError as exc:
            raise UsageError(str(exc)) from None
    return endpoints, tasks


def orchestrator_insecure(config_file: str | None, environ: Mapping[str, str]) -> bool:
    """``[orchestrator] insecure``: bind the tasks socket on non-loopback TCP without CURVE."""
    return bool(
        _section(load_toml(config_file), "orchestrator", ORCHESTRATOR_KEYS, environ).get(
            "insecure", False
        )
    )


def _endpoints(
    hub: Mapping[str, Any], root: Path, toml: Mapping[str, Any], environ: Mapping[str, str]
) -> Endpoints:
    """The ``[hub]`` addresses, each defaulting to the data dir's ipc socket, with the keys."""
    local = Endpoints.local(root)
    return Endpoints(
        ingest=hub.get("ingest", local.ingest),
        publish=hub.get("publish", local.publish),
        request=hub.get("request", local.request),
        curve=_curve(toml, environ),
    )


def _curve(toml: Mapping[str, Any], environ: Mapping[str, str]) -> Curve | None:
    values = _section(toml, "curve", CURVE_KEYS, environ)
    if "keys" not in values:
        return None
    try:
        return Curve(Path(values["keys"]), values.get("client", "client"))
    except BusError as exc:
        raise UsageError(str(exc)) from None


def hub_config(
    *,
    data_dir: str | None,
    config_file: str | None,
    environ: Mapping[str, str],
    flags: Mapping[str, Any],
) -> HubConfig:
    """The hub's config from every source, later ones winning; validated."""
    toml = load_toml(config_file)
    values = _section(toml, "hub", HUB_KEYS, environ)
    values.update({k: v for k, v in flags.items() if v is not None})
    root = resolve_data_dir(data_dir, dict(environ))
    endpoints = _endpoints(values, root, toml, environ)
    for name in ("ingest", "publish", "request"):
        values.pop(name, None)
    try:
        return HubConfig(data_dir=root, endpoints=endpoints, **values)
    except BusError as exc:
        raise UsageError(str(exc)) from None


def snapshot_policy(config_file: str | None, environ: Mapping[str, str]) -> SnapshotPolicy:
    """``[snapshots] every_events / every_s`` (env ``PORCH_SNAPSHOTS_EVERY_EVENTS`` / ``_S``):
    how often the orchestrator, scheduler and monitor write their snapshots."""
    values = _section(load_toml(config_file), "snapshots", SNAPSHOT_KEYS, environ)
    try:
        return SnapshotPolicy(**values)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def retention_policy(config_file: str | None, environ: Mapping[str, str]) -> RetentionPolicy:
    """``[retention] enabled / keep_last / keep_days / remove_outputs / interval_s`` (env
    ``PORCH_RETENTION_KEEP_LAST`` and so on): what the orchestrator keeps of finished
    executions' artifacts, and how often it looks; ``porch gc`` starts from it too."""
    values = _section(load_toml(config_file), "retention", RETENTION_KEYS, environ)
    try:
        return RetentionPolicy(**values)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
