"""`scripts/bench multihost`: tasks/s with 1, 2 and 4 workers on other hosts (namespaces).

The hub and orchestrator run here, bound to an address on this side of the veth pairs, with
CURVE; each worker runs in a network namespace of its own and reaches them over TCP (see
`scripts/netns.py`). Each task is a ``busy`` stage that takes 20 ms of CPU time, so the figure
shows how work spreads over workers, not the orchestrator's own cost per task (that is
``orchestrator.noop_tasks``). The baseline is the 1-worker rate; on this 2-core machine more
than 2 workers cannot add CPU. Where namespaces cannot be made, it says why and measures nothing.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from actors.api.settings import network
from actors.api.system import System, stop_process
from bus.client import Client
from bus.events import ExecutionRequested
from scripts import netns
from scripts.benchmarks.common import line, workers_ready
from stages.registry import stage

BUSY = "busy=scripts.benchmarks.multihost:busy"
BUSY_S = 0.02


@stage("busy", partitioning="row_local")
def busy(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    """Compute for 20 ms of CPU time (not wall time: on a busy machine it takes longer), then
    hand the rows back."""
    until = time.process_time() + BUSY_S
    while time.process_time() < until:
        pass
    return df, {}


def rate(root: Path, workers: int, tasks: int) -> float:
    root.mkdir(parents=True)
    keys = root / "keys"
    subprocess.run(
        [sys.executable, "-m", "actors.cli", "keys", "generate", str(keys)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    many = root / "many.parquet"
    pq.write_table(pa.table({"x": list(range(tasks))}), many, row_group_size=1)
    procs: list[subprocess.Popen[bytes]] = []
    with netns.hosts(workers) as hosts:
        config = netns.tcp_config(root / "porch.toml", keys, hosts.hub_ip)
        system = System(
            data_dir=root / "porch",
            workers=0,
            stages=[BUSY],
            extra=["--workers", str(workers)],
            config_file=config,
            log=subprocess.DEVNULL,
        )
        try:
            system.start()
            for index in range(workers):
                argv = [
                    *hosts.prefix(index), sys.executable, "-m", "actors.cli", "worker",
                    "--name", f"far-{index}", "--stage", BUSY, "--config", str(config),
                    "--data-dir", str(root / f"host-{index}"),
                ]  # fmt: skip
                out = subprocess.DEVNULL
                procs.append(subprocess.Popen(argv, stdout=out, stderr=out))
            endpoints, _ = network(data_dir=None, config_file=str(config), environ={})
            with Client(endpoints) as client:
                workers_ready(client, workers)
                client.append(
                    ExecutionRequested(
                        execution_id="many",
                        stages=["busy"],
                        input_data=str(many),
                        mode="parallel",
                        partitions=tasks,
                    )
                )
                return _finish(client, "many")
        finally:
            for proc in procs:
                stop_process(proc, 10)
            system.stop()


def _finish(client: Client, eid: str, timeout_s: float = 600) -> float:
    deadline = time.monotonic() + timeout_s
    types = ["StageDispatched", "StageCompleted", "ExecutionCompleted", "ExecutionFailed"]
    first = last = None
    with client.subscribe(1, types=types) as sub:
        while time.monotonic() < deadline:
            for record in sub.receive(500):
                fields = record.fields()
                if fields["type"] == "StageDispatched" and first is None:
                    first = fields["ts"]
                elif fields["type"] == "StageCompleted" and fields.get("phase", "run") == "run":
                    last = fields["ts"]
                elif fields["type"] == "ExecutionFailed":
                    raise RuntimeError(f"bench execution {eid} failed: {fields.get('error')}")
                elif fields["type"] == "ExecutionCompleted":
                    count = sum(
                        1
                        for r in client.read(1, types=["StageCompleted"])
                        if r.fields().get("phase", "run") == "run"
                    )
                    if first is None or last is None:
                        raise RuntimeError(f"bench execution {eid} ran no task")
                    return count / (last - first)
    raise RuntimeError(f"bench execution {eid} did not finish in {timeout_s} s")


def run(quick: bool) -> None:
    reason = netns.available()
    if reason is not None:
        print(f"bench multihost: skipped, {reason}", flush=True)
        return
    tasks = 100 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="porch-bench-") as tmp:
        rates = {n: rate(Path(tmp) / f"w{n}", n, tasks) for n in (1, 2, 4)}
    for workers, value in rates.items():
        line(f"multihost.busy_tasks_{workers}_workers", value, "tasks/s", rates[1])
