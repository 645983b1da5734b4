"""`scripts/bench scheduler`: a hub and a real `porch scheduler` process with 10,000 schedules.

- idle_cpu: the scheduler's CPU (percent of one core) over a quiet window, with 10,000 cron and
  interval schedules loaded and none due;
- fire_lateness p50/p99: 1,000 one-time schedules due in the same second, from each slot to the
  moment its durable ScheduleFired reaches a subscriber;
- rebuild: reading the log from the hub and folding it into the scheduler's state and heap, as a
  restart does, beside just reading the same events (the baseline).
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from actors.scheduler.core import SchedulerCore
from actors.scheduler.specs import normalize
from actors.scheduler.timetable import iso
from bus.client import Client
from bus.errors import BusError
from bus.events import ScheduleAdded
from bus.schema import encode
from scripts.benchmarks.common import line, median, percentile
from store.projections import schedules as folds


def _porch(data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "actors.cli", *args, "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _client(data_dir: Path, timeout_s: float = 20) -> Client:
    deadline = time.monotonic() + timeout_s
    client = Client.local(data_dir, timeout_ms=250, retry_ms=250)
    while time.monotonic() < deadline:
        try:
            client.head()
            return client
        except BusError:
            continue
    raise RuntimeError("bench: the hub did not start")


def _configs(count: int, now: float, seed: int = 5) -> list[dict]:
    """Daily crons at minutes away from now in many zones, and hourly-or-slower intervals."""
    rng = random.Random(seed)
    zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
    configs = []
    for i in range(count):
        if i % 2:
            config = {"schedule_type": "interval", "schedule_expression": f"{rng.randint(1, 24)}h"}
        else:
            config = {"schedule_type": "cron", "timezone": rng.choice(zones),
                      "schedule_expression": f"{rng.randint(0, 59)} {rng.randint(0, 23)} * * {rng.choice(['*', '1-5', '0,6'])}"}  # fmt: skip
        config.update(schedule_id=f"s{i:05d}", execution_config={"input_data": "/data/in.parquet"})
        configs.append(normalize(config))
    # nothing may fall due while the idle CPU is measured
    return [c for c in configs if not _due_soon(c, now)]


def _due_soon(config: dict, now: float) -> bool:
    from actors.scheduler.specs import timetable

    nxt = timetable(config, now).next_after(now)
    return nxt is not None and nxt < now + 600


def _load(client: Client, configs: list[dict]) -> None:
    for config in configs:
        client.publish(encode(ScheduleAdded(schedule_id=config["schedule_id"], config=config)))


def _wait_head(client: Client, at_least: int, timeout_s: float = 60) -> int:
    """Wait until the hub's log holds ``at_least`` events (publishes are not acknowledged)."""
    deadline = time.monotonic() + timeout_s
    with client.subscribe(client.head() + 1) as sub:
        while time.monotonic() < deadline:
            head = client.head()
            if head >= at_least:
                return head
            sub.receive(100)
    raise RuntimeError("bench: the log did not reach the expected length")


def _settle(proc: psutil.Process, window_s: float = 0.5, limit: float = 5.0) -> None:
    """Wait until the scheduler has folded what it was sent: its CPU drops under `limit` %."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        before = sum(proc.cpu_times()[:2])
        time.sleep(window_s)
        if (sum(proc.cpu_times()[:2]) - before) / window_s * 100 < limit:
            return


def run(quick: bool) -> None:
    count = 1000 if quick else 10_000
    burst = 100 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="porch-bench-") as tmp:
        data_dir = Path(tmp) / "porch"
        hub = _porch(data_dir, "hub")
        scheduler = None
        try:
            client = _client(data_dir)
            scheduler = _porch(data_dir, "scheduler", "--max-concurrent", "3")
            proc = psutil.Process(scheduler.pid)
            configs = _configs(count, time.time())
            base = client.head()
            _load(client, configs)
            _wait_head(client, base + len(configs))
            _settle(proc)
            window = 3.0 if quick else 10.0
            before = sum(proc.cpu_times()[:2])
            time.sleep(window)
            idle = (sum(proc.cpu_times()[:2]) - before) / window * 100
            line(f"scheduler.idle_cpu_{len(configs)}_schedules", idle, "%")

            # the burst: one-time schedules all due at the same instant
            at = round(time.time()) + (4 if quick else 8)
            with client.subscribe(client.head() + 1, types=["ScheduleFired"]) as sub:
                for i in range(burst):
                    config = normalize({"schedule_id": f"b{i:04d}", "schedule_type": "one_time",
                                        "schedule_expression": iso(at),
                                        "execution_config": {"input_data": "/data/in.parquet"}})  # fmt: skip
                    client.publish(
                        encode(ScheduleAdded(schedule_id=config["schedule_id"], config=config))
                    )
                late: list[float] = []
                decided: list[float] = []
                deadline = time.monotonic() + 60
                while len(late) < burst and time.monotonic() < deadline:
                    records = sub.receive(500)
                    arrived = time.time()  # every record of the batch was here by now
                    for record in records:
                        fields = record.fields()
                        late.append((arrived - fields["fire_time"]) * 1000)
                        decided.append((fields["ts"] - fields["fire_time"]) * 1000)
            if len(late) < burst:
                raise RuntimeError(f"bench: only {len(late)} of {burst} fires arrived")
            line("scheduler.fire_lateness_p50", percentile(late, 50), "ms")
            line("scheduler.fire_lateness_p99", percentile(late, 99), "ms")
            line("scheduler.fire_decided_p99", percentile(decided, 99), "ms")

            # a restart's rebuild, measured in process: read + fold + heap, beside read alone
            rebuild, reading = [], []
            for _ in range(1 if quick else 3):
                start = time.perf_counter()
                records = list(client.read(1, types=folds.TYPES))
                reading.append(time.perf_counter() - start)
                start = time.perf_counter()
                core = SchedulerCore(3)
                for record in client.read(1, types=folds.TYPES):
                    core.apply(record.seq, record.fields(), 0.0)
                core.go_live(time.time())
                rebuild.append(time.perf_counter() - start)
                assert len(core.state.schedules) == len(configs) + burst, len(records)
            line(f"scheduler.rebuild_{len(core.state.schedules)}_schedules", median(rebuild), "s",
                 median(reading))  # fmt: skip
            client.close()
        finally:
            for child in (scheduler, hub):
                if child is not None:
                    child.terminate()
                    try:
                        child.wait(10)
                    except subprocess.TimeoutExpired:
                        child.kill()
