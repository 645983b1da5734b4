"""Golden logs: what the folds make of a recorded log, as plain data to compare across versions.

`summarize(log_dir)` folds a log directory with today's folds (executions, schedules, metrics,
alerts) and keeps what must not change when the code changes: statuses, counts, errors, fires.
`scripts/record_golden.py` records a log from a real run and stores it with its summary under
`tests/golden/`; `tests/test_golden.py` checks that folding it still gives that summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from actors.read.executions import execution_view
from actors.scheduler.core import SchedulerCore
from bus.wire import unpack_map
from store.projections import alerts as alert_folds
from store.projections import executions as execution_folds
from store.projections import metrics as metric_folds
from store.projections import schedules as schedule_folds
from store.reader import LogReader


def _through_snapshot(module: Any, state: Any) -> Any:
    """The state written down as a snapshot's body and read back."""
    body = msgpack.packb(module.CODEC.dump(state), use_bin_type=True)
    return module.CODEC.load(msgpack.unpackb(body, strict_map_key=False))


def summarize(log_dir: Path, *, snapshot_every: int = 0) -> dict[str, Any]:
    """The summary of a log; with ``snapshot_every``, every fold is written down and read
    back as a snapshot after every that many events, as a restarted actor would resume."""
    executions = execution_folds.ExecutionsState()
    schedules = SchedulerCore()
    metrics = metric_folds.MetricsState(retention_s=10 * 365 * 86400)
    alerts = alert_folds.AlertsState()
    types: dict[str, int] = {}
    last = 0
    for count, (seq, payload) in enumerate(LogReader(log_dir).read(1)):
        if snapshot_every and count and count % snapshot_every == 0:
            executions = _through_snapshot(execution_folds, executions)
            schedules.state = _through_snapshot(schedule_folds, schedules.state)
            metrics = _through_snapshot(metric_folds, metrics)
            alerts = _through_snapshot(alert_folds, alerts)
        fields = unpack_map(payload)
        types[fields["type"]] = types.get(fields["type"], 0) + 1
        execution_folds.evolve(seq, fields, executions)
        schedules.apply(seq, fields, 0.0)
        metric_folds.evolve(seq, fields, metrics)
        alert_folds.evolve(seq, fields, alerts)
        last = seq
    out: dict[str, Any] = {"last_seq": last, "types": dict(sorted(types.items()))}
    out["executions"] = {}
    for eid, ex in sorted(executions.executions.items()):
        view = execution_view(ex)
        out["executions"][eid] = {
            "status": ex.status,
            "mode": ex.mode,
            "records_processed": ex.records_processed,
            "error": ex.error,
            "retryable": ex.retryable,
            "steps": {
                step: [s["status"], s["records_in"], s["records_out"], s["attempts"], s["reused"]]
                for step, s in sorted(view["steps"].items())
            },
        }
    out["schedules"] = {
        sid: {
            "paused": s.paused,
            "fires": s.fires,
            "missed": s.missed,
            "runs": [
                [e, schedules.state.runs[e].status, schedules.state.runs[e].attempt] for e in s.runs
            ],
        }
        for sid, s in sorted(schedules.state.schedules.items())
    }
    out["alerts"] = sorted(
        [a.alert_id, a.rule_id, a.resolved, a.acknowledged] for a in alerts.alerts.values()
    )
    out["rules"] = sorted(alerts.rules)
    out["metrics"] = {
        "status_counts": {k: v for k, v in sorted(metrics.status_counts.items()) if v},
        "series": sorted(f"{s.name}{dict(s.labels)}:{s.count}" for s in metrics.series.values()
                         if s.name not in ("cpu_percent", "memory_percent", "disk_percent",
                                           "host_cpu_percent", "host_memory_percent",
                                           "worker_missed_heartbeats", "workers_alive")),
    }  # fmt: skip
    return out
