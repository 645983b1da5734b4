"""What `porch schedule` and `PipelineScheduler` show: the schedule fold read from the hub."""

from __future__ import annotations

from typing import Any

from actors.read import model as readmodel
from actors.read.model import Reader
from actors.scheduler.core import SchedulerCore
from actors.scheduler.timetable import iso, zone
from store.projections import schedules as folds
from store.projections.schedules import ScheduleState


def fold_schedules(client: Reader, max_concurrent: int = 3) -> SchedulerCore:
    """The log folded as the scheduler folds it (not live: it decides nothing), from the
    newest snapshot of the scheduler's fold."""
    core = SchedulerCore(max_concurrent)
    core.state = readmodel.schedules(client)
    return core


def _when(t: float | None, tz: str = "UTC") -> str | None:
    return None if t is None else iso(t, zone(tz))


def schedule_status(core: SchedulerCore, schedule: ScheduleState, now: float) -> dict[str, Any]:
    config = schedule.config
    tz = config.get("timezone", "UTC")
    table = core.table(schedule)
    nxt = core.next_fire(schedule)
    runs = [core.state.runs[e] for e in schedule.runs]
    last = runs[-1] if runs else None
    return {
        "schedule_id": schedule.schedule_id,
        "name": config.get("name", schedule.schedule_id),
        "description": config.get("description", ""),
        "schedule_type": schedule.kind,
        "schedule_expression": config.get("schedule_expression", ""),
        "timezone": tz,
        "dependencies": config.get("dependencies", []),
        "state": "invalid" if table.error else ("paused" if schedule.paused else "active"),
        "error": table.error or None,
        "next_fire_time": _when(nxt, tz),
        "overdue": nxt is not None and nxt < now,
        "last_fire_time": _when(schedule.last_slot, tz),
        "fires": schedule.fires,
        "missed": schedule.missed,
        "priority": config.get("priority", 0),
        "last_execution": folds.describe(core.state, last) if last else None,
        "succeeded": sum(1 for r in runs if r.status == "completed"),
        "failed": sum(1 for r in runs if r.status in ("failed", "timed_out")),
        "config": config,
    }


def queue_status(core: SchedulerCore, now: float) -> dict[str, Any]:
    state = core.state
    queued = sorted(state.queue, key=state.queue.__getitem__)
    return {
        "queued": [folds.describe(state, state.runs[e]) for e in queued],
        "running": [
            folds.describe(state, state.runs[e])
            for e in sorted(state.active, key=lambda e: state.runs[e].requested_ts)
        ],
        "waiting_retries": [
            folds.describe(state, state.runs[e])
            for e in sorted(state.waiting_retries, key=lambda e: state.runs[e].due_ts)
        ],
        "max_concurrent_executions": core.max_concurrent,
        "capacity": core.capacity(now),
    }


def recent_executions(core: SchedulerCore, limit: int) -> list[dict[str, Any]]:
    runs = sorted(
        core.state.runs.values(),
        key=lambda r: (r.requested_ts or r.queued_ts or r.fired_ts, r.execution_id),
        reverse=True,
    )
    return [folds.describe(core.state, r) for r in runs[: max(0, limit)]]
