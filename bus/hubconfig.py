"""A hub's settings (`HubConfig`, checked when made) and the counters it reports (`HubStats`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.endpoints import Endpoints, check
from bus.errors import ConfigError
from bus.protocol import PUB_HWM
from store.archive import LogRetention
from store.log import DEFAULT_SEGMENT_BYTES, FsyncPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class HubConfig:
    """Settings of one hub. ``batch_max`` bounds a group commit (events per fsync)."""

    data_dir: Path
    endpoints: Endpoints
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    batch_max: int = 512
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    pub_hwm: int = PUB_HWM
    dedup_window: int = 100_000
    marker_interval_s: float = 1.0
    read_chunk_bytes: int = 512 << 10
    read_scan_max: int = 50_000
    insecure: bool = False
    # log retention: sealed segments past every actor's snapshot leave the live log
    archive: str = "archive"  # archive (to parquet) | delete | off
    archive_after_s: float = 7 * 86400.0
    archive_max_bytes: int = 0  # 0: no bound on the live log's bytes
    archive_check_s: float = 60.0
    archive_to: str = ""  # an s3:// URL the archived files move to ("" keeps them here)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsync", _policy(self.fsync))
        for name in ("batch_max", "pub_hwm", "read_chunk_bytes", "read_scan_max"):
            if getattr(self, name) < 1:
                raise ConfigError(f"hub: {name} must be at least 1, got {getattr(self, name)}")
        if self.dedup_window < 0:
            raise ConfigError(f"hub: dedup_window must be >= 0, got {self.dedup_window}")
        if self.marker_interval_s <= 0:
            raise ConfigError(f"hub: marker_interval_s must be > 0, got {self.marker_interval_s}")
        for address in self.endpoints.all():
            check(address, bind=True, insecure=self.insecure, curve=self.endpoints.curve)
        if self.archive_to and not self.archive_to.startswith("s3://"):
            raise ConfigError(
                f"hub: archive_to {self.archive_to!r} must be an s3://BUCKET/PREFIX URL or empty"
            )
        try:
            self.retention  # noqa: B018  (checks the archive settings)
        except ValueError as exc:
            raise ConfigError(f"hub: {exc}") from None

    @property
    def retention(self) -> LogRetention:
        return LogRetention(
            mode=self.archive,
            after_s=self.archive_after_s,
            max_bytes=self.archive_max_bytes,
            check_s=self.archive_check_s,
        )


def _policy(value: FsyncPolicy | str) -> FsyncPolicy:
    try:
        return FsyncPolicy(value)
    except ValueError:
        allowed = ", ".join(p.value for p in FsyncPolicy)
        raise ConfigError(f"hub: fsync {value!r} is not one of {allowed}") from None


@dataclass(slots=True)
class HubStats:
    """Counters a hub keeps and reports on the ``stats`` request."""

    accepted: int = 0
    duplicates: int = 0
    malformed: int = 0
    requests: int = 0
    batches: int = 0
    live: int = 0  # live events published without being appended
    # messages refused, by kind; "disk full" counts events (appended or pushed) turned away
    refused: Counter[str] = field(default_factory=Counter)

    def as_map(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "requests": self.requests,
            "batches": self.batches,
            "live": self.live,
            "refused": dict(self.refused),
        }
