"""``porch scheduler``: folds the log into schedules and fires them on time.

Startup reads the whole log through the hub and folds it, loads the schedules file if one is
given (adding or updating only what changed), then goes live: it sleeps on the hub subscription
until the next due time in its heap, and sends what `SchedulerCore.decide` returns. All its state
is in the log, so a restart, or a second scheduler started by mistake, fires each slot once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import zmq

from actors.read import model as readmodel
from actors.read.model import HubSource, SnapshotPolicy
from actors.scheduler.core import SchedulerCore
from actors.scheduler.specs import check_dependencies, load_file
from actors.scheduler.timetable import ScheduleSpecError
from actors.shared.snapshotter import Snapshotter
from bus.client import Client, Record, Subscription
from bus.endpoints import Endpoints, run_dir
from bus.envelope import set_source
from bus.errors import BusError
from bus.events import Event, ScheduleAdded, ScheduleUpdated
from bus.schema import to_map
from bus.wire import pack
from store import pidlock
from store.projections import schedules as folds

log = logging.getLogger("porch.scheduler")
MAX_SLEEP_MS: Final = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    data_dir: Path
    endpoints: Endpoints
    max_concurrent: int = 3
    schedules_file: Path | None = None
    snapshots: SnapshotPolicy = field(default_factory=SnapshotPolicy)


def lock_path(data_dir: Path) -> Path:
    return run_dir(data_dir) / "scheduler.lock"


def scheduler_running(data_dir: Path) -> bool:
    """True when a scheduler holds this data dir's scheduler lock."""
    return pidlock.held(lock_path(data_dir))


class Scheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.core = SchedulerCore(config.max_concurrent)
        self.snapshots = Snapshotter(config.data_dir, *readmodel.SCHEDULER, config.snapshots)
        self._stop = False

    def stop(self, *_: object) -> None:
        self._stop = True

    def _lock(self) -> int | None:
        """Mark this data dir as having a scheduler. A second one warns and runs anyway: its
        decisions carry the same ids, so the log keeps one of each."""
        fd, holder = pidlock.hold(lock_path(self.config.data_dir))
        if fd is None:
            log.warning(
                "scheduler: another scheduler (pid %s) runs for this data dir; each slot still fires once",
                holder,
            )
        return fd

    def run(self) -> None:
        set_source("scheduler")
        self._lock_fd = self._lock()
        ctx = zmq.Context()
        self.client = Client(self.config.endpoints, context=ctx)
        try:
            start = self._restore()
            sub = self.client.subscribe(from_seq=start + 1, types=folds.TYPES | {"WorkerHeartbeat"})
        except BaseException:
            self.client.close()
            ctx.term()
            raise
        try:
            head = self.client.head()
            while sub.position < head and not self._stop:
                for record in sub.receive(1000):
                    self._on_record(record, time.time())
            if self.config.schedules_file is not None:
                self._load(self.config.schedules_file, sub)
            self.core.go_live(time.time())
            log.info(
                "scheduler: live at seq %d with %d schedules, at most %d executions at once"
                " (from snapshot at seq %d)",
                sub.position,
                len(self.core.state.schedules),
                self.config.max_concurrent,
                self.snapshots.loaded_seq,
            )
            while not self._stop:
                self._send(self.core.decide(time.time()))
                due = self.core.next_due()
                if due is not None and due <= time.time():
                    continue  # a burst: send every due fire before folding what comes back
                wait_ms = MAX_SLEEP_MS
                if due is not None:
                    wait_ms = max(0, min(MAX_SLEEP_MS, int((due - time.time()) * 1000) + 1))
                if sub.socket.poll(wait_ms):
                    for record in sub.receive(0):
                        self._on_record(record, time.time())
                    self._on_live(sub)
                if self.snapshots.due():
                    self.snapshots.save(sub.position, folds.CODEC.dump(self.core.state))
        finally:
            sub.close()
            self.client.close()
            ctx.term()

    def _restore(self) -> int:
        """Load the newest snapshot, if any usable; the seq to fold on from."""
        snap = self.snapshots.load(HubSource(self.client))
        if snap is None:
            return 0
        try:
            self.core.state = folds.CODEC.load(snap.body)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("snapshot %s ignored: %s; folding the whole log", snap.path, exc)
            return 0
        return snap.seq

    def _on_record(self, record: Record, now: float) -> None:
        fields = record.fields()
        self.snapshots.folded(record.seq, str(fields.get("id", "")))
        try:
            self.core.apply(record.seq, fields, now)
        except Exception as exc:  # a malformed event is logged and skipped, never fatal
            log.error("scheduler: cannot fold seq %s (%s): %s", record.seq, fields.get("type"), exc)

    def _on_live(self, sub: Subscription) -> None:
        for record in sub.take_live():
            try:
                self.core.heard(record.fields())
            except Exception as exc:  # a malformed heartbeat is logged and skipped
                log.error("scheduler: cannot take a live %s: %s", record.type, exc)

    def _send(self, events: list[Event]) -> None:
        for event in events:
            try:
                # built here from checked values; the hub checks every event it takes in
                self.client.publish(pack(to_map(event)))
            except BusError as exc:
                log.error("scheduler: could not send %s: %s", event.TYPE, exc)

    def _load(self, path: Path, sub: Subscription) -> None:
        """Add the file's new schedules and update the changed ones (acknowledged appends).

        The file was checked before the scheduler started; a file broken since, or an entry that
        no longer fits (a one-time date now past, an upstream gone), is logged and skipped, so a
        restart never turns into a crash loop."""
        known = self.core.state.schedules
        try:
            configs = load_file(path, now=None, known=set(known))
        except ScheduleSpecError as exc:
            log.error("scheduler: not loading the schedules file: %s", exc)
            return
        graph = {sid: list(s.config.get("dependencies", [])) for sid, s in known.items()}
        for config in configs:
            graph[config["schedule_id"]] = config["dependencies"]
        now = time.time()
        for config in configs:
            sid = config["schedule_id"]
            old = known.get(sid)
            if old is not None and old.config == config:
                continue
            if old is None and config.get("fire_at") is not None and config["fire_at"] <= now:
                log.warning(
                    "scheduler: skipping schedule %s of %s: its one-time date is past", sid, path
                )
                continue
            try:
                check_dependencies(sid, config["dependencies"], graph)
            except ScheduleSpecError as exc:
                log.error("scheduler: skipping schedule %s of %s: %s", sid, path, exc)
                continue
            kind = ScheduleAdded if old is None else ScheduleUpdated
            self.client.append(kind(schedule_id=sid, config=config))
        # fold what was just appended before going live
        head = self.client.head()
        while sub.position < head and not self._stop:
            for record in sub.receive(1000):
                self._on_record(record, time.time())


def run_scheduler(config: SchedulerConfig) -> int:
    scheduler = Scheduler(config)
    signal.signal(signal.SIGTERM, scheduler.stop)
    signal.signal(signal.SIGINT, scheduler.stop)
    with contextlib.suppress(KeyboardInterrupt):
        scheduler.run()
    return 0
