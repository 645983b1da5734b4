"""`scripts/bench history`: porch on day 300, beside a fresh data dir, in the same run.

It writes a long log with the mix a data dir collected before liveness left the log (heartbeats,
monitor samples, executions with their stages, schedule fires, alerts) through the real log
writer, lets a system start on it once (no snapshot yet: every actor folds it all, then writes
its snapshots), and then measures, against a fresh data dir:

- each actor's time from its process's start to live, and the hub's time to answer;
- the first 50k-row pipeline's completion after the start;
- each query command's latency with the system running and with none;
- peak RSS of each actor;
- disk bytes of log, snapshots, archive;
- the log's growth while idle with two workers, per day;
- a simulated year of a nightly 2M-row run under the default retention: the most artifact bytes
  held at once, against the bound the retention promises.

``--quick`` uses 200,000 events instead of 10 million.
"""

from __future__ import annotations

import copy
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import psutil

from actors.api.system import System
from bus.client import Client
from bus.events import ExecutionRequested
from scripts.benchmarks.common import ROOT, line, median
from stages.sample import write_sample
from store.log import EventLog
from store.reader import LogReader

GOLDEN = ROOT / "tests" / "golden" / "full" / "log"
ACTORS = ("orchestrator", "scheduler", "monitor")
QUERIES = {
    "status": ["status"],
    "history": ["history"],
    "stats": ["stats"],
    "metrics": ["metrics"],
    "alerts": ["alerts", "list"],
    "schedule_list": ["schedule", "list"],
}
DAY_S = 86400.0


def _template() -> list[dict[str, Any]]:
    """The events of one real sequential execution of the default pipeline (golden log)."""
    events = [msgpack.unpackb(p) for _, p in LogReader(GOLDEN).read(1)]
    return [e for e in events if e.get("execution_id") == "seq"]


def _execution(template: list[dict[str, Any]], eid: str, ts: float, ids: Any) -> list[dict]:
    out = []
    for i, event in enumerate(template):
        fields = copy.deepcopy(event)
        fields["execution_id"] = eid
        fields["id"] = next(ids)
        fields["ts"] = ts + i * 0.5
        if "task_id" in fields:
            fields["task_id"] = eid + fields["task_id"][3:]
        out.append(fields)
    return out


def build_log(data_dir: Path, events: int, *, seed: int = 7) -> dict[str, int]:
    """A log of ``events`` events spread over as many days as two idle workers took to write
    them at the old rate (2M events in 11 days), ending now."""
    rng = random.Random(seed)
    counter = iter(range(1 << 62))
    ids = (f"h-{n:x}" for n in counter)
    template = _template()
    span_s = events / 2_000_000 * 11 * DAY_S
    start = time.time() - span_s
    step = span_s / events
    counts: dict[str, int] = {}
    rules = [
        {"type": "AlertRuleAdded", "v": 1, "id": next(ids), "ts": start, "src": "bench@h:1",
         "rule_id": "slow-stage", "metric_name": "stage_duration_seconds",
         "condition": "greater_than", "threshold": 30.0, "severity": "high"},
        {"type": "ScheduleAdded", "v": 1, "id": next(ids), "ts": start, "src": "bench@h:1",
         "schedule_id": "nightly", "config": {"schedule_id": "nightly", "schedule_type": "cron",
                                              "schedule_expression": "0 2 * * *", "enabled": True,
                                              "execution_config": {"input_data": "x.parquet"}}},
    ]  # fmt: skip
    with EventLog(data_dir / "log", fsync="never") as log:
        batch = [msgpack.packb(e) for e in rules]
        written = len(batch)
        n_exec = 0
        while written < events:
            ts = start + written * step
            roll = rng.random()
            if roll < 0.48:
                kind = "WorkerHeartbeat"
                fields = {"type": kind, "v": 1, "id": next(ids), "ts": ts, "src": "worker-1@h:2",
                          "worker": f"worker-{rng.randint(1, 2)}", "host": "h",
                          "cpu_percent": rng.uniform(0, 5), "memory_percent": 1.5,
                          "rss_bytes": 90 << 20, "host_cpu_percent": rng.uniform(0, 20),
                          "host_memory_percent": 30.0, "disk_percent": 40.0, "task_id": None,
                          "queued": [], "malformed": 0}  # fmt: skip
                batch.append(msgpack.packb(fields))
            elif roll < 0.9995:
                kind = "MetricRecorded"
                name = rng.choice(("cpu_percent", "memory_percent", "disk_percent",
                                   "workers_alive", "rejected_messages_total"))  # fmt: skip
                fields = {"type": kind, "v": 1, "id": next(ids), "ts": ts, "src": "monitor@h:3",
                          "name": name, "value": rng.uniform(0, 50), "labels": {"host": "h"},
                          "execution_id": None}  # fmt: skip
                batch.append(msgpack.packb(fields))
            else:
                kind = "Execution"
                n_exec += 1
                eid = f"nightly-{n_exec:06d}"
                fired = {"type": "ScheduleFired", "v": 1, "id": next(ids), "ts": ts,
                         "src": "scheduler@h:4", "schedule_id": "nightly", "fire_time": ts,
                         "key": f"nightly@{ts}", "execution_id": eid, "manual": False,
                         "config_override": {}}  # fmt: skip
                batch.append(msgpack.packb(fired))
                batch += [msgpack.packb(e) for e in _execution(template, eid, ts, ids)]
                if n_exec % 20 == 0:
                    alert = f"a-{n_exec}"
                    batch.append(msgpack.packb({
                        "type": "AlertFired", "v": 1, "id": next(ids), "ts": ts, "src": "monitor@h:3",
                        "alert_id": alert, "rule_id": "slow-stage", "metric_name": "stage_duration_seconds",
                        "value": 31.0, "threshold": 30.0, "severity": "high", "message": "slow",
                        "labels": {"stage": "data_cleaning"}}))  # fmt: skip
                    batch.append(msgpack.packb({
                        "type": "AlertResolved", "v": 1, "id": next(ids), "ts": ts + 60,
                        "src": "monitor@h:3", "alert_id": alert, "reason": "cleared"}))  # fmt: skip
            counts[kind] = counts.get(kind, 0) + 1
            if len(batch) >= 2000:
                log.append(batch)
                written += len(batch)
                batch = []
        if batch:
            log.append(batch)
            written += len(batch)
    counts["events"] = written
    counts["executions"] = n_exec
    return counts


class Peak:
    """Samples the RSS of a system's children until stopped; keeps each one's peak."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for child in list(self.system.children):
                if child.proc is None or child.proc.poll() is not None:
                    continue
                try:
                    rss = psutil.Process(child.proc.pid).memory_info().rss
                except psutil.Error:
                    continue
                name = "worker" if child.name.startswith("worker") else child.name
                self.peak[name] = max(self.peak.get(name, 0), rss)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(2)
        return self.peak


def _start(data_dir: Path, log_path: Path, config: Path) -> tuple[System, dict[str, float], Peak]:
    """Start a whole system; seconds from the start to the hub answering and to each actor
    saying it is live."""
    out = log_path.open("ab")
    system = System(data_dir=data_dir, workers=2, log=out, scheduler=True, monitor=True,
                    config_file=config)  # fmt: skip
    began = time.monotonic()
    size = log_path.stat().st_size
    system.start(timeout_s=600)
    peak = Peak(system)
    live = {"hub": time.monotonic() - began}
    # each actor from its own start (the supervisor starts them once the hub answers)
    spawned = {c.name: c.started for c in system.children}
    deadline = time.monotonic() + 1800
    while len(live) < 1 + len(ACTORS) and time.monotonic() < deadline:
        with log_path.open("rb") as fh:
            fh.seek(size)
            text = fh.read().decode(errors="replace")
        for name in ACTORS:
            if name not in live and f"{name}: live at seq" in text:
                live[name] = time.monotonic() - spawned.get(name, began)
        time.sleep(0.01)
    out.close()
    return system, live, peak


def _pipeline(data_dir: Path, sample: Path, began: float) -> float:
    """Seconds from ``began`` until a 50k-row default pipeline has completed."""
    eid = f"bench-{time.monotonic_ns()}"
    with Client.local(data_dir) as client:
        sub = client.subscribe(types=["ExecutionCompleted", "ExecutionFailed"])
        client.append(ExecutionRequested(
            execution_id=eid, input_data=str(sample),
            stages=["data_cleaning", "feature_engineering", "data_aggregation", "data_validation"],
        ))  # fmt: skip
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            for record in sub.receive(200):
                fields = record.fields()
                if fields.get("execution_id") == eid:
                    sub.close()
                    if fields["type"] != "ExecutionCompleted":
                        raise RuntimeError(f"bench history: the pipeline failed: {fields}")
                    return time.monotonic() - began
    raise RuntimeError("bench history: the pipeline did not finish in 600 s")


def _query_ms(data_dir: Path, args: list[str], reps: int) -> float:
    times = []
    for _ in range(reps):
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "actors.cli", *args, "--data-dir", str(data_dir)],
                              capture_output=True, text=True, check=False, cwd=ROOT)  # fmt: skip
        times.append((time.monotonic() - began) * 1000)
        if done.returncode not in (0, 1):
            raise RuntimeError(f"bench history: porch {' '.join(args)}: {done.stderr.strip()}")
    return median(times)


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _wait_snapshots(data_dir: Path, timeout_s: float) -> None:
    from store.snapshots import SnapshotStore

    store = SnapshotStore(data_dir / "snapshots")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(store.list(name) for name in ACTORS):
            return
        time.sleep(0.2)
    raise RuntimeError("bench history: the actors wrote no snapshots")


def _measure(data_dir: Path, work: Path, config: Path, sample: Path, reps: int) -> dict[str, Any]:
    log_path = work / f"{data_dir.name}.log"
    log_path.touch()
    began = time.monotonic()
    system, live, peak = _start(data_dir, log_path, config)
    try:
        first = _pipeline(data_dir, sample, began)
        queries = {name: _query_ms(data_dir, args, reps) for name, args in QUERIES.items()}
    finally:
        rss = peak.stop()
        system.stop()
    offline = {name: _query_ms(data_dir, args, reps) for name, args in QUERIES.items()}
    return {"live": live, "first": first, "queries": queries, "offline": offline, "rss": rss}


def _idle_growth(work: Path, config: Path, seconds: float) -> float:
    """Log bytes per day that a system with two idle workers adds."""
    data_dir = work / "idle"
    log_path = work / "idle.log"
    log_path.touch()
    system, _, peak = _start(data_dir, log_path, config)
    try:
        time.sleep(2.0)  # past the starting events
        before = _bytes(data_dir / "log")
        time.sleep(seconds)
        after = _bytes(data_dir / "log")
    finally:
        peak.stop()
        system.stop()
    return (after - before) / seconds * DAY_S


RUN_BYTES = 1.1e9  # intermediates of one sequential run of the default pipeline on 2M rows


def simulate_year(days: int = 365) -> tuple[float, float, int]:
    """A nightly 2M-row run for ``days`` days under the default retention, through the real
    execution fold and retention policy: the most intermediate bytes held at any time (while a
    night's run is being written, before the pass after it), the bound the policy promises
    (a run per day of ``keep_days``, the ``keep_last`` newest, and tonight's), and how many
    executions the fold still holds at the end."""
    from store import retention
    from store.projections import executions as folds

    policy = retention.RetentionPolicy()
    state = folds.ExecutionsState()
    template = _template()
    ids = (f"y-{n:x}" for n in range(1 << 62))
    start = 1_750_000_000.0
    held: dict[str, float] = {}
    most = 0.0
    seq = 0
    for day in range(days):
        ts = start + day * DAY_S + 2 * 3600
        eid = f"night-{day:03d}"
        for fields in _execution(template, eid, ts, ids):
            seq += 1
            folds.evolve(seq, fields, state)
        held[eid] = RUN_BYTES
        most = max(most, sum(held.values()))
        now = ts + 3600
        for removal in retention.decide(state, policy, now):
            seq += 1
            folds.evolve(seq, {"type": "ArtifactsRemoved", "v": 1, "id": next(ids), "ts": now,
                               "src": "bench", "execution_id": removal.execution_id,
                               "steps": list(removal.steps), "bytes": int(held[removal.execution_id]),
                               "reason": "retention", "finals": removal.finals}, state)  # fmt: skip
            held[removal.execution_id] = 0.0
    bound = (max(policy.keep_last, int(policy.keep_days) + 1) + 1) * RUN_BYTES
    return most, bound, len(state.executions)


def run(quick: bool) -> None:
    events = 200_000 if quick else 10_000_000
    reps = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="porch-bench-history-") as tmp:
        work = Path(tmp)
        config = work / "porch.toml"
        config.write_text("[snapshots]\nevery_events = 10000\nevery_s = 2.0\n")
        sample = write_sample(work / "input.parquet", 50_000, seed=3)
        fresh = work / "fresh"
        old = work / "old"
        built_at = time.monotonic()
        counts = build_log(old, events)
        print(f"# history: {counts['events']:,} events ({counts['executions']:,} executions) "
              f"written in {time.monotonic() - built_at:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
        # the first start on the old log: every actor folds it all, then writes its snapshot
        first_log = work / "first.log"
        first_log.touch()
        system, first_live, peak = _start(old, first_log, config)
        try:
            _wait_snapshots(old, 600)
        finally:
            first_rss = peak.stop()
            system.stop()
        for name in ACTORS:
            line(f"history.{name}_first_start_s", first_live.get(name, float("nan")), "s")
        line("history.monitor_first_start_rss_mb", first_rss.get("monitor", 0) / 2**20, "MB")
        base = _measure(fresh, work, config, sample, reps)
        day300 = _measure(old, work, config, sample, reps)
        for name in ("hub", *ACTORS):
            line(f"history.{name}_live_s", day300["live"].get(name, float("nan")), "s",
                 base["live"].get(name, float("nan")))  # fmt: skip
        line("history.first_pipeline_s", day300["first"], "s", base["first"])
        for name in QUERIES:
            line(f"history.query_{name}_ms", day300["queries"][name], "ms", base["queries"][name])
        for name in QUERIES:
            line(f"history.query_{name}_offline_ms", day300["offline"][name], "ms",
                 base["offline"][name])  # fmt: skip
        for name in ("hub", *ACTORS):
            line(f"history.rss_{name}_mb", day300["rss"].get(name, 0) / 2**20, "MB",
                 base["rss"].get(name, 0) / 2**20)  # fmt: skip
        line("history.log_bytes", _bytes(old / "log"), "bytes")
        line("history.snapshot_bytes", _bytes(old / "snapshots"), "bytes")
        line("history.archive_bytes", _bytes(old / "archive"), "bytes")
        line("history.idle_log_growth", _idle_growth(work, config, 10.0 if quick else 60.0),
             "bytes/day")  # fmt: skip
        most, bound, kept = simulate_year()
        line("history.year_nightly_artifacts_gb", most / 1e9, "GB", bound / 1e9)
        line("history.year_fold_executions", kept, "executions")
