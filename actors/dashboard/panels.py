"""The schedules, metrics and alerts pages' data: the read models `porch schedule list`,
`porch metrics` and `porch alerts list` fold (from their snapshots, or the running monitor's
state), shaped for the pages."""

from __future__ import annotations

import time
from typing import Any, Final

from actors.read import model as readmodel
from actors.read import monitoring as metric_views
from actors.read.schedules import fold_schedules, queue_status, schedule_status
from bus.client import Client
from store.projections import schedules as schedule_folds

NEXT_FIRES: Final = 5
RUNS_SHOWN: Final = 10
MISSES_SHOWN: Final = 50
ALERTS_SHOWN: Final = 200
CHARTS: Final = {  # chart -> the series drawn in it
    "executions": ("executions_running", "executions_completed_total", "executions_failed_total"),
    "stage durations (s)": ("stage_duration_seconds",),
    "records per second": ("records_per_second",),
    "queue depth": ("queue_depth",),
    "CPU %": ("cpu_percent", "host_cpu_percent"),
    "memory %": ("memory_percent", "host_memory_percent"),
}


def schedules(client: Client, now: float) -> dict[str, Any]:
    """Every schedule: its state, next fire times, recent runs; the misfires with their
    reasons; the queue and the retries waiting."""
    core = fold_schedules(client)
    rows = []
    for schedule in core.state.schedules.values():
        status = {k: v for k, v in schedule_status(core, schedule, now).items() if k != "config"}
        table = core.table(schedule).table
        upcoming: list[float] = []
        t = core.next_fire(schedule)
        while t is not None and table is not None and len(upcoming) < NEXT_FIRES:
            upcoming.append(t)
            t = table.next_after(t)
        status["next_fires"] = upcoming
        status["runs"] = [
            schedule_folds.describe(core.state, core.state.runs[e])
            for e in schedule.runs[-RUNS_SHOWN:]
            if e in core.state.runs
        ][::-1]
        rows.append(status)
    misses = [
        {"seq": r.seq, **{k: v for k, v in r.fields().items() if k in MISS_FIELDS}}
        for r in client.read(1, types=["ScheduleMissed"])
    ][-MISSES_SHOWN:][::-1]
    return {"schedules": rows, "missed": misses, "queue": queue_status(core, now)}


MISS_FIELDS: Final = ("schedule_id", "fire_time", "last_fire_time", "count", "reason", "ts")


def monitoring(client: Client, minutes: int) -> dict[str, Any]:
    """The current figures and each chart's series over the last ``minutes`` (raw samples
    where the monitor still keeps them, its minute and hour means before that)."""
    metrics, alerts = readmodel.monitoring(client)
    now = time.time()
    wanted = {name for names in CHARTS.values() for name in names}
    history = metric_views.history(metrics, wanted, now - minutes * 60, now)
    charts = []
    for title, names in CHARTS.items():
        lines: dict[str, list[list[float]]] = {}
        for name in names:
            for row in history.get(name, []):
                labels = ",".join(f"{k}={v}" for k, v in sorted(row["labels"].items()))
                key = f"{name}{{{labels}}}" if labels else name
                lines.setdefault(key, []).append([row["timestamp"], row["value"]])
        charts.append({"title": title, "lines": lines})
    return {
        "current": metric_views.current_metrics(metrics, alerts, now),
        "charts": charts,
        "from_ts": now - minutes * 60,
        "to_ts": now,
        "retention_hours": metrics.retention_s / 3600,
        "raw_window_minutes": metrics.raw_window_s / 60,
    }


def alert_page(client: Client) -> dict[str, Any]:
    _, alerts = readmodel.monitoring(client)
    return {
        "alerts": metric_views.alert_list(alerts, limit=ALERTS_SHOWN),
        "rules": metric_views.rule_list(alerts),
        "active": len(alerts.active),
    }
