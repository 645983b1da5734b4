"""The durable floor of a chain step: an acknowledged append after the hub sat idle.

A chain's runner appends a completion and waits for the hub's acknowledgement (written and
synced), runs the next task (the hub idles meanwhile), and appends again. This measures that
round trip alone: appends one at a time from a client that keeps its core busy for ``gap_s``
between them (a task), to a real hub with the default fsync policy, beside the same hub with
``--fsync never`` (the same path without the sync). What the sync adds is what no orchestration
can take off a durable chain.
"""

from __future__ import annotations

import time
from pathlib import Path

from bus.client import Client
from bus.events import MetricRecorded
from scripts.benchmarks.common import percentile
from scripts.benchmarks.hub import start_hub

GAP_S = 0.0005  # about what a no-op task costs a runner


def round_trips(data_dir: Path, fsync: str, count: int, gap_s: float = GAP_S) -> list[float]:
    """Acknowledged appends (ms), one at a time, ``gap_s`` of busy time between them."""
    hub = start_hub(data_dir, False, "--fsync", fsync)
    try:
        times = []
        with Client.local(data_dir) as client:
            for _ in range(count + count // 5):  # the first fifth warms up
                event = MetricRecorded(name="bench", value=1.0)
                start = time.perf_counter()
                client.append(event)
                times.append((time.perf_counter() - start) * 1000)
                _busy(gap_s)
        return times[count // 5 :]
    finally:
        hub.stop()


def _busy(seconds: float) -> None:
    """Keep this core busy for ``seconds``, as a runner running a task does (a sleep would let
    the appender's core idle, which is not what a chain's runner does)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        continue


def p50_pair(root: Path, count: int) -> tuple[float, float]:
    """The p50 round trip with the default fsync and with none, measured one after the other."""
    synced = round_trips(root / "synced", "batch", count)
    unsynced = round_trips(root / "unsynced", "never", count)
    return percentile(synced, 50), percentile(unsynced, 50)
