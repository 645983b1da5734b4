"""What the monitor shows: current metrics, history, trends, alerts and exports, from the folds.

Pure functions of the metrics and alert folds (and a clock for liveness), shared by the monitor
actor's HTTP API, `PipelineMonitor` and `porch metrics` / `porch alerts`.

They read every tier of a series (hour buckets, minute buckets, raw samples: see
`store.projections.metrics`). Counts, means and maxima are exact over the whole history;
quantiles and trends take a bucket as its mean weighing its count, so they are exact where the
samples are raw or a bucket holds one sample, and approximate for busier buckets.
"""

from __future__ import annotations

import csv
import json
import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any, Final

from actors.errors import UsageError
from store.projections import alerts as alert_folds
from store.projections import metrics as folds
from store.projections.alerts import AlertsState
from store.projections.metrics import HOUR_S, MINUTE_S, MetricsState, Series

HEARTBEAT_S: Final = 1.0  # workers beat every second
ALIVE_MISSES: Final = 3  # a worker that missed this many beats counts as not alive
TREND_RUNS: Final = 20
CSV_COLUMNS: Final = ("timestamp", "metric", "labels", "value")


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (0..1) of non-empty values."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def weighted(series: Series) -> list[tuple[float, int]]:
    """Every tier of a series as ``(value, weight)``, oldest first: bucket means weighing their
    counts, then the raw samples."""
    out = [(b.sum / b.count, b.count) for b in series.hours]
    out += [(b.sum / b.count, b.count) for b in series.minutes]
    out += [(v, 1) for v in series.raw_values]
    return out


def weighted_quantiles(pairs: Iterable[tuple[float, int]], qs: Sequence[float]) -> list[float]:
    """Linear-interpolated quantiles (0..1) of non-empty ``(value, weight)`` pairs, as if each
    value were there ``weight`` times; with weights of 1, exactly `quantile`."""
    ordered = sorted(pairs)
    ranks = list(accumulate(w for _, w in ordered))  # ordered[i] holds ranks below ranks[i]
    n = ranks[-1]
    out = []
    for q in qs:
        pos = (n - 1) * q
        low = int(pos)
        lo = ordered[bisect_right(ranks, low)][0]
        hi = ordered[bisect_right(ranks, min(low + 1, n - 1))][0]
        out.append(lo + (hi - lo) * (pos - low))
    return out


def totals(series: Series) -> tuple[int, float, float, float]:
    """Count, sum, min and max of every sample a series still holds (exact across tiers);
    count 0 (and NaN extremes) when it holds none."""
    buckets = [*series.hours, *series.minutes]
    raw = list(series.raw_values)
    count = sum(b.count for b in buckets) + len(raw)
    if not count:
        return 0, 0.0, math.nan, math.nan
    total = math.fsum([*(b.sum for b in buckets), *raw])
    low = min([*(b.min for b in buckets), *raw])
    high = max([*(b.max for b in buckets), *raw])
    return count, total, low, high


def _stats(series: Series | None) -> dict[str, float]:
    if series is None:
        return {"count": 0}
    count, total, _, high = totals(series)
    if not count:
        return {"count": 0}
    p50, p90, p99 = weighted_quantiles(weighted(series), (0.5, 0.9, 0.99))
    return {"count": count, "p50": p50, "p90": p90, "p99": p99, "max": high, "mean": total / count}


def _values(series: Series | None) -> list[float]:
    """The series' points oldest first (a bucket counts as one point, its mean): for trends."""
    return [v for v, _ in weighted(series)] if series is not None else []


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
    """Per stage: its runs (a step run, as `porch stats` counts them: durations, records per
    second, trends), its tasks' queue waits, and its tasks' own durations by phase."""
    out: dict[str, dict[str, Any]] = {}
    for series in metrics.by_name.get("stage_duration_seconds", []):
        stage = dict(series.labels).get("stage", "")
        rates = metrics.get("records_per_second", series.labels)
        out[stage] = {
            "duration_seconds": _stats(series),
            "records_per_second": _stats(rates),
            "queue_wait_seconds": _stats(metrics.get("stage_queue_wait_seconds", series.labels)),
            "duration_trend": trend(_values(series)),
            "records_per_second_trend": trend(_values(rates)),
            "task_duration_seconds": {},
        }
    for series in metrics.by_name.get("stage_task_duration_seconds", []):
        labels = dict(series.labels)
        stage = out.get(labels.get("stage", ""))
        if stage is not None:
            stage["task_duration_seconds"][labels.get("phase", "")] = _stats(series)
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
        dict(s.labels).get("schedule", ""): _stats(s)
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
            "duration_seconds": _stats(metrics.get("execution_duration_seconds")),
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


def points(
    series: Series, start: float | None = None, end: float | None = None
) -> Iterator[tuple[float, float, folds.Bucket | None, float]]:
    """``(timestamp, value, bucket, resolution_s)`` of a series between ``start`` and ``end``,
    oldest tier first: each hour and minute bucket (timestamp its start, value its mean) whose
    samples overlap the range, then each raw sample (no bucket, resolution 0)."""
    for tier, width in ((series.hours, HOUR_S), (series.minutes, MINUTE_S)):
        for b in tier:
            if (start is None or b.last_ts >= start) and (end is None or b.first_ts <= end):
                yield b.start, b.sum / b.count, b, width
    for t, v in zip(series.raw_ts, series.raw_values, strict=True):
        if (start is None or t >= start) and (end is None or t <= end):
            yield t, v, None, 0.0


def history(
    metrics: MetricsState,
    names: Iterable[str] | None = None,
    start: float | None = None,
    end: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Per metric, its points by timestamp: a raw sample is ``timestamp``, ``value``,
    ``labels``; an older minute or hour bucket adds ``count``, ``min``, ``max`` and
    ``resolution_s`` (60 or 3600), its ``value`` the mean and its ``timestamp`` its start."""
    wanted = set(names) if names is not None else None
    out: dict[str, list[dict[str, Any]]] = {}
    for series in metrics.series.values():
        if wanted is not None and series.name not in wanted:
            continue
        labels = dict(series.labels)
        rows = out.setdefault(series.name, [])
        for t, v, b, width in points(series, start, end):
            if b is None:
                rows.append({"timestamp": t, "value": v, "labels": labels})
            else:
                rows.append({"timestamp": t, "value": v, "labels": labels, "count": b.count,
                             "min": b.min, "max": b.max, "resolution_s": width})  # fmt: skip
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
    return [rule.to_map() for rule in alerts.rules.values()]


def export(metrics: MetricsState, alerts: AlertsState, now: float, path: Path, fmt: str) -> Path:
    """Write the history (and, for JSON, the current metrics and alerts) to ``path``.

    CSV: one row per point (see `history`) with the columns `CSV_COLUMNS`: ``timestamp``
    (epoch seconds), ``metric``, ``labels`` (a JSON object) and ``value``; a minute or hour
    bucket's row has its start and mean."""
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
                for t, v, _, _ in points(series):
                    writer.writerow((f"{t:.6f}", series.name, labels, repr(v)))
