"""The monitor's metrics in Prometheus text format, through prometheus_client's own writer.

Names follow Prometheus' conventions: a ``porch_`` prefix, counters ending in ``_total``,
durations in ``_seconds``. Distributions are gauges with a ``quantile`` label (0.5, 0.9, 0.99
and 1 for the max) over the kept history, raw samples and minute and hour buckets alike (see
`monitorviews.weighted_quantiles`; the max is exact). Custom metrics are ``porch_custom_<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from actors.read import monitoring as views
from store.projections import metrics as folds
from store.projections.alerts import AlertsState
from store.projections.metrics import MetricsState

QUANTILES: Final = (("0.5", 0.5), ("0.9", 0.9), ("0.99", 0.99))  # and "1": the max
_BAD: Final = re.compile(r"[^a-zA-Z0-9_]")


def _name(text: str) -> str:
    name = _BAD.sub("_", text) or "_"
    return name if not name[:1].isdigit() else f"_{name}"


def _label(text: str) -> str:
    """A label name Prometheus takes: no empty name, none starting with ``__`` (reserved)."""
    name = _name(text)
    return f"label{name}" if name.startswith("__") or name == "_" else name


def _quantiles(family: GaugeMetricFamily, metrics: MetricsState, name: str, label: str) -> None:
    for series in metrics.by_name.get(name, []):
        count, _, _, high = views.totals(series)
        if not count:
            continue
        key = dict(series.labels).get(label, "")
        found = views.weighted_quantiles(views.weighted(series), [q for _, q in QUANTILES])
        for (text, _), value in zip(QUANTILES, found, strict=True):
            family.add_metric([key, text], value)
        family.add_metric([key, "1"], high)


class _Collector:
    def __init__(self, metrics: MetricsState, alerts: AlertsState, now: float) -> None:
        self.metrics, self.alerts, self.now = metrics, alerts, now

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        executions = CounterMetricFamily(
            "porch_executions", "Executions that ended, by status", labels=["status"]
        )
        for status in folds.FINISHED.values():
            executions.add_metric([status], float(m.status_counts.get(status, 0)))
        yield executions
        yield GaugeMetricFamily("porch_executions_running", "Executions running now",
                                value=float(m.status_counts.get("running", 0)))  # fmt: skip
        for name, label, help_text in (
            ("stage_duration_seconds", "stage", "Stage run durations over the kept history"),
            ("stage_queue_wait_seconds", "stage", "Time from dispatch to start of stage tasks"),
            ("schedule_lateness_seconds", "schedule", "Time from a schedule's slot to its start"),
        ):
            family = GaugeMetricFamily(f"porch_{name}", help_text, labels=[label, "quantile"])
            _quantiles(family, m, name, label)
            yield family
        runs = CounterMetricFamily(
            "porch_stage_runs", "Step runs of a stage completed (as porch stats counts them)",
            labels=["stage"],
        )  # fmt: skip
        tasks = CounterMetricFamily("porch_stage_tasks", "Stage tasks completed", labels=["stage"])
        rate = GaugeMetricFamily(
            "porch_records_per_second", "Latest records/s of a stage", labels=["stage"]
        )
        for series in m.by_name.get("stage_duration_seconds", []):
            runs.add_metric([dict(series.labels).get("stage", "")], float(series.count))
        per_stage: dict[str, int] = {}
        for series in m.by_name.get("stage_task_duration_seconds", []):
            stage = dict(series.labels).get("stage", "")
            per_stage[stage] = per_stage.get(stage, 0) + series.count
        for stage, count in sorted(per_stage.items()):
            tasks.add_metric([stage], float(count))
        for series in m.by_name.get("records_per_second", []):
            rate.add_metric([dict(series.labels).get("stage", "")], series.last)
        yield runs
        yield tasks
        yield rate
        queue = m.get("queue_depth")
        yield GaugeMetricFamily("porch_queue_depth", "Scheduled executions waiting for admission",
                                value=queue.last if queue else 0.0)  # fmt: skip
        up = GaugeMetricFamily(
            "porch_worker_up", "1 while a worker's heartbeats arrive", labels=["worker", "host"]
        )
        missed = GaugeMetricFamily(
            "porch_worker_missed_heartbeats", "Heartbeats missed", labels=["worker"]
        )
        for worker, info in views.worker_view(m, self.now).items():
            up.add_metric([worker, info["host"]], 1.0 if info["alive"] else 0.0)
            missed.add_metric([worker], float(info["missed_heartbeats"]))
        yield up
        yield missed
        for name in ("cpu_percent", "memory_percent", "disk_percent"):
            host = GaugeMetricFamily(
                f"porch_host_{name}", f"Host {name.replace('_', ' ')}", labels=["host"]
            )
            worker = GaugeMetricFamily(
                f"porch_worker_{name}", f"Worker {name.replace('_', ' ')}", labels=["worker"]
            )
            for series in m.by_name.get(name, []):
                labels = dict(series.labels)
                if "host" in labels:
                    host.add_metric([labels["host"]], series.last)
                elif "worker" in labels:
                    worker.add_metric([labels["worker"]], series.last)
            yield host
            yield worker
        active = GaugeMetricFamily("porch_alerts_active", "Active alerts", labels=["severity"])
        counts: dict[str, int] = {}
        for aid in self.alerts.active.values():
            severity = self.alerts.alerts[aid].severity
            counts[severity] = counts.get(severity, 0) + 1
        for severity, count in sorted(counts.items()):
            active.add_metric([severity], float(count))
        yield active
        fired = CounterMetricFamily("porch_alerts_fired", "Alerts fired", labels=["rule"])
        per_rule: dict[str, int] = {}
        for (rule, _), count in self.alerts.fired_count.items():
            per_rule[rule] = per_rule.get(rule, 0) + count
        for rule, count in sorted(per_rule.items()):
            fired.add_metric([rule], float(count))
        yield fired
        rejected = CounterMetricFamily(
            "porch_rejected_messages",
            "Messages refused at the door, by actor and reason",
            labels=["actor", "reason"],
        )
        for series in m.by_name.get("rejected_messages_total", []):
            labels = dict(series.labels)
            rejected.add_metric([labels.get("actor", ""), labels.get("reason", "")], series.last)
        yield rejected
        # names that differ only in characters Prometheus refuses share one family
        custom: dict[str, dict[tuple[tuple[str, str], ...], tuple[dict[str, str], float]]] = {}
        for series in m.series.values():
            if series.name not in folds.BUILTIN:
                labels = {_label(k): v for k, v in series.labels}
                samples = custom.setdefault(_name(series.name), {})
                samples[tuple(sorted(labels.items()))] = (labels, series.last)
        for name, found in sorted(custom.items()):
            keys = sorted({k for labels, _ in found.values() for k in labels})
            family = GaugeMetricFamily(f"porch_custom_{name}", f"Custom metric {name}", labels=keys)
            for labels, value in found.values():
                family.add_metric([labels.get(k, "") for k in keys], value)
            yield family


def render(metrics: MetricsState, alerts: AlertsState, now: float) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics, alerts, now))  # type: ignore[arg-type]
    return generate_latest(registry)
