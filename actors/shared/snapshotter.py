"""An actor's snapshots: load the newest at start, write a new one every N events or T seconds.

The actor folds as before; it tells the `Snapshotter` each event it folded and, between turns
of its loop, asks whether one is due. A snapshot is written only at a point where every event
up to the subscription's position is folded in, so start = snapshot + the events after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from actors.shared.sources import LogSource
from store.projections import alerts as alert_folds
from store.projections import executions as execution_folds
from store.projections import metrics as metric_folds
from store.projections import schedules as schedule_folds
from store.snapshots import Snapshot, SnapshotStore, snapshot_dir

log = logging.getLogger("porch.snapshots")

EVERY_EVENTS: Final = 10_000
EVERY_S: Final = 300.0

# Each actor's snapshot: its name and version (the fold codecs inside it, and the shape of the
# body around them: bump the tag when that changes). Queries read these too.
ORCHESTRATOR: Final = ("orchestrator", f"orchestrator3+{execution_folds.LAZY_VERSION}")
SCHEDULER: Final = ("scheduler", f"scheduler1+{schedule_folds.CODEC.version}")
MONITOR: Final = (
    "monitor",
    f"monitor1+{metric_folds.CODEC.version}+{alert_folds.CODEC.version}",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotPolicy:
    """When an actor writes a snapshot: after ``every_events`` folded events, or ``every_s``
    seconds after the last one if anything was folded since. 0 events turns snapshots off."""

    every_events: int = EVERY_EVENTS
    every_s: float = EVERY_S

    def __post_init__(self) -> None:
        if self.every_events < 0:
            raise ValueError(f"snapshots: every_events must be >= 0, got {self.every_events}")
        if self.every_s <= 0:
            raise ValueError(f"snapshots: every_s must be > 0, got {self.every_s}")

    @property
    def enabled(self) -> bool:
        return self.every_events > 0


def newest_snapshot(
    store: SnapshotStore, candidates: Iterable[tuple[str, str]], source: LogSource
) -> Snapshot | None:
    """The newest usable snapshot among ``(name, version)`` candidates, for this log."""
    head = source.head()

    def same_log(seq: int, event_id: str) -> bool | None:
        found = source.event_id(seq)
        if found is None:
            return None  # cannot tell (the hub is away): take it
        return found == event_id

    best: Snapshot | None = None
    for name, version in candidates:
        snap = store.newest(name, version, head=head, same_log=same_log)
        if snap is not None and (best is None or snap.seq > best.seq):
            best = snap
    return best


class Snapshotter:
    """Keeps the snapshots of one actor (``name``) whose body has fold version ``version``."""

    def __init__(
        self,
        data_dir: Path,
        name: str,
        version: str,
        policy: SnapshotPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = SnapshotStore(snapshot_dir(data_dir))
        self.name = name
        self.version = version
        self.policy = policy
        self._clock = clock
        self._since = 0
        self._last_at = clock()
        self._last_id = ""
        self._last_seq = 0
        self.written = 0
        self.loaded_seq = 0

    def load(self, source: LogSource) -> Snapshot | None:
        """The newest usable snapshot of this actor, or None (then fold from seq 1)."""
        snap = newest_snapshot(self.store, [(self.name, self.version)], source)
        if snap is not None:
            self._last_id, self._last_seq = snap.last_id, snap.last_seq
            self.loaded_seq = snap.seq
            log.info("%s: starting from snapshot at seq %d (%s)", self.name, snap.seq, snap.path)
        return snap

    def folded(self, seq: int, event_id: str) -> None:
        self._since += 1
        self._last_id, self._last_seq = event_id, seq

    def due(self) -> bool:
        if not self.policy.enabled or not self._since:
            return False
        return (
            self._since >= self.policy.every_events
            or self._clock() - self._last_at >= self.policy.every_s
        )

    def save(self, position: int, body: Any) -> None:
        """Write a snapshot covering every event up to ``position``; a failure is logged (the
        log is the truth: the next start folds a longer tail), never fatal."""
        started = self._clock()
        try:
            path = self.store.save(
                self.name, position, self.version, body,
                last_id=self._last_id, last_seq=self._last_seq,
            )  # fmt: skip
        except (OSError, ValueError, TypeError) as exc:
            log.error("%s: snapshot at seq %d not written: %s", self.name, position, exc)
            self._since = 0
            self._last_at = self._clock()
            return
        self.written += 1
        self._since = 0
        self._last_at = self._clock()
        log.debug(
            "%s: snapshot at seq %d, %.0f ms (%s)",
            self.name, position, (self._last_at - started) * 1000, path,
        )  # fmt: skip
