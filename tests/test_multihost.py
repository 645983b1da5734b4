"""Workers on other hosts: network namespaces on this machine, TCP with CURVE to the hub.

The hub and the orchestrator run here, bound to an address on this side of the veth pairs;
each worker runs inside its own namespace and reaches them only over TCP. The artifact folder
is shared (the same file system), as it would be on a network mount.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.api.system import System, stop_process
from bus.client import Client
from bus.curve import Curve
from bus.events import ExecutionRequested
from scripts import netns
from stages.sample import SCHEMA, generate
from tests.conftest import run_porch
from tests.test_security import endpoints_of

REASON = netns.available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no namespaces here: {REASON}")


@pytest.fixture
def cluster(tmp_path):
    """A hub and orchestrator here, one worker in each of two namespaces; all removed after."""
    keys = tmp_path / "keys"
    assert run_porch("keys", "generate", str(keys)).returncode == 0
    procs: list[subprocess.Popen[bytes]] = []
    system = None
    with netns.hosts(2) as hosts:
        config = netns.tcp_config(tmp_path / "porch.toml", keys, host=hosts.hub_ip)
        system = System(
            data_dir=tmp_path / "porch", workers=0, config_file=config, log=subprocess.DEVNULL
        )
        try:
            system.start()
            for index in range(2):
                worker = [
                    sys.executable, "-m", "actors.cli", "worker", "--name", f"far-{index}",
                    "--config", str(config), "--data-dir", str(tmp_path / f"host-{index}"),
                ]  # fmt: skip
                log = (tmp_path / f"far-{index}.stderr").open("wb")
                procs.append(
                    subprocess.Popen([*hosts.prefix(index), *worker], stderr=log, stdout=log)
                )
                log.close()
            with Client(endpoints_of(config, Curve(keys))) as client:
                yield client, tmp_path
        finally:
            for proc in procs:
                stop_process(proc, 10)
            system.stop()


def test_workers_in_other_namespaces_run_a_parallel_pipeline_over_curve(cluster):
    client, tmp_path = cluster
    sample = tmp_path / "history.parquet"
    frame = pd.concat(list(generate(4000, seed=5)), ignore_index=True)
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    pq.write_table(table, sample, row_group_size=1000)
    client.append(
        ExecutionRequested(
            execution_id="far",
            stages=["data_cleaning", "feature_engineering"],
            input_data=str(sample),
            mode="parallel",
        )
    )
    deadline = time.monotonic() + 90
    terminal = None
    with client.subscribe(1, types=["ExecutionCompleted", "ExecutionFailed"]) as sub:
        while terminal is None and time.monotonic() < deadline:
            for record in sub.receive(500):
                terminal = record.fields()
    assert terminal is not None, "the execution did not end in 90 s"
    assert terminal["type"] == "ExecutionCompleted", terminal
    done = [r.fields() for r in client.read(1, types=["StageCompleted"])]
    workers = {f["src"].split("@")[0] for f in done}
    assert workers == {"far-0", "far-1"}, workers  # both hosts ran tasks, nothing else did
    started = [r.fields() for r in client.read(1, types=["WorkerStarted"])]
    assert {f["worker"] for f in started} == {"far-0", "far-1"}
