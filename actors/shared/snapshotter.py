"""An actor's snapshots: load the newest at start, write a new one every N events or T seconds.

The actor folds as before; it tells the `Snapshotter` each event it folded and, between turns
of its loop, asks whether one is due. A snapshot is written only at a point where every event
up to the subscription's position is folded in, so start = snapshot + the events after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.read.model import LogSource, SnapshotPolicy, newest_snapshot
from store.snapshots import Snapshot, SnapshotStore, snapshot_dir

log = logging.getLogger("porch.snapshots")


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
