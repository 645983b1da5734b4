"""A whole porch system with its artifacts on an S3 store (a real SeaweedFS server): every mode,
resume, a worker killed mid-upload, the store stopped mid-run and started again."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest

from actors.api.system import System
from bus.client import Client
from bus.events import ExecutionRequested
from stages.pipeline import build, run
from store.projections import executions as folds
from tests.conftest import fold_until
from tests.slowstages import STAGES
from tests.stagedata import write_sample

TERMINAL = ("completed", "failed", "cancelled")
DEFAULT = ["data_cleaning", "feature_engineering", "data_aggregation", "data_validation"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """6,000 rows of query history in 4 row groups, so parallel runs have partitions."""
    path = tmp_path_factory.mktemp("input") / "history.parquet"
    return write_sample(path, 6000, seed=11, row_group_size=1500)


class OnS3:
    """A local system whose checkpoint dir is ``s3://BUCKET/ck``; the actors find the server
    through the usual AWS variables."""

    def __init__(self, tmp_path: Path, server, monkeypatch, lease_ms: int = 10_000) -> None:
        for name, value in server.environ().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("PORCH_S3_CONNECT_TIMEOUT_S", "1")
        monkeypatch.setenv("PORCH_S3_REQUEST_TIMEOUT_S", "5")
        self.server = server
        self.bucket = server.bucket()
        self.data_dir = tmp_path / "porch"
        self.system = System(
            data_dir=self.data_dir,
            workers=2,
            checkpoint_dir=f"s3://{self.bucket}/ck",
            stages=STAGES,
            extra=["--lease-ms", str(lease_ms)],
            log=(tmp_path / "system.log").open("ab"),
        )
        self.system.start()
        self.client = Client.local(self.data_dir)
        self.folded = folds.ExecutionsState()
        self.sub = self.client.subscribe(1, types=folds.TYPES)

    def request(self, input_path: Path, stages: list[str], **fields) -> str:
        eid = fields.pop("execution_id", f"t-{time.monotonic_ns()}")
        self.client.append(
            ExecutionRequested(
                execution_id=eid, stages=stages, input_data=str(input_path), **fields
            )
        )
        return eid

    def wait(self, eid: str, until=lambda ex: ex.status in TERMINAL, timeout: float = 60):
        return fold_until(self.sub, self.folded, eid, until, timeout)

    def read_output(self, url: str) -> pd.DataFrame:
        assert url.startswith(f"s3://{self.bucket}/ck/")
        return pq.read_table(
            url.removeprefix("s3://"), filesystem=self.server.filesystem()
        ).to_pandas()

    def object_sha256(self, url: str) -> str:
        with self.server.filesystem().open_input_stream(url.removeprefix("s3://")) as f:
            return hashlib.sha256(f.read()).hexdigest()

    def stop(self) -> None:
        self.sub.close()
        self.client.close()
        self.system.stop()


@pytest.fixture
def on_s3(tmp_path, s3server, monkeypatch):
    running = OnS3(tmp_path, s3server, monkeypatch)
    yield running
    running.stop()


@pytest.fixture
def on_s3_short_lease(tmp_path, s3server, monkeypatch):
    running = OnS3(tmp_path, s3server, monkeypatch, lease_ms=1500)
    yield running
    running.stop()


def test_every_mode_on_the_store_gives_the_local_output(on_s3, sample):
    # given the default pipeline, run directly in this process
    expected = run(build(DEFAULT), pd.read_parquet(sample))[0]["data_validation"]
    for mode in ("sequential", "parallel", "hybrid"):
        # when porch runs it in each mode with its artifacts on the store
        eid = on_s3.request(sample, DEFAULT, mode=mode, partitions=3 if mode != "sequential" else 0)
        ex = on_s3.wait(eid)
        assert ex.status == "completed", ex.error
        # then the output is an object of the bucket, hashed as recorded, and the direct result
        out = ex.outputs["data_validation"]
        assert out["path"] == f"s3://{on_s3.bucket}/ck/{eid}/output/data_validation.parquet"
        collect = ex.tasks[("data_validation", "collect", 0)]
        assert collect.artifact == out["path"]
        assert on_s3.object_sha256(out["path"]) == collect.sha256
        got = on_s3.read_output(out["path"])
        pd.testing.assert_frame_equal(got, expected, check_dtype=False, obj=mode)
        # and every artifact a task recorded is an object of the bucket, none on local disk
        for task in ex.tasks.values():
            if task.artifact and not task.artifact.startswith("slice:"):
                assert task.artifact.startswith(f"s3://{on_s3.bucket}/ck/{eid}/"), task.artifact
    assert not (on_s3.data_dir / "checkpoints").exists()
    keys = on_s3.server.keys(on_s3.bucket)
    assert not [k for k in keys if k.endswith(".tmp")]


def test_resume_from_a_checkpoint_on_the_store_reuses_verified_objects_only(on_s3, sample):
    first = on_s3.wait(on_s3.request(sample, DEFAULT, execution_id="first"))
    assert first.status == "completed", first.error
    # a second execution resuming from the first reuses every stage, copied on the store
    again = on_s3.wait(on_s3.request(sample, DEFAULT, execution_id="again", resume_from="first"))
    assert again.status == "completed", again.error
    assert all(t.reused for t in again.tasks.values() if t.key[1] != "collect")
    # an object changed on the store is recomputed, never trusted
    cleaned = first.tasks[("data_cleaning", "run", 0)].artifact
    with on_s3.server.filesystem().open_output_stream(cleaned.removeprefix("s3://")) as out:
        out.write(b"tampered")
    third = on_s3.wait(on_s3.request(sample, DEFAULT, execution_id="third", resume_from="first"))
    assert third.status == "completed", third.error
    assert not third.tasks[("data_cleaning", "run", 0)].reused
    assert third.tasks[("feature_engineering", "run", 0)].reused
    a = on_s3.read_output(first.outputs["data_validation"]["path"])
    pd.testing.assert_frame_equal(on_s3.read_output(third.outputs["data_validation"]["path"]), a)


def _wait_for_upload(pid: int, port: int, timeout_s: float = 30) -> None:
    """Until the process ``pid`` (or a child) holds a TCP connection to ``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc = psutil.Process(pid)
        for p in (proc, *proc.children(recursive=True)):
            try:
                if any(c.raddr and c.raddr.port == port for c in p.net_connections("tcp")):
                    return
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never connected to the store's port {port}")


def _held_before_the_store(porch, sample, tmp_path, max_attempts: int):
    """An execution of a stage that waits for a file (it writes nothing to the store) then
    data_cleaning, with the first one running: the cleaning output plain pandas gives, the
    execution's id, and the file that lets the first stage go on."""
    expected = run(build(["data_cleaning"]), pd.read_parquet(sample))[0]["data_cleaning"]
    release = tmp_path / "release"
    eid = porch.request(
        sample, ["chatty", "data_cleaning"], config={"chatty": {"wait_for": str(release)}},
        max_attempts=max_attempts,
    )  # fmt: skip
    porch.wait(eid, until=lambda e: e.tasks.get(("chatty", "run", 0)) is not None
               and e.tasks[("chatty", "run", 0)].status == "running")  # fmt: skip
    return expected, eid, release


def test_a_worker_killed_mid_upload_leaves_no_accepted_half_object(
    on_s3_short_lease, sample, tmp_path
):
    porch = on_s3_short_lease
    # given a pipeline whose second stage is the first to write to the store, and the store
    # frozen (it accepts connections and answers nothing) while the first stage waits
    expected, eid, release = _held_before_the_store(porch, sample, tmp_path, max_attempts=5)
    porch.server.freeze()
    try:
        release.touch()
        ex = porch.wait(
            eid,
            until=lambda e: (
                (t := e.tasks.get(("data_cleaning", "run", 0))) is not None
                and t.status == "running"
            ),
        )
        worker = ex.tasks[("data_cleaning", "run", 0)].worker
        pid = porch.system.pids()[worker]
        # when the worker running the stage is killed while its upload hangs
        _wait_for_upload(pid, porch.server.ports["s3.port"])
        for p in psutil.Process(pid).children(recursive=True):
            p.kill()
        os.kill(pid, signal.SIGKILL)
    finally:
        porch.server.thaw()
    # then the task runs again elsewhere and exactly that attempt's object is accepted
    done = porch.wait(eid, timeout=90)
    assert done.status == "completed", done.error
    task = done.tasks[("data_cleaning", "run", 0)]
    assert task.attempt >= 2
    assert porch.object_sha256(task.artifact) == task.sha256
    got = porch.read_output(done.outputs["data_cleaning"]["path"])
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_the_store_stopped_mid_run_fails_tasks_retryably_then_the_run_completes(
    on_s3, sample, tmp_path
):
    expected, eid, release = _held_before_the_store(on_s3, sample, tmp_path, max_attempts=1000)
    # given the store stopped while the first stage runs
    on_s3.server.stop(timeout_s=0.1)
    try:
        release.touch()
        # when the next stage cannot write its output, then it fails in one retryable line
        failed = on_s3.wait(
            eid,
            until=lambda e: (
                (t := e.tasks.get(("data_cleaning", "run", 0))) is not None
                and t.attempt >= 1
                and t.status == "failed"
            ),
        )
        task = failed.tasks[("data_cleaning", "run", 0)]
        assert "object store http://127.0.0.1:" in task.error, task.error
        assert "\n" not in task.error
        assert failed.status == "running"
    finally:
        on_s3.server.start()
    # and once the store is back the execution completes with the right output
    done = on_s3.wait(eid, timeout=90)
    assert done.status == "completed", done.error
    got = on_s3.read_output(done.outputs["data_cleaning"]["path"])
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_no_credential_reaches_the_log(on_s3, sample, s3server):
    eid = on_s3.request(sample, ["data_cleaning"])
    assert on_s3.wait(eid).status == "completed"
    # then nothing the hub logged holds a key
    log = b"".join(p.read_bytes() for p in (on_s3.data_dir / "log").glob("*"))
    for secret in (
        s3server.environ()["AWS_SECRET_ACCESS_KEY"],
        s3server.environ()["AWS_ACCESS_KEY_ID"],
    ):
        assert secret.encode() not in log
    status = subprocess.run(
        [sys.executable, "-m", "actors.cli", "status", eid, "--data-dir", str(on_s3.data_dir)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert s3server.environ()["AWS_SECRET_ACCESS_KEY"] not in status.stdout
    assert f"s3://{on_s3.bucket}/ck/{eid}" in status.stdout
    logs = subprocess.run(
        [sys.executable, "-m", "actors.cli", "logs", eid, "--data-dir", str(on_s3.data_dir)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert logs.returncode == 0, logs.stderr
    assert "keeps its artifacts on an object store" in logs.stderr


def test_gc_and_retention_remove_objects_on_the_store(on_s3, sample):
    # given two finished executions on the store, one without checkpoints
    kept = on_s3.wait(on_s3.request(sample, ["data_cleaning", "feature_engineering"]))
    assert kept.status == "completed", kept.error
    bare = on_s3.wait(
        on_s3.request(sample, ["data_cleaning", "feature_engineering"], save_checkpoints=False)
    )
    assert bare.status == "completed", bare.error
    root = f"{on_s3.bucket}/ck"
    # then the orchestrator removes the intermediates of the one without checkpoints by itself
    # (it has handled that ExecutionCompleted once it has started a later execution)
    later = on_s3.request(sample, ["data_cleaning"])
    on_s3.wait(later, until=lambda e: e.status != "requested")
    deadline = time.monotonic() + 30
    while any(
        k.startswith(f"{root}/{bare.execution_id}/data_cleaning/") for k in on_s3.server.keys(root)
    ):
        assert time.monotonic() < deadline, "the orchestrator never removed the intermediates"
        time.sleep(0.05)
    assert on_s3.wait(later).status == "completed"
    assert f"{root}/{bare.execution_id}/output/feature_engineering.parquet" in on_s3.server.keys(
        root
    )
    # when `porch gc` keeps nothing but the outputs
    gc = subprocess.run(
        [sys.executable, "-m", "actors.cli", "gc", "--keep-last", "0", "--keep-days", "0",
         "--yes", "--data-dir", str(on_s3.data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # then every intermediate object is gone from the store and every output stays
    assert gc.returncode == 0, gc.stderr
    keys = on_s3.server.keys(root)
    for ex in (kept, bare):
        assert not [k for k in keys if k.startswith(f"{root}/{ex.execution_id}/data_cleaning/")]
        assert f"{root}/{ex.execution_id}/output/feature_engineering.parquet" in keys
    assert "removed the artifacts of" in gc.stdout


def test_an_input_on_the_store_runs_as_the_same_file_would(on_s3, sample):
    # given the input as an object of the bucket, nothing of it on the workers' disks
    key = f"{on_s3.bucket}/in/history.parquet"
    with on_s3.server.filesystem().open_output_stream(key) as out:
        out.write(sample.read_bytes())
    stages = ["noop", "data_cleaning"]
    expected = run(build(["data_cleaning"]), pd.read_parquet(sample))[0]["data_cleaning"]
    # when a pipeline whose first stage hands its rows back runs over it, in parallel
    eid = on_s3.request(f"s3://{key}", stages, mode="parallel", partitions=2)
    ex = on_s3.wait(eid)
    # then the first stage's artifacts are row groups of the object, and the output is right
    assert ex.status == "completed", ex.error
    assert ex.plan.input["path"] == f"s3://{key}"
    noop = [t for t in ex.tasks.values() if t.key[0] == "noop"]
    assert noop
    assert all(t.artifact.startswith("slice:") and t.artifact.endswith(f"s3://{key}") for t in noop)
    got = on_s3.read_output(ex.outputs["data_cleaning"]["path"])
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    # and an object that is not there is refused in one line
    gone = on_s3.wait(on_s3.request(f"s3://{on_s3.bucket}/in/missing.parquet", stages))
    assert gone.status == "failed"
    assert gone.error == f"refused: input 's3://{on_s3.bucket}/in/missing.parquet' does not exist"


def test_an_object_deleted_from_the_store_mid_run_is_recomputed(on_s3, sample, tmp_path):
    expected = run(build(["data_cleaning", "feature_engineering"]), pd.read_parquet(sample))[0]
    gate = tmp_path / "open"
    steps = [
        {"id": "clean", "stage": "data_cleaning"},
        {"id": "gate", "stage": "chatty", "after": ["clean"], "config": {"wait_for": str(gate)}},
        {"id": "features", "stage": "feature_engineering", "after": ["gate"]},
    ]
    eid = on_s3.request(sample, [], steps=steps)
    ex = on_s3.wait(
        eid, until=lambda e: (t := e.tasks.get(("gate", "run", 0))) is not None
        and t.status == "running",
    )  # fmt: skip
    # given the cleaned frame deleted from the store while the next step waits
    cleaned = ex.tasks[("clean", "run", 0)].artifact
    on_s3.server.filesystem().delete_file(cleaned.removeprefix("s3://"))
    gate.touch()
    # then the execution recomputes it on its own and completes with the direct result
    done = on_s3.wait(eid, timeout=90)
    assert done.status == "completed", done.error
    assert done.tasks[("clean", "run", 0)].attempt >= 2
    got = on_s3.read_output(done.outputs["features"]["path"])
    pd.testing.assert_frame_equal(got, expected["feature_engineering"], check_dtype=False)
