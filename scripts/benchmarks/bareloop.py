"""The bare loops the orchestrator benchmark compares with: the same design, nothing else.

A hub (durable log on) runs; a loop PUSHes a task to bare workers (PULL), each worker sends a
completion event to the hub's ingest, and the loop sees it durable over SUB before it pushes
the next (chain) or keeps a window of tasks in flight (throughput).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import zmq

from bus.client import Client
from bus.events import MetricRecorded
from bus.schema import encode
from scripts.benchmarks.common import ROOT
from tests.conftest import HubProcess


def worker(data_dir: str, tasks_addr: str) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(tasks_addr)
    client = Client.local(data_dir, context=ctx)
    while True:
        payload = pull.recv()
        if payload == b"stop":
            break
        client.publish(encode(MetricRecorded(name="done", value=float(payload.decode()))))
    client.close()


def main() -> None:
    kind = sys.argv[1]
    if kind == "worker":
        worker(sys.argv[2], sys.argv[3])
        return
    root, count = Path(sys.argv[2]), int(sys.argv[3])
    root.mkdir(parents=True, exist_ok=True)
    hub = HubProcess(root).start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    addr = f"ipc://{root}/tasks.sock"
    push.bind(addr)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "scripts.benchmarks.bareloop", "worker", str(root), addr],
            cwd=ROOT,
        )
        for _ in range(1 if kind == "chain" else 2)
    ]
    client = Client.local(root, context=ctx)
    sub = client.subscribe(types=["MetricRecorded"])
    time.sleep(0.5)
    try:
        if kind == "chain":
            gaps, last = [], time.monotonic()
            for i in range(count):
                push.send(str(i).encode())
                while not sub.receive(1000):
                    pass
                now = time.monotonic()
                gaps.append((now - last) * 1000)
                last = now
            print(" ".join(f"{g:.4f}" for g in gaps[5:]))
        else:
            sent = done = 0
            start = time.monotonic()
            while done < count:
                while sent < count and sent - done < 256:
                    push.send(str(sent).encode())
                    sent += 1
                done += len(sub.receive(1000))
            print(f"{count / (time.monotonic() - start):.1f}")
    finally:
        for w in workers:
            w.terminate()
            w.wait(10)
        sub.close()
        client.close()
        hub.stop()


if __name__ == "__main__":
    main()
