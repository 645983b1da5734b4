"""``porch scheduler``: folds the log into schedules and fires them on time.

It runs the shared actor loop around `SchedulerCore`. Startup loads the newest snapshot and
folds the log after it, loads the schedules file if one is given (adding or updating only what
changed), then goes live: it sleeps on the hub subscription until the next due time in its
heap, and sends what `SchedulerCore.decide` returns. All its state
is in the log, so a restart, or a second scheduler started by mistake, fires each slot once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.scheduler.core import SchedulerCore
from actors.scheduler.specs import check_dependencies, load_file
from actors.scheduler.timetable import ScheduleSpecError
from actors.shared import loop
from actors.shared.loop import Actor, LoopConfig, Now
from actors.shared.snapshotter import SCHEDULER, SnapshotPolicy
from bus.client import Client, Record
from bus.endpoints import Endpoints
from bus.events import Event, ScheduleAdded, ScheduleUpdated
from store.projections import schedules as folds

log = logging.getLogger("porch.scheduler")


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    data_dir: Path
    endpoints: Endpoints
    max_concurrent: int = 3
    schedules_file: Path | None = None
    snapshots: SnapshotPolicy = field(default_factory=SnapshotPolicy)


def scheduler_running(data_dir: Path) -> bool:
    """True when a scheduler holds this data dir's scheduler lock."""
    return loop.running(data_dir, Scheduler.name)


class Scheduler(Actor):
    """The scheduler actor: `SchedulerCore` on the shared loop, plus the schedules file.

    A second scheduler on the same data dir warns and runs anyway: its decisions carry the
    same ids, so the log keeps one of each."""

    name = "scheduler"
    lock = "shared"
    types = frozenset(folds.TYPES)
    live_types = frozenset({"WorkerHeartbeat"})
    snapshot_tag = SCHEDULER

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.core = SchedulerCore(config.max_concurrent)
        self._file_loaded = config.schedules_file is None

    def restore(self, body: Any) -> None:
        self.core.state = folds.CODEC.load(body)

    def snapshot_body(self) -> Any:
        return folds.CODEC.dump(self.core.state)

    def apply(self, record: Record, fields: dict[str, Any], now: Now) -> None:
        self.core.apply(record.seq, fields, now.wall)

    def heard(self, record: Record, fields: dict[str, Any], now: Now) -> None:
        self.core.heard(fields)

    def prepare(self, client: Client) -> bool:
        if self._file_loaded:
            return False
        self._file_loaded = True
        assert self.config.schedules_file is not None
        return self._load(self.config.schedules_file, client)

    def went_live(self, position: int, now: Now) -> list[Event]:
        self.core.go_live(now.wall)
        log.info(
            "scheduler: live at seq %d with %d schedules, at most %d executions at once"
            " (from snapshot at seq %d)",
            position,
            len(self.core.state.schedules),
            self.config.max_concurrent,
            self.loop.snapshots.loaded_seq if self.loop.snapshots else 0,
        )
        return []

    def decide(self, now: Now) -> list[Event]:
        return self.core.decide(now.wall)

    def next_due(self, now: Now) -> float | None:
        due = self.core.next_due()  # wall clock: schedules fire at instants
        return None if due is None else now.mono + (due - now.wall)

    def _load(self, path: Path, client: Client) -> bool:
        """Add the file's new schedules and update the changed ones (acknowledged appends).

        The file was checked before the scheduler started; a file broken since, or an entry that
        no longer fits (a one-time date now past, an upstream gone), is logged and skipped, so a
        restart never turns into a crash loop."""
        known = self.core.state.schedules
        try:
            configs = load_file(path, now=None, known=set(known))
        except ScheduleSpecError as exc:
            log.error("scheduler: not loading the schedules file: %s", exc)
            return False
        graph = {sid: list(s.config.get("dependencies", [])) for sid, s in known.items()}
        for config in configs:
            graph[config["schedule_id"]] = config["dependencies"]
        now = time.time()
        appended = False
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
            client.append(kind(schedule_id=sid, config=config))
            appended = True
        return appended  # the loop folds what was just appended before going live


def run_scheduler(config: SchedulerConfig) -> int:
    """Run until SIGTERM or SIGINT."""
    return loop.run(
        Scheduler(config),
        LoopConfig(
            data_dir=config.data_dir, endpoints=config.endpoints, snapshots=config.snapshots
        ),
    )
