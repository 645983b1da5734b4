"""Where artifacts live: the `ArtifactStore` seam, and which store an artifact's location names.

An artifact's location is a path (a local folder: `store.artifacts`, the default) or an
``s3://bucket/key`` URL (`store.s3store`: S3-compatible object storage through pyarrow's
``S3FileSystem``). The URL never carries credentials: the endpoint, region and keys of a
process come from its config (`configure`) or from the usual ``AWS_*`` variables, so events,
logs, status and the dashboard show the bucket and key only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from store.artifacts import ArtifactInfo
    from store.deltas import Base
    from store.s3store import S3Store

SCHEME: Final = "s3://"
ENV_PREFIX: Final = "PORCH_S3_"
SECRET_KEYS: Final = ("access_key_id", "secret_access_key", "session_token")


class ArtifactStore(Protocol):
    """What a stage task, the orchestrator and ``porch gc`` do with artifacts. Every write is
    whole or absent under its final name (a local temp file renamed, or one completed PUT)
    and returns the content's size and SHA-256; every read given a hash refuses other bytes."""

    def write_frame(
        self, path: str, df: pd.DataFrame, *, base: Base | None = None
    ) -> ArtifactInfo: ...

    def write_bytes(self, path: str, data: bytes) -> ArtifactInfo: ...

    def write_parquet(
        self, path: str, parts: Sequence[str], hashes: Mapping[str, str] | None = None
    ) -> ArtifactInfo: ...

    def read_bytes(self, path: str) -> bytes: ...

    def file_sha256(self, path: str) -> str: ...

    def verify(self, path: str, sha256: str, *, base: bool = True) -> bool: ...

    def link_or_copy(self, source: str, target: str) -> None: ...

    def disk_bytes(self, paths: Sequence[str]) -> int: ...

    def remove_paths(self, paths: Sequence[str], *, inside: str) -> list[str]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Options:
    """How to reach the object store: ``endpoint`` (``http://host:port``; empty for AWS
    itself), ``region`` and the keys (empty: pyarrow's default chain: the AWS files, the
    instance's role). The keys are never shown (``repr`` leaves them out)."""

    endpoint: str = ""
    region: str = ""
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    connect_timeout_s: float = 3.0
    request_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"s3 endpoint {self.endpoint!r} must start with http:// or https://")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("s3: give both access_key_id and secret_access_key, or neither")
        for name in ("connect_timeout_s", "request_timeout_s"):
            if not 0 < getattr(self, name) <= 3600:
                raise ValueError(f"s3 {name} must be above 0 and at most 3600")

    def environ(self) -> dict[str, str]:
        """These options as ``PORCH_S3_*`` variables, for a child process (`from_environ`)."""
        out = {}
        for name in (
            "endpoint",
            "region",
            *SECRET_KEYS,
            "connect_timeout_s",
            "request_timeout_s",
        ):
            value = getattr(self, name)
            if value:
                out[ENV_PREFIX + name.upper()] = str(value)
        return out

    def where(self) -> str:
        """The endpoint for a message: never a key."""
        return self.endpoint or f"AWS S3 ({self.region or 'default region'})"


def from_environ(environ: Mapping[str, str], **given: object) -> S3Options:
    """``given`` fields first, then ``PORCH_S3_*``, then the usual ``AWS_*`` variables
    (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``); raises
    ValueError for a value not allowed."""

    def first(*names: str) -> str:
        return next((environ[n] for n in names if environ.get(n)), "")

    fields: dict[str, object] = {
        "endpoint": first("PORCH_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        "region": first("PORCH_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        "access_key_id": first("PORCH_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        "secret_access_key": first("PORCH_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        "session_token": first("PORCH_S3_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
    }
    for name in ("connect_timeout_s", "request_timeout_s"):
        text = environ.get(ENV_PREFIX + name.upper())
        if text:
            try:
                fields[name] = float(text)
            except ValueError:
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()} = {text!r}: expected a number"
                ) from None
    fields.update(given)
    return S3Options(**fields)  # type: ignore[arg-type]


_options: list[S3Options] = []  # this process's, once configured or read from the environment
_stores: list[S3Store] = []


def configure(options: S3Options | None) -> None:
    """Use ``options`` for every ``s3://`` location of this process (None: read them from
    the environment when first needed)."""
    _options.clear()
    _stores.clear()
    if options is not None:
        _options.append(options)


def options() -> S3Options:
    if not _options:
        import os

        _options.append(from_environ(os.environ))
    return _options[0]


def is_remote(location: object) -> bool:
    """True for an ``s3://`` URL."""
    return str(location).startswith(SCHEME)


def remote(location: object) -> S3Store | None:
    """The object store of ``location``, or None for a local path."""
    if not is_remote(location):
        return None
    if not _stores:
        from store.s3store import S3Store

        _stores.append(S3Store(options()))
    return _stores[0]


def store_for(location: object) -> ArtifactStore:
    """The store that holds ``location``: the object store of an ``s3://`` URL, else the
    local folder's (`store.artifacts.LocalStore`)."""
    far = remote(location)
    if far is not None:
        return far
    from store.artifacts import LocalStore

    return LocalStore()


def join(location: str, *names: str) -> str:
    """``location/name/...`` for a folder or a URL (a Path would fold ``s3://`` into ``s3:/``)."""
    return "/".join([location.rstrip("/"), *names])
