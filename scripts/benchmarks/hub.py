"""Hub figures: durable ingest, publish-to-receive latency, replay + fold; each beside its bare loop."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import msgpack

from bus.client import Client, hub_running
from bus.wire import unpack_map
from scripts.benchmarks.common import Child, line, median, percentile
from store.log import EventLog
from store.projections.summary import SummaryState, evolve
from store.reader import LogReader
from store.segment import HEADER, HEADER_SIZE, list_segments


def start_hub(data_dir: Path, bare: bool, *flags: str) -> Child:
    """A hub process on ``data_dir`` (porch's, with ``flags``, or the bare loop), serving."""
    if bare:
        child = Child.role("bare-hub", str(data_dir), "batch")
        child.read()
        return child
    args = [sys.executable, "-m", "actors.cli", "hub", "--data-dir", str(data_dir), *flags]
    child = Child(args)
    deadline = time.monotonic() + 20
    while not hub_running(data_dir):
        if time.monotonic() > deadline or child.proc.poll() is not None:
            raise RuntimeError("hub did not start")
        time.sleep(0.02)
    with Client.local(data_dir) as client:
        client.head()
    return child


Around = Callable[[Path], AbstractContextManager[object]]


def _nothing(data_dir: Path) -> AbstractContextManager[object]:
    return nullcontext()


def ingest_once(count: int, subscribers: int, bare: bool, around: Around = _nothing) -> float:
    """Events/s from the first send to the last subscriber holding every event.

    ``around`` is entered once the hub runs and left after the timed part (the dashboard
    group runs a dashboard and browsers in it)."""
    with tempfile.TemporaryDirectory(prefix="porch-bench-") as tmp:
        data_dir = Path(tmp)
        hub = start_hub(data_dir, bare)
        try:
            with around(data_dir):
                return _ingest(tmp, count, subscribers, bare)
        finally:
            hub.stop()


def _ingest(tmp: str, count: int, subscribers: int, bare: bool) -> float:
    subs = [
        Child.role("subscribe-bare" if bare else "subscribe", tmp, str(count), "-")
        for _ in range(subscribers)
    ]
    producer = Child.role("produce", tmp, str(count), "p", stdin=True)
    try:
        for sub in subs:
            sub.read()
        producer.read()
        producer.go()
        start = producer.read()["start_ns"]
        end = max(sub.read()["end_ns"] for sub in subs)
        return count / ((end - start) / 1e9)
    finally:
        for child in (producer, *subs):
            child.stop()


def latency_once(count: int, rate: float, bare: bool, around: Around = _nothing) -> list[float]:
    """Publish-to-receive latencies in ms at a paced rate."""
    with tempfile.TemporaryDirectory(prefix="porch-bench-") as tmp:
        data_dir = Path(tmp)
        hub = start_hub(data_dir, bare)
        try:
            with around(data_dir):
                return _latency(tmp, count, rate, bare)
        finally:
            hub.stop()


def _latency(tmp: str, count: int, rate: float, bare: bool) -> list[float]:
    sub = Child.role("subscribe-bare" if bare else "subscribe", tmp, str(count), "latency")
    producer = Child.role("produce-paced", tmp, str(count), str(rate), "l", stdin=True)
    try:
        sub.read()
        producer.read()
        producer.go()
        result = sub.read()
        return [ns / 1e6 for ns in result["lat_ns"]]
    finally:
        for child in (producer, sub):
            child.stop()


def write_replay_log(directory: Path, count: int) -> None:
    kinds = [
        {"type": "StageProgress", "execution_id": "e", "stage": "s", "worker": "w", "fraction": 0.5, "partition": 0, "attempt": 1, "message": ""},
        {"type": "WorkerHeartbeat", "worker": "w", "host": "h", "cpu_percent": 5.0, "memory_percent": 3.0, "rss_bytes": 1 << 20},
        {"type": "StageCompleted", "execution_id": "e", "stage": "s", "worker": "w", "artifact": "/x", "rows_in": 10, "rows_out": 9, "bytes": 100, "sha256": "ab", "duration_s": 0.1, "partition": 0, "attempt": 1, "report": {}},
        {"type": "ExecutionCompleted", "execution_id": "e", "records_processed": 10, "duration_s": 1.0, "outputs": {}},
    ]  # fmt: skip
    with EventLog(directory, fsync="never") as log:
        batch = []
        for i in range(count):
            obj = dict(kinds[i % 4], v=1, id=f"r-{i:x}", ts=1.7e9 + i, src="bench@h:1")
            if obj["type"] == "ExecutionCompleted":
                obj["execution_id"] = f"e{i}"
            batch.append(msgpack.packb(obj))
            if len(batch) == 10_000:
                log.append(batch)
                batch = []
        log.append(batch)


def replay_porch(directory: Path) -> tuple[float, int]:
    start = time.perf_counter()
    state = SummaryState()
    for seq, payload in LogReader(directory).read():
        evolve(seq, unpack_map(payload), state)
    return time.perf_counter() - start, state.events


def replay_bare(directory: Path) -> tuple[float, int]:
    start = time.perf_counter()
    count = 0
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    unpackb = msgpack.unpackb
    for path in list_segments(directory):
        data = memoryview(path.read_bytes())
        offset = 0
        size = len(data)
        while offset < size:
            length, crc, _ = unpack(data, offset)
            stop = offset + HEADER_SIZE + length
            if crc32(data[offset + 8 : stop]) != crc:
                raise ValueError("crc")
            unpackb(data[offset + HEADER_SIZE : stop])
            count += 1
            offset = stop
    return time.perf_counter() - start, count


def run(quick: bool) -> None:
    reps = 1 if quick else 3
    count = 30_000 if quick else 300_000
    porch, bare = [], []
    for _ in range(reps):
        bare.append(ingest_once(count, 1, bare=True))
        porch.append(ingest_once(count, 1, bare=False))
    line("hub.ingest_durable", median(porch), "events/s", median(bare))

    porch3, bare3 = [], []
    for _ in range(reps):
        bare3.append(ingest_once(count, 3, bare=True))
        porch3.append(ingest_once(count, 3, bare=False))
    line("hub.ingest_durable_3subs", median(porch3), "events/s", median(bare3))

    probes = 2_000 if quick else 15_000
    lat_porch, lat_bare = [], []
    for _ in range(reps):
        lat_bare.append(latency_once(probes, 5000, bare=True))
        lat_porch.append(latency_once(probes, 5000, bare=False))
    p50 = median([percentile(x, 50) for x in lat_porch])
    p50_bare = median([percentile(x, 50) for x in lat_bare])
    p99 = median([percentile(x, 99) for x in lat_porch])
    p99_bare = median([percentile(x, 99) for x in lat_bare])
    line("hub.latency_p50_at_5k", p50, "ms", p50_bare)
    line("hub.latency_p99_at_5k", p99, "ms", p99_bare)

    events = 100_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="porch-bench-") as tmp:
        directory = Path(tmp)
        write_replay_log(directory, events)
        times_porch, times_bare = [], []
        for _ in range(reps):
            elapsed, n = replay_bare(directory)
            times_bare.append(n / elapsed)
            elapsed, n = replay_porch(directory)
            assert n == events, n
            times_porch.append(n / elapsed)
        line("hub.replay_fold", median(times_porch), "events/s", median(times_bare))
    os.environ.pop("PORCH_DATA_DIR", None)
