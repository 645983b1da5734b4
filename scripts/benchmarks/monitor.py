"""`scripts/bench monitor`: how fast the monitor folds the event stream, and how soon it alerts.

- fold_rate: a realistic stream (heartbeats of 4 workers, stage dispatches, starts and
  completions over 10 stages, executions, custom metrics) unpacked and folded into metrics and
  alerts with 100 rules evaluated on every sample, events/s. The baseline is unpacking the
  same payloads alone.
- alert_latency p50/p99: a real `porch monitor` (1 s sampling interval) behind a hub; an
  offending StageCompleted is published, and the time from its arrival at a subscriber to the
  arrival of its AlertFired is measured, 50 times (each alert is cleared before the next).
- series_memory: the bytes (every object once, by `sys.getsizeof`) the metrics fold holds after
  26 hours of live samples of one series at 100 a second (10 with --quick), downsampled to raw,
  minute and hour tiers. The baseline is the raw-only size, what the fold held before it
  downsampled: the samples within the 24 h retention as a deque of ``(ts, value)`` pairs.
  sample_fold_rate: how fast those samples were folded, samples/s.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from actors.monitor.alerting import AlertEngine, check_rule
from bus.events import (
    AlertRuleAdded,
    ExecutionCompleted,
    ExecutionRequested,
    ExecutionStarted,
    MetricRecorded,
    StageCompleted,
    StageDispatched,
    StageStarted,
    WorkerHeartbeat,
)
from bus.schema import encode
from bus.wire import unpack_map
from scripts.benchmarks.common import line, median, percentile
from scripts.benchmarks.scheduler import _client, _porch
from store.projections import alerts as alert_folds
from store.projections import metrics as folds

STAGES = [f"stage_{i}" for i in range(10)]
WORKERS = [f"w{i}" for i in range(4)]


def rules() -> list[dict]:
    out = []
    for i, stage in enumerate(STAGES):
        for j, threshold in enumerate((30, 60, 120)):
            out.append({"rule_id": f"dur-{i}-{j}", "metric_name": "stage_duration_seconds",
                        "condition": "greater_than", "threshold": threshold, "severity": "high",
                        "scope": {"stage": stage}})  # fmt: skip
        out.append({"rule_id": f"rate-{i}", "metric_name": "records_per_second", "condition": "less_than",
                    "threshold": 10, "severity": "medium", "scope": {"stage": stage}})  # fmt: skip
        out.append({"rule_id": f"wait-{i}", "metric_name": "stage_queue_wait_seconds",
                    "condition": "greater_than", "threshold": 5, "severity": "low", "scope": {"stage": stage}})  # fmt: skip
    for i, worker in enumerate(WORKERS):
        for j, threshold in enumerate((80, 90, 95, 99)):
            out.append({"rule_id": f"cpu-{i}-{j}", "metric_name": "cpu_percent", "condition": "greater_than",
                        "threshold": threshold, "severity": "medium", "scope": {"worker": worker},
                        "pending_s": 30})  # fmt: skip
            out.append({"rule_id": f"mem-{i}-{j}", "metric_name": "memory_percent", "condition": "greater_than",
                        "threshold": threshold, "severity": "high", "scope": {"worker": worker}})  # fmt: skip
    for i in range(100 - len(out)):
        out.append({"rule_id": f"custom-{i}", "metric_name": f"custom_{i % 5}", "condition": "greater_than",
                    "threshold": 1000 + i, "severity": "info"})  # fmt: skip
    return out[:100]


def stream(count: int, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    out = [encode(AlertRuleAdded(**check_rule(r).to_map())) for r in rules()]
    eid = 0
    while len(out) < count:
        roll = rng.random()
        if roll < 0.55:
            out.append(encode(WorkerHeartbeat(worker=rng.choice(WORKERS), host="h1", cpu_percent=rng.uniform(5, 70),
                                              memory_percent=rng.uniform(10, 60), rss_bytes=10**8)))  # fmt: skip
        elif roll < 0.85:
            eid += 1
            stage = rng.choice(STAGES)
            task = f"e{eid}/{stage}"
            plan = {"steps": [{"id": stage, "stage": stage, "phases": ["run"], "parts": 1}]}
            out.append(
                encode(ExecutionStarted(execution_id=f"e{eid}", mode="sequential", plan=plan))
            )
            out.append(encode(StageDispatched(execution_id=f"e{eid}", stage=stage, step=stage, task_id=task,
                                              partition=0, partitions=1, attempt=1, lease_ms=10000,
                                              inputs=[])))  # fmt: skip
            out.append(encode(StageStarted(execution_id=f"e{eid}", stage=stage, step=stage, worker="w1",
                                           task_id=task)))  # fmt: skip
            out.append(encode(StageCompleted(execution_id=f"e{eid}", stage=stage, step=stage, worker="w1",
                                             artifact="a", rows_in=1000, rows_out=1000, bytes=1, sha256="",
                                             duration_s=rng.uniform(0.1, 20), task_id=task)))  # fmt: skip
        elif roll < 0.95:
            out.append(
                encode(MetricRecorded(name=f"custom_{rng.randrange(5)}", value=rng.uniform(0, 100)))
            )
        else:
            eid += 1
            out.append(
                encode(ExecutionRequested(execution_id=f"x{eid}", stages=["s"], input_data="/x"))
            )
            out.append(encode(ExecutionStarted(execution_id=f"x{eid}", mode="sequential")))
            out.append(
                encode(
                    ExecutionCompleted(execution_id=f"x{eid}", records_processed=1, duration_s=1.0)
                )
            )
    return out[:count]


def fold_rate(payloads: list[bytes]) -> float:
    metrics, engine = folds.MetricsState(), AlertEngine()
    alert_types = alert_folds.TYPES
    now = time.time()
    start = time.perf_counter()
    for seq, payload in enumerate(payloads, 1):
        fields = unpack_map(payload)
        folds.evolve(seq, fields, metrics)
        if fields["type"] in alert_types:
            engine.apply(seq, fields)
        for series in metrics.changed:
            engine.observe(series, now)
    return len(payloads) / (time.perf_counter() - start)


def unpack_rate(payloads: list[bytes]) -> float:
    start = time.perf_counter()
    for payload in payloads:
        unpack_map(payload)
    return len(payloads) / (time.perf_counter() - start)


def deep_size(root: object) -> int:
    """Bytes of an object graph, each object once, as `sys.getsizeof` counts them."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj)
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset | deque):
            stack.extend(obj)
        elif hasattr(type(obj), "__slots__"):
            stack.extend(getattr(obj, n) for n in type(obj).__slots__ if hasattr(obj, n))
    return total


def series_memory(hours: float, rate_hz: float) -> tuple[float, float, float]:
    """(bytes held, raw-only bytes, samples/s) for one series fed ``hours`` at ``rate_hz``."""
    metrics = folds.MetricsState()
    fields: dict[str, Any] = {"type": "MetricSampled", "name": "load", "labels": {"host": "h"}}
    t0, n = 1_800_000_000.0, int(hours * 3600 * rate_hz)
    observe = folds.observe
    start = time.perf_counter()
    for k in range(n):
        fields["ts"] = t0 + k / rate_hz
        fields["value"] = float(k % 997)
        observe(fields, metrics)
    rate = n / (time.perf_counter() - start)
    pairs = deque((t0 + k / rate_hz, float(k % 997)) for k in range(10_000))
    raw_only = deep_size(pairs) / len(pairs) * min(n, metrics.retention_s * rate_hz)
    return deep_size(metrics.series), raw_only, rate


def alert_latency(trials: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="porch-bench-") as tmp:
        data_dir = Path(tmp) / "porch"
        hub = _porch(data_dir, "hub")
        monitor = None
        try:
            client = _client(data_dir)
            # a task's own duration: the sample a StageCompleted carries, alone
            rule = check_rule({"rule_id": "slow", "metric_name": "stage_task_duration_seconds",
                               "condition": "greater_than", "threshold": 10, "severity": "high",
                               "cooldown_minutes": 0})  # fmt: skip
            client.append(AlertRuleAdded(**rule.to_map()))
            monitor = _porch(data_dir, "monitor", "--sampling-interval", "1")
            latencies: list[float] = []
            with client.subscribe(client.head() + 1, types=["StageCompleted", "AlertFired", "AlertResolved",
                                                             "MetricSampled"]) as sub:  # fmt: skip
                # the monitor is live once its first samples (live events, never logged) arrive
                deadline = time.monotonic() + 30
                while not any(r.type == "MetricSampled" for r in sub.take_live()):
                    if time.monotonic() > deadline:
                        raise RuntimeError("bench: no sample from the monitor in 30 s")
                    sub.receive(500)
                for trial in range(trials):
                    for duration, wanted in ((60.0, "AlertFired"), (1.0, "AlertResolved")):
                        client.publish(encode(StageCompleted(
                            execution_id=f"b{trial}", stage="s", worker="w", artifact="a", rows_in=1,
                            rows_out=1, bytes=1, sha256="", duration_s=duration, task_id=f"t{trial}-{duration}")))  # fmt: skip
                        offending = None
                        deadline = time.monotonic() + 10
                        while time.monotonic() < deadline:
                            records = sub.receive(500)
                            arrived = time.perf_counter()
                            kinds = [r.type for r in records]
                            if offending is None and "StageCompleted" in kinds:
                                offending = arrived
                            if wanted in kinds:
                                if wanted == "AlertFired":
                                    latencies.append((arrived - (offending or arrived)) * 1000)
                                break
                        else:
                            raise RuntimeError(f"bench: no {wanted} in 10 s")
            client.close()
            return latencies
        finally:
            for child in (monitor, hub):
                if child is not None:
                    child.terminate()
                    child.wait(10)


def run(quick: bool) -> None:
    payloads = stream(20_000 if quick else 300_000)
    rates = [fold_rate(payloads) for _ in range(1 if quick else 3)]
    bare = [unpack_rate(payloads) for _ in range(1 if quick else 3)]
    line("monitor.fold_rate_100_rules", median(rates), "events/s", median(bare))
    rate_hz = 10 if quick else 100
    held, raw_only, sample_rate = series_memory(26, rate_hz)
    line(f"monitor.series_memory_26h_{rate_hz}hz", held / 2**20, "MiB", raw_only / 2**20)
    line(f"monitor.sample_fold_rate_{rate_hz}hz", sample_rate, "samples/s")
    latencies = alert_latency(10 if quick else 50)
    line("monitor.alert_latency_p50", percentile(latencies, 50), "ms")
    line("monitor.alert_latency_p99", percentile(latencies, 99), "ms")
