"""A whole porch system (hub, orchestrator, workers as processes) running pipelines end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.api.system import System
from actors.read.executions import fold_log
from bus.client import Client
from bus.events import CancelRequested, ExecutionRequested, PauseRequested, ResumeRequested
from stages.pipeline import build, run
from store import artifacts
from store.projections import executions as folds
from tests.conftest import fold_until, run_porch
from tests.slowstages import STAGES
from tests.stagedata import write_sample

TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """6,000 rows of query history in 4 row groups, so parallel runs have partitions."""
    path = tmp_path_factory.mktemp("input") / "history.parquet"
    return write_sample(path, 6000, seed=11, row_group_size=1500)


class Running:
    def __init__(self, tmp_path: Path, workers: int = 2, lease_ms: int = 10_000) -> None:
        self.data_dir = tmp_path / "porch"
        self.system = System(
            data_dir=self.data_dir,
            workers=workers,
            stages=STAGES,
            extra=["--lease-ms", str(lease_ms)],
            log=subprocess.DEVNULL,
        )
        self.system.start()
        self.client = Client.local(self.data_dir)
        self.folded = folds.ExecutionsState()
        self.sub = self.client.subscribe(1, types=folds.TYPES)

    def request(self, input_path: Path | str, stages: list[str], **fields) -> str:
        eid = fields.pop("execution_id", f"t-{time.monotonic_ns()}")
        self.client.append(
            ExecutionRequested(
                execution_id=eid, stages=stages, input_data=str(input_path), **fields
            )
        )
        return eid

    def state(self):
        return fold_log(self.client)

    def wait(self, eid: str, until=lambda ex: ex.status in TERMINAL, timeout: float = 60):
        return fold_until(self.sub, self.folded, eid, until, timeout)

    def pid(self, name: str) -> int:
        return self.system.pids()[name]

    def stop(self) -> None:
        self.sub.close()
        self.client.close()
        self.system.stop()


@pytest.fixture
def porch(tmp_path):
    running = Running(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def porch_short_lease(tmp_path):
    running = Running(tmp_path, lease_ms=1500)
    yield running
    running.stop()


DEFAULT = ["data_cleaning", "feature_engineering", "data_aggregation", "data_validation"]


def test_every_mode_gives_the_same_output_as_direct_calls(porch, sample):
    # given the default pipeline, run directly in this process
    expected = run(build(DEFAULT), pd.read_parquet(sample))[0]["data_validation"]
    outputs = {}
    for mode in ("sequential", "parallel", "hybrid"):
        # when porch runs it in each mode
        eid = porch.request(sample, DEFAULT, mode=mode, partitions=3 if mode != "sequential" else 0)
        ex = porch.wait(eid)
        assert ex.status == "completed", ex.error
        outputs[mode] = pd.read_parquet(ex.outputs["data_validation"]["path"])
        assert ex.records_processed == 6000
    # then every mode's output is the direct result, row for row
    for mode, frame in outputs.items():
        pd.testing.assert_frame_equal(frame, expected, check_dtype=False, obj=mode)
    parallel = porch.state().executions
    split = next(e for e in parallel.values() if e.mode == "parallel")
    assert split.plan.steps[0].phases == ("map", "reduce", "apply", "report")
    assert split.plan.steps[0].parts == 3


def test_a_killed_worker_costs_one_more_attempt_not_a_double_count(porch_short_lease, sample):
    porch = porch_short_lease
    # given a slow stage running on some worker
    eid = porch.request(sample, ["slow", "data_cleaning"], config={"slow": {"seconds": 3}})
    ex = porch.wait(eid, until=lambda e: any(t.status == "running" for t in e.tasks.values()))
    worker = next(t.worker for t in ex.tasks.values() if t.status == "running")
    # when that worker is killed with SIGKILL mid-stage
    os.kill(porch.pid(worker), signal.SIGKILL)
    # then the execution still completes, the stage ran again, and no record counts twice
    done = porch.wait(eid, timeout=60)
    assert done.status == "completed", done.error
    slow = done.tasks[("slow", "run", 0)]
    assert slow.attempt == 2
    assert done.records_processed == 6000


@pytest.fixture
def porch_long_lease(tmp_path):
    running = Running(tmp_path, lease_ms=120_000)
    yield running
    running.stop()


def test_a_task_of_a_worker_that_restarted_runs_again_at_once_not_after_the_lease(
    porch_long_lease, sample
):
    porch = porch_long_lease
    # given a slow stage running on some worker, with a two-minute lease
    eid = porch.request(sample, ["slow"], config={"slow": {"seconds": 2}})
    ex = porch.wait(eid, until=lambda e: any(t.status == "running" for t in e.tasks.values()))
    worker = next(t.worker for t in ex.tasks.values() if t.status == "running")
    # when that worker is killed with SIGKILL and started again, as porch up does
    child = next(c for c in porch.system.children if c.name == worker)
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait(10)
    assert porch.system.check() == [f"{worker} (exit -9)"]
    # then the lost attempt runs again long before its lease would end
    done = porch.wait(eid, timeout=40)
    assert done.status == "completed", done.error
    failed = [
        f
        for f in (r.fields() for r in porch.client.read(1, types=["StageFailed"]))
        if f["execution_id"] == eid
    ]
    assert [f["attempt"] for f in failed] == [1]
    assert f"worker {worker} restarted" in failed[0]["error"]


def test_a_restarted_orchestrator_continues_without_redoing_finished_stages(porch, sample):
    # given a chain whose first stage has finished and second is running
    eid = porch.request(sample, ["noop", "slow", "noop"], execution_id="resume-me",
                        steps=[{"id": "a", "stage": "noop"}, {"id": "b", "stage": "slow", "after": ["a"], "config": {"seconds": 2}},
                               {"id": "c", "stage": "noop", "after": ["b"]}])  # fmt: skip
    porch.wait(eid, until=lambda e: e.tasks and e.tasks[("b", "run", 0)].status == "running")
    # when the orchestrator is killed with SIGKILL and started again
    orchestrator = next(c for c in porch.system.children if c.name == "orchestrator")
    os.kill(orchestrator.proc.pid, signal.SIGKILL)
    orchestrator.proc.wait(10)
    assert porch.system.check() == ["orchestrator (exit -9)"]
    # then the execution completes and stage a was dispatched exactly once
    done = porch.wait(eid)
    assert done.status == "completed", done.error
    dispatched = [
        f["step"]
        for f in (r.fields() for r in porch.client.read(1, types=["StageDispatched"]))
        if f["phase"] == "run"
    ]
    assert dispatched.count("a") == 1
    assert dispatched.count("c") == 1


def test_a_sequential_chain_goes_on_from_runner_to_runner_without_the_orchestrator(porch, sample):
    # given a sequential execution of 12 steps, each after the one before
    steps = [{"id": f"s{i}", "stage": "noop", **({"after": [f"s{i - 1}"]} if i else {})}
             for i in range(12)]  # fmt: skip
    eid = porch.request(sample, [], steps=steps)
    # when it runs
    assert porch.wait(eid).status == "completed"
    # then each step completed once and was dispatched once
    events = [r.fields() for r in porch.client.read(1, execution_id=eid)]
    done = {e["step"]: e for e in events if e["type"] == "StageCompleted" and e["phase"] == "run"}
    dispatched = [e for e in events if e["type"] == "StageDispatched" and e["phase"] == "run"]
    assert sorted(done) == sorted(e["step"] for e in dispatched) == sorted(s["id"] for s in steps)
    # and a runner went on by itself to every step the chain of a pushed one named: the first
    # names 8 (s1-s8), the one after them is pushed (s9) and names the last two
    went_on = {e["then"].split("/")[1].split(":")[0] for e in done.values() if e["then"]}
    assert went_on == {f"s{i}" for i in (*range(1, 9), 10, 11)}
    # whose dispatches its runner logged with the completion before, as the orchestrator decided
    # them ahead (the pushed ones are the orchestrator's)
    by_worker = {e["step"] for e in dispatched if e["src"].startswith("worker")}
    assert by_worker == went_on


def test_pause_stops_dispatches_and_resume_continues(porch, sample):
    eid = porch.request(sample, [], steps=[{"id": "a", "stage": "slow", "config": {"seconds": 1}},
                                           {"id": "b", "stage": "noop", "after": ["a"]}])  # fmt: skip
    porch.wait(eid, until=lambda e: e.tasks and e.tasks[("a", "run", 0)].status == "running")
    porch.client.append(PauseRequested(execution_id=eid))
    paused = porch.wait(eid, until=lambda e: e.status == "paused")
    assert paused.tasks[("a", "run", 0)].status in ("running", "completed")
    # a finishes while paused; the orchestrator sees that at once, and two heartbeats later
    # (a second apart, later in the log) b has still not been dispatched
    done = porch.wait(eid, until=lambda e: e.tasks[("a", "run", 0)].status == "completed")
    with porch.client.subscribe(
        done.last_seq + 1, types=["WorkerHeartbeat", "StageDispatched"]
    ) as sub:
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while seen.count("WorkerHeartbeat") < 2 and time.monotonic() < deadline:
            seen += [r.type for r in sub.receive(500)]
            seen += [r.type for r in sub.take_live()]  # heartbeats are live, not logged
    assert "StageDispatched" not in seen
    ex = porch.state().executions[eid]
    assert ex.status == "paused"
    assert ex.tasks[("b", "run", 0)].status == "pending"
    porch.client.append(ResumeRequested(execution_id=eid))
    assert porch.wait(eid).status == "completed"


def test_cancel_aborts_the_running_task(porch, sample):
    eid = porch.request(sample, ["slow"], config={"slow": {"seconds": 30}})
    porch.wait(eid, until=lambda e: e.tasks and e.tasks[("slow", "run", 0)].status == "running")
    porch.client.append(CancelRequested(execution_id=eid, reason="test"))
    ex = porch.wait(eid, until=lambda e: e.tasks[("slow", "run", 0)].status == "failed", timeout=10)
    assert ex.status == "cancelled"
    assert ex.tasks[("slow", "run", 0)].error_type == "Cancelled"


def test_a_timeout_cancel_stops_the_stage_and_ends_as_timed_out(porch, sample):
    eid = porch.request(sample, ["slow"], config={"slow": {"seconds": 30}})
    porch.wait(eid, until=lambda e: e.tasks and e.tasks[("slow", "run", 0)].status == "running")
    porch.client.append(CancelRequested(execution_id=eid, reason="timeout", timeout_s=1.5))
    ex = porch.wait(eid, until=lambda e: e.tasks[("slow", "run", 0)].status == "failed", timeout=10)
    assert ex.status == "timed_out"
    assert ex.error == "timed out after 1.5 s"


def test_a_stage_that_says_retry_is_futile_fails_at_once(porch, sample):
    eid = porch.request(sample, ["fatal"], max_attempts=3)
    ex = porch.wait(eid)
    assert ex.status == "failed"
    assert ex.error == "stage 'fatal' failed: fatal: the source table is gone for good"
    assert ex.tasks[("fatal", "run", 0)].attempt == 1
    assert ex.retryable is False


@pytest.mark.parametrize(
    ("setup", "stages", "message"),
    [
        ("missing", DEFAULT, "refused: input '.*missing.parquet' does not exist"),
        ("text", DEFAULT, "refused: input '.*not.parquet' is not a parquet file"),
        (
            "schema",
            DEFAULT,
            "stage 'data_aggregation' failed: data_aggregation: no grouping can run",
        ),
        ("sample", ["boom"], "stage 'boom' failed: ValueError: boom: this stage always fails"),
        ("sample", ["no_such_stage"], "refused: pipeline .*unknown stage 'no_such_stage'"),
    ],
)
def test_bad_inputs_and_stages_end_in_one_line_failures(
    porch, sample, tmp_path, setup, stages, message
):
    inputs = {
        "missing": tmp_path / "missing.parquet",
        "text": tmp_path / "not.parquet",
        "schema": tmp_path / "other.parquet",
        "sample": sample,
    }
    inputs["text"].write_text("this is not parquet\n")
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), inputs["schema"])
    eid = porch.request(inputs[setup], stages)
    ex = porch.wait(eid)
    assert ex.status == "failed"
    assert "\n" not in ex.error
    import re

    assert re.search(message, ex.error), ex.error
    if setup == "sample" and stages == ["boom"]:
        assert Path(ex.traceback_path).read_text().startswith("Traceback")


def test_resume_from_checkpoint_reuses_verified_artifacts_only(porch, sample):
    first = porch.wait(porch.request(sample, DEFAULT, execution_id="first"))
    assert first.status == "completed"
    # a second execution resuming from the first reuses every stage
    again = porch.wait(porch.request(sample, DEFAULT, execution_id="again", resume_from="first"))
    assert again.status == "completed"
    assert all(t.reused for t in again.tasks.values() if t.key[1] != "collect")
    # an altered artifact is recomputed, never trusted
    Path(first.tasks[("data_cleaning", "run", 0)].artifact).write_bytes(b"tampered")
    third = porch.wait(porch.request(sample, DEFAULT, execution_id="third", resume_from="first"))
    assert third.status == "completed"
    assert not third.tasks[("data_cleaning", "run", 0)].reused
    assert third.tasks[("feature_engineering", "run", 0)].reused
    a = pd.read_parquet(first.outputs["data_validation"]["path"])
    pd.testing.assert_frame_equal(pd.read_parquet(third.outputs["data_validation"]["path"]), a)


def test_without_checkpoints_only_the_output_stays(porch, sample):
    ex = porch.wait(porch.request(sample, ["data_cleaning", "noop"], save_checkpoints=False))
    assert ex.status == "completed"
    root = Path(ex.plan.dir)
    # the orchestrator removes them as it folds ExecutionCompleted; once it has started a later
    # execution, it has handled that event
    porch.wait(porch.request(sample, ["noop"]), until=lambda e: e.status != "requested")
    assert sorted(p.name for p in root.iterdir()) == ["output"]
    assert Path(ex.outputs["noop"]["path"]).exists()


def test_cli_run_waits_and_replay_shows_the_state_at_a_seq(porch, sample):
    result = run_porch("run", str(sample), "--stages", "data_cleaning,noop", "--id", "cli-1", "--wait",
                       data_dir=porch.data_dir, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "data_cleaning: completed" in result.stdout
    failed = run_porch(
        "run", str(sample), "--stages", "boom", "--wait", data_dir=porch.data_dir, timeout=60
    )
    assert failed.returncode == 1
    assert "stage 'boom' failed" in failed.stdout
    started = next(r.seq for r in porch.client.read(1, types=["ExecutionStarted"]))
    state = run_porch("replay", "--state", "cli-1", "--at", str(started), data_dir=porch.data_dir)
    assert state.returncode == 0, state.stderr
    assert "execution cli-1: running" in state.stdout
    status = run_porch("status", "cli-1", data_dir=porch.data_dir)
    assert "execution cli-1: completed" in status.stdout
    history = run_porch("history", data_dir=porch.data_dir)
    assert "cli-1" in history.stdout
    stats = run_porch("stats", data_dir=porch.data_dir)
    assert "data_cleaning" in stats.stdout


def test_a_second_orchestrator_on_the_same_data_dir_is_refused(porch, sample):
    # given the system's orchestrator at work (it takes its lock before it decides anything)
    porch.wait(porch.request(sample, ["noop"]), until=lambda e: e.status != "requested")
    # when another orchestrator starts on the same data dir, then it is refused
    result = run_porch("orchestrator", data_dir=porch.data_dir, timeout=60)
    assert result.returncode == 2
    assert "another orchestrator (pid" in result.stderr


def test_a_stage_that_hands_back_its_input_writes_nothing_and_reads_back_the_same(porch, sample):
    # given a pass-through stage on the input, then a stage that reads its output
    eid = porch.request(sample, ["noop", "data_cleaning"], mode="parallel", partitions=4)
    ex = porch.wait(eid)
    assert ex.status == "completed", ex.error
    # then its artifacts are slices of the input, whose content hashes verify
    parts = [t for k, t in ex.tasks.items() if k[0] == "noop" and k[1] == "run"]
    assert parts
    assert all(artifacts.is_slice(t.artifact) for t in parts)
    assert all(artifacts.verify(t.artifact, t.sha256) for t in parts)
    assert not (Path(ex.plan.dir) / "noop").exists()
    # and the output is what data_cleaning gives directly (noop changes nothing)
    expected = run(build(["data_cleaning"]), pd.read_parquet(sample))[0]
    pd.testing.assert_frame_equal(
        pd.read_parquet(ex.outputs["data_cleaning"]["path"]),
        expected["data_cleaning"],
        check_dtype=False,
    )
    # and a resumed execution reuses the slices as they are
    again = porch.wait(porch.request(sample, ["noop", "data_cleaning"], mode="parallel",
                                     partitions=4, resume_from=eid))  # fmt: skip
    assert again.status == "completed", again.error
    assert all(again.tasks[t.key].reused for t in parts)
    assert [again.tasks[t.key].artifact for t in parts] == [t.artifact for t in parts]


def test_feature_engineering_writes_only_the_columns_it_adds_in_every_mode(porch, sample):
    # given cleaning then feature engineering, whose output is its input with columns added
    steps = ["data_cleaning", "feature_engineering"]
    expected = run(build(steps), pd.read_parquet(sample))[0]["feature_engineering"]
    for mode in ("sequential", "parallel"):
        # when porch runs it
        eid = porch.request(sample, steps, mode=mode, partitions=3 if mode != "sequential" else 0)
        ex = porch.wait(eid)
        assert ex.status == "completed", ex.error
        # then each feature artifact holds the added columns only, and verifies with its base
        written = [
            t
            for (step, phase, _), t in ex.tasks.items()
            if step == "feature_engineering" and phase in ("run", "map", "apply")
        ]
        assert written
        for task in written:
            with pa.memory_map(task.artifact) as source:
                names = pa.ipc.open_file(source).schema.names
            assert "QUERY_ID" not in names
            assert "START_TIME_HOUR" in names or "SECONDS_SINCE_PREVIOUS_BY_USER_NAME" in names
            assert artifacts.verify(task.artifact, task.sha256)
        # and the output is the whole frame, as the direct call gives it
        pd.testing.assert_frame_equal(
            pd.read_parquet(ex.outputs["feature_engineering"]["path"]),
            expected,
            check_dtype=False,
            obj=mode,
        )


def test_a_whole_table_stage_is_given_only_the_columns_it_says_it_reads(porch, sample):
    # given a stage that reads two columns, after a stage that writes all of them
    for mode in ("sequential", "parallel"):
        # when it runs on the artifacts of the one before, and on the input itself
        for steps in (["data_cleaning", "narrow"], ["narrow"]):
            eid = porch.request(sample, steps, mode=mode, partitions=2)
            ex = porch.wait(eid)
            assert ex.status == "completed", ex.error
            # then it is handed those two columns only, not read and converted whole
            report = ex.tasks[("narrow", "run", 0)].report
            assert report["columns_seen"] == ["QUERY_ID", "WAREHOUSE_NAME"], (mode, steps)


def test_more_executions_than_dispatch_room_all_finish(porch, sample):
    """Executions that found no room to dispatch when they started are decided again once
    room frees up: none waits forever (seen in a power-cut chaos run: 17 stuck running)."""
    quick = {"slow": {"seconds": 0.3}}
    eids = [
        porch.request(sample, ["slow", "noop"], execution_id=f"many-{i}", config=quick)
        for i in range(24)
    ]
    for eid in eids:
        assert porch.wait(eid, timeout=40).status == "completed"


def test_a_cancel_drops_the_tasks_still_waiting_to_be_pushed(porch, tmp_path):
    """Tasks decided but not yet handed to a worker are not sent once their execution is
    cancelled: only those the workers had taken (2 workers x prefetch 8) ever reach one."""
    path = tmp_path / "parts.parquet"
    pq.write_table(pa.table({"x": list(range(320))}), path, row_group_size=10)  # 32 parts
    eid = porch.request(path, ["slow_part"], mode="parallel", partitions=32,
                        config={"slow_part": {"seconds": 30}})  # fmt: skip
    porch.wait(eid, until=lambda e: any(t.status == "running" for t in e.tasks.values()))
    porch.client.append(CancelRequested(execution_id=eid, reason="test"))
    assert porch.wait(eid, timeout=20).status == "cancelled"
    after = porch.request(path, ["noop"])  # queued behind anything still waiting to be pushed
    assert porch.wait(after, timeout=20).status == "completed"
    reached = {
        r.fields()["task_id"]
        for r in porch.client.read(1, types=["StageStarted", "StageFailed", "StageCompleted"])
        if r.fields()["execution_id"] == eid
    }
    assert 1 <= len(reached) <= 16, sorted(reached)
