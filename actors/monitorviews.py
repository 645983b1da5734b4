"""What the monitor shows: current metrics, history, trends, alerts and exports, from the folds.

Pure functions of the metrics and alert folds (and a clock for liveness), shared by the monitor
actor's HTTP API, `PipelineMonitor` and `porch metrics` / `porch alerts`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from actors.errors import UsageError
from store.projections import alerts as alert_folds
from store.projections import metrics as folds
from store.projections.alerts import AlertsState
from store.projections.metrics import MetricsState, quantile

HEARTBEAT_S: Final = 1.0  # workers beat every second
ALIVE_MISSES: Final = 3  # a worker that missed this many beats counts as not alive
TREND_RUNS: Final = 20
CSV_COLUMNS: Final = ("timestamp", "metric", "labels", "value")


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50": quantile(values, 0.5),
        "p90": quantile(values, 0.9),
        "p99": quantile(values, 0.99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def _values(series: folds.Series | None) -> list[float]:
    return [v for _, v in series.samples] if series is not None else []


def trend(values: list[float], runs: int = TREND_RUNS) -> dict[str, Any]:
    """The slope over the last ``runs`` values (per run) and whether the latest one is a
    regression: beyond the p95 of the ``runs`` before it."""
    recent = values[-runs:]
    if len(recent) < 2:
        return {"runs": len(recent), "slope_per_run": 0.0, "regression": False}
    n = len(recent)
    mean_x, mean_y = (n - 1) / 2, sum(recent) / n
    var = sum((i - mean_x) ** 2 for i in range(n))
    slope = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(recent)) / var
    previous = values[-runs - 1 : -1]
    p95 = quantile(previous, 0.95) if previous else math.inf
    return {
        "runs": n,
        "slope_per_run": slope,
        "latest": recent[-1],
        "previous_p95": p95 if previous else None,
        "regression": len(previous) >= 5 and recent[-1] > p95,
    }


def stage_view(metrics: MetricsState) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for series in metrics.by_name.get("stage_duration_seconds", []):
        stage = dict(series.labels).get("stage", "")
        durations = _values(series)
        rates = _values(metrics.get("records_per_second", series.labels))
        waits = _values(metrics.get("stage_queue_wait_seconds", series.labels))
        out[stage] = {
            "duration_seconds": _stats(durations),
            "records_per_second": _stats(rates),
            "queue_wait_seconds": _stats(waits),
            "duration_trend": trend(durations),
            "records_per_second_trend": trend(rates),
        }
    return out


def worker_view(metrics: MetricsState, now: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for worker, info in metrics.workers.items():
        labels = (("worker", worker),)
        missed = max(0, math.floor((now - info.get("last_seen", now)) / HEARTBEAT_S) - 1)
        cpu, mem = metrics.get("cpu_percent", labels), metrics.get("memory_percent", labels)
        out[worker] = {
            "host": info.get("host", ""),
            "alive": not info.get("stopped") and missed < ALIVE_MISSES,
            "stopped": bool(info.get("stopped")),
            "missed_heartbeats": missed,
            "last_seen": info.get("last_seen"),
            "cpu_percent": cpu.last if cpu else None,
            "memory_percent": mem.last if mem else None,
        }
    return out


def resources_view(metrics: MetricsState) -> dict[str, Any]:
    """The latest host samples (the monitor's own, then the workers' hosts)."""
    hosts: dict[str, dict[str, float]] = {}
    for name in ("cpu_percent", "memory_percent", "disk_percent"):
        for series in metrics.by_name.get(name, []):
            labels = dict(series.labels)
            if "host" in labels:
                hosts.setdefault(labels["host"], {})[name] = series.last
    for name, key in (
        ("host_cpu_percent", "cpu_percent"),
        ("host_memory_percent", "memory_percent"),
    ):
        for series in metrics.by_name.get(name, []):
            hosts.setdefault(dict(series.labels).get("host", ""), {}).setdefault(key, series.last)
    latest: dict[str, Any] = {"cpu_percent": None, "memory_percent": None, "disk_percent": None}
    newest = 0.0
    for name in latest:
        for series in metrics.by_name.get(name, []):
            if "host" in dict(series.labels) and series.last_ts >= newest:
                newest = series.last_ts
                latest[name] = series.last
    return {**latest, "hosts": hosts}


def current_metrics(metrics: MetricsState, alerts: AlertsState, now: float) -> dict[str, Any]:
    counts = {k: v for k, v in metrics.status_counts.items() if v}
    done = sum(counts.get(s, 0) for s in folds.FINISHED.values())
    workers = worker_view(metrics, now)
    custom = {
        f"{s.name}{{{','.join(f'{k}={v}' for k, v in s.labels)}}}" if s.labels else s.name: s.last
        for s in metrics.series.values()
        if s.name not in folds.BUILTIN
    }
    lateness = {
        dict(s.labels).get("schedule", ""): _stats(_values(s))
        for s in metrics.by_name.get("schedule_lateness_seconds", [])
    }
    queue = metrics.get("queue_depth")
    return {
        "timestamp": now,
        "executions": {
            "by_status": counts,
            "total": sum(counts.values()),
            "running": counts.get("running", 0),
            "success_rate": counts.get("completed", 0) / done if done else None,
            "failure_rate": (counts.get("failed", 0) + counts.get("timed_out", 0)) / done
            if done
            else None,
            "duration_seconds": _stats(_values(metrics.get("execution_duration_seconds"))),
        },
        "stages": stage_view(metrics),
        "schedules": {"lateness_seconds": lateness},
        "queue_depth": queue.last if queue else 0,
        "workers": workers,
        "workers_alive": sum(1 for w in workers.values() if w["alive"]),
        "resources": resources_view(metrics),
        "custom": custom,
        "alerts": {
            "active": len(alerts.active),
            "unacknowledged": sum(
                1 for a in alerts.active.values() if not alerts.alerts[a].acknowledged
            ),
        },
        "events_folded": metrics.events,
    }


def history(
    metrics: MetricsState,
    names: Iterable[str] | None = None,
    start: float | None = None,
    end: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    wanted = set(names) if names is not None else None
    out: dict[str, list[dict[str, Any]]] = {}
    for series in metrics.series.values():
        if wanted is not None and series.name not in wanted:
            continue
        labels = dict(series.labels)
        rows = out.setdefault(series.name, [])
        rows.extend(
            {"timestamp": t, "value": v, "labels": labels}
            for t, v in series.samples
            if (start is None or t >= start) and (end is None or t <= end)
        )
    for rows in out.values():
        rows.sort(key=lambda r: r["timestamp"])
    return out


def alert_list(
    alerts: AlertsState, severity: str | None = None, resolved: bool | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    rows = [
        alert_folds.describe(a)
        for a in alerts.alerts.values()
        if (severity is None or a.severity == severity)
        and (resolved is None or a.resolved == resolved)
    ]
    rows.sort(key=lambda r: r["fired_ts"], reverse=True)
    return rows[: max(0, limit)]


def rule_list(alerts: AlertsState) -> list[dict[str, Any]]:
    return [
        {
            "rule_id": r.rule_id,
            "metric_name": r.metric_name,
            "condition": r.condition,
            "threshold": r.threshold,
            "severity": r.severity,
            "cooldown_minutes": r.cooldown_minutes,
            "pending_s": r.pending_s,
            "scope": r.scope,
            "enabled": r.enabled,
            "description": r.description,
        }
        for r in alerts.rules.values()
    ]


def export(metrics: MetricsState, alerts: AlertsState, now: float, path: Path, fmt: str) -> Path:
    """Write the history (and, for JSON, the current metrics and alerts) to ``path``.

    CSV: one row per sample with the columns `CSV_COLUMNS`: ``timestamp`` (epoch seconds),
    ``metric``, ``labels`` (a JSON object) and ``value``."""
    fmt = fmt.lower()
    if fmt not in ("json", "csv"):
        raise UsageError(f"export format {fmt!r} is not json or csv")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(metrics, alerts, now, tmp, fmt)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot export to {path}: {exc.strerror or exc}") from None
    return path


def _write(metrics: MetricsState, alerts: AlertsState, now: float, tmp: Path, fmt: str) -> None:
    if fmt == "json":
        document = {
            "exported_at": now,
            "current": current_metrics(metrics, alerts, now),
            "history": history(metrics),
            "alerts": alert_list(alerts, limit=len(alerts.alerts)),
            "rules": rule_list(alerts),
        }
        tmp.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    elif fmt == "csv":
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for series in sorted(metrics.series.values(), key=lambda s: (s.name, s.labels)):
                labels = json.dumps(dict(series.labels), sort_keys=True, separators=(",", ":"))
                for t, v in series.samples:
                    writer.writerow((f"{t:.6f}", series.name, labels, repr(v)))
