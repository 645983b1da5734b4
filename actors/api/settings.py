"""Build each actor's frozen config from the effective settings (`actors.api.config`):
defaults, then the TOML file, then PORCH_* variables, then flags."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actors.api.config import ENV_CONFIG, Settings, config_path, resolve
from actors.errors import UsageError
from actors.shared.snapshotter import SnapshotPolicy
from bus.curve import Curve
from bus.endpoints import Endpoints, check
from bus.errors import BusError
from bus.hubconfig import HubConfig
from store.objstore import S3Options, from_environ
from store.retention import RetentionPolicy

__all__ = [
    "ENV_CONFIG",
    "config_path",
    "hub_config",
    "network",
    "orchestrator_insecure",
    "retention_policy",
    "s3_options_of",
    "snapshot_policy",
]
HUB_CONFIG_KEYS = ("fsync", "batch_max", "segment_bytes", "pub_hwm", "dedup_window",
                   "marker_interval_s", "insecure", "archive", "archive_after_s",
                   "archive_max_bytes", "archive_check_s", "archive_to")  # fmt: skip
S3_KEYS = ("endpoint", "region", "access_key_id", "secret_access_key", "session_token",
           "connect_timeout_s", "request_timeout_s")  # fmt: skip


def _data_dir_flag(data_dir: str | Path | None) -> dict[str, tuple[Any, str]]:
    return {"data_dir": (str(data_dir), "--data-dir")} if data_dir else {}


def network(
    *, data_dir: str | None, config_file: str | None, environ: Mapping[str, str]
) -> tuple[Endpoints, str]:
    """The hub's endpoints (with CURVE keys when set) and the orchestrator's tasks address.

    Without a config file (or with one that names none) they are the data dir's ipc sockets.
    """
    settings = resolve(config_file=config_file, environ=environ, flags=_data_dir_flag(data_dir))
    return network_of(settings)


def network_of(settings: Settings) -> tuple[Endpoints, str]:
    """`network` for settings already resolved."""
    endpoints = _endpoints(settings)
    tasks = settings["orchestrator.tasks"]
    try:
        for address in (*endpoints.all(), tasks):
            check(address)
    except BusError as exc:
        raise UsageError(f"config file {settings.file}: {exc}") from None
    if endpoints.curve is not None and not endpoints.is_local():
        try:  # every user of this connects to the hub: its keys must be there now
            endpoints.curve.client_pair()
            endpoints.curve.server_public()
        except BusError as exc:
            raise UsageError(str(exc)) from None
    return endpoints, tasks


def orchestrator_insecure(config_file: str | None, environ: Mapping[str, str]) -> bool:
    """``[orchestrator] insecure``: bind the tasks socket on non-loopback TCP without CURVE."""
    return bool(resolve(config_file=config_file, environ=environ)["orchestrator.insecure"])


def _endpoints(settings: Settings) -> Endpoints:
    """The ``[hub]`` addresses (each by default the data dir's ipc socket), with the keys."""
    return Endpoints(
        ingest=settings["hub.ingest"],
        publish=settings["hub.publish"],
        request=settings["hub.request"],
        curve=_curve(settings),
    )


def _curve(settings: Settings) -> Curve | None:
    if settings["curve.keys"] is None:
        return None
    try:
        return Curve(Path(settings["curve.keys"]), settings["curve.client"])
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
    given = {f"hub.{k}": (v, f"--{k}") for k, v in flags.items() if v is not None}
    settings = resolve(
        config_file=config_file, environ=environ, flags={**given, **_data_dir_flag(data_dir)}
    )
    try:
        return HubConfig(
            data_dir=Path(settings["data_dir"]),
            endpoints=_endpoints(settings),
            **{key: settings[f"hub.{key}"] for key in HUB_CONFIG_KEYS},
        )
    except BusError as exc:
        raise UsageError(str(exc)) from None


def snapshot_policy(config_file: str | None, environ: Mapping[str, str]) -> SnapshotPolicy:
    """``[snapshots] every_events / every_s`` (env ``PORCH_SNAPSHOTS_EVERY_EVENTS`` / ``_S``):
    how often the orchestrator, scheduler and monitor write their snapshots."""
    return snapshot_policy_of(resolve(config_file=config_file, environ=environ))


def snapshot_policy_of(settings: Settings) -> SnapshotPolicy:
    try:
        return SnapshotPolicy(
            every_events=settings["snapshots.every_events"], every_s=settings["snapshots.every_s"]
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def retention_policy(config_file: str | None, environ: Mapping[str, str]) -> RetentionPolicy:
    """``[retention] enabled / keep_last / keep_days / remove_outputs / interval_s`` (env
    ``PORCH_RETENTION_KEEP_LAST`` and so on): what the orchestrator keeps of finished
    executions' artifacts, and how often it looks; ``porch gc`` starts from it too."""
    return retention_policy_of(resolve(config_file=config_file, environ=environ))


def retention_policy_of(settings: Settings) -> RetentionPolicy:
    keys = ("enabled", "keep_last", "keep_days", "remove_outputs", "interval_s")
    try:
        return RetentionPolicy(**{key: settings[f"retention.{key}"] for key in keys})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def s3_options_of(settings: Settings, environ: Mapping[str, str]) -> S3Options:
    """How this process reaches the object store of ``s3://`` locations: the ``[s3]`` table
    (or ``PORCH_S3_*``), each key not set there from the usual ``AWS_*`` variables."""
    given = {
        key: settings[f"s3.{key}"]
        for key in S3_KEYS
        if settings.source(f"s3.{key}").source != "default"
    }
    try:
        return from_environ(environ, **given)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def s3_options(config_file: str | None, environ: Mapping[str, str]) -> S3Options:
    """`s3_options_of` the settings of ``config_file`` and ``environ``."""
    return s3_options_of(resolve(config_file=config_file, environ=environ), environ)
