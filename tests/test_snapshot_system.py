"""Snapshots in a running system: the orchestrator, scheduler and monitor write them as they fold,
start from them (folding only the tail), pass over damaged ones, and queries answer from them
with or without a running system."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.scheduler.specs import normalize
from bus.events import ExecutionRequested, ScheduleAdded
from store.snapshots import SnapshotStore
from tests.conftest import run_porch
from tests.slowstages import STAGES
from tests.watching import Logged

NAMES = ("orchestrator", "scheduler", "monitor")


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), path)
    return path


class Snapshotted(Logged):
    """A system that writes a snapshot after every 5 events (or half a second)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, "[snapshots]\nevery_events = 5\nevery_s = 0.5\n", workers=1,
                         stages=STAGES, scheduler=True, monitor=True,
                         monitor_args=["--sampling-interval", "0.2"])  # fmt: skip

    def run(self, tiny: Path, eid: str) -> dict:
        self.client.append(
            ExecutionRequested(execution_id=eid, stages=["noop"], input_data=str(tiny))
        )
        return self.wait(
            lambda s: any(e["type"] == "ExecutionCompleted" and e["execution_id"] == eid for e in s)
        )[-1]


@pytest.fixture
def started(tmp_path):
    systems: list[Snapshotted] = []

    def start() -> Snapshotted:
        system = Snapshotted(tmp_path)
        systems.append(system)
        return system

    yield start
    for system in systems:
        system.stop()


def wait_for_snapshots(store: SnapshotStore, past: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(any(i.seq >= past for i in store.list(n)) for n in NAMES):
            return
        time.sleep(0.1)
    raise AssertionError(f"no snapshots past seq {past}: {[(n, store.list(n)) for n in NAMES]}")


def history(data_dir: Path) -> list[dict]:
    result = run_porch("history", "--json", "--limit", "50", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_actors_write_snapshots_start_from_them_and_queries_answer_without_a_system(
    started, tiny, tmp_path
):
    data_dir = tmp_path / "porch"
    store = SnapshotStore(data_dir / "snapshots")
    # given a system that ran three executions and a schedule, and wrote snapshots past them
    first = started()
    first.client.append(ScheduleAdded(schedule_id="nightly", config=normalize(
        {"schedule_id": "nightly", "schedule_type": "cron", "schedule_expression": "0 2 * * *",
         "execution_config": {"input_data": str(tiny), "stages": ["noop"]}}, now=time.time())))  # fmt: skip
    last = 0
    for i in range(3):
        last = first.run(tiny, f"before-{i}")["seq"]
    wait_for_snapshots(store, last)
    first.stop()
    # when no system runs, the queries answer from the snapshots and the log's files
    assert [v["execution_id"] for v in history(data_dir)] == ["before-2", "before-1", "before-0"]
    status = run_porch("status", "before-1", "--json", data_dir=data_dir)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "completed"
    schedules = run_porch("schedule", "list", "--json", data_dir=data_dir)
    assert schedules.returncode == 0, schedules.stderr
    assert [row["schedule_id"] for row in json.loads(schedules.stdout)] == ["nightly"]
    # and a restarted system starts every actor from its snapshot and goes on
    second = started()
    second.run(tiny, "after")
    text = second.text()
    for name in NAMES:
        assert f"{name}: starting from snapshot at seq" in text, text[-3000:]
    assert [v["execution_id"] for v in history(data_dir)][:2] == ["after", "before-2"]


def test_damaged_and_outdated_snapshots_are_passed_over_and_deleting_them_loses_nothing(
    started, tiny, tmp_path
):
    data_dir = tmp_path / "porch"
    store = SnapshotStore(data_dir / "snapshots")
    first = started()
    last = 0
    for i in range(2):
        last = first.run(tiny, f"run-{i}")["seq"]
    wait_for_snapshots(store, last)
    first.stop()
    # given the newest orchestrator snapshot damaged, and the monitor's of another fold version
    (newest, *_) = reversed(store.list("orchestrator"))
    raw = bytearray(newest.path.read_bytes())
    raw[-3] ^= 0xFF
    newest.path.write_bytes(bytes(raw))
    for info in store.list("monitor"):
        snap_bytes = info.path.read_bytes().replace(b"monitor1+", b"monitor0+")
        info.path.write_bytes(snap_bytes)
    # when the system starts again
    second = started()
    second.run(tiny, "run-2")
    text = second.text()
    # then each is passed over with one line and the state is whole
    assert f"snapshot {newest.path} ignored: checksum mismatch" in text
    assert "ignored: written by fold version monitor0+" in text
    second.stop()
    assert {v["execution_id"]: v["status"] for v in history(data_dir)} == {
        "run-0": "completed", "run-1": "completed", "run-2": "completed"}  # fmt: skip
    # and with every snapshot deleted, the log alone gives the same answers
    assert store.remove_all() > 0
    assert {v["execution_id"]: v["status"] for v in history(data_dir)} == {
        "run-0": "completed", "run-1": "completed", "run-2": "completed"}  # fmt: skip
