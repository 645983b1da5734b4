"""The orchestrator's core with a fake clock over the in-memory hub: leases, retries, windows,
pause, cancel, starvation, lost workers, decisions given up and taken again.

The planner is the real one, on a real parquet file; the workers are this test, which answers
the tasks the core pushes with the events a worker would send.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from actors.orchestrator.core import CoreConfig, OrchestratorCore
from actors.orchestrator.decide import refused
from actors.orchestrator.leases import PUSH_AGAIN_MAX, STOPPED_KEPT_S, WORKER_TIMEOUT_S
from actors.orchestrator.planning import PlanRefusedError, plan_execution
from actors.shared.now import Now
from bus.events import (
    CancelRequested,
    Event,
    ExecutionRequested,
    PauseRequested,
    ResumeRequested,
    StageCompleted,
    StageFailed,
    StageStarted,
    WorkerHeartbeat,
    WorkerStarted,
    WorkerStopped,
)
from bus.schema import decode, encode, to_map
from stages.registry import Registry
from store.projections import executions as folds
from store.projections.task import TaskRef
from store.retention import RetentionPolicy
from tests.memhub import MemoryHub

T0 = 1_800_000_000.0


class Orchestrated:
    """An orchestrator core over a `MemoryHub`, turned by hand as the actor loop turns it."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.hub = MemoryHub()
        self.now = Now(T0, 1000.0)
        self.registry = Registry.default()
        self.checkpoints = tmp_path / "checkpoints"
        self.core = OrchestratorCore(CoreConfig(**config), planner=self._plan)
        self.folded = 0
        self.core.go_live(self.now)
        self.ids = (f"w-{n}" for n in itertools.count())

    def _plan(self, ex: folds.ExecutionState, workers: int, earlier: Any) -> Event:
        try:
            return plan_execution(ex.request, registry=self.registry,
                                  checkpoint_dir=self.checkpoints, workers=workers,
                                  hybrid_min_rows=100, earlier=earlier)  # fmt: skip
        except PlanRefusedError as exc:
            return refused(ex.execution_id, str(exc))

    # --- the loop, by hand ---------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self.hub.append(event, self.now.wall)
        self._fold()

    def _fold(self) -> None:
        for record in self.hub.since(self.folded):
            self.core.apply(record.seq, record.fields, record.payload, self.now)
            self.folded = record.seq

    def decide(self) -> list[Event]:
        """Decide, and send the decisions as the loop does (the core hears their bytes)."""
        decided = self.core.decide(self.now)
        for event in decided:
            self.core.going(event, encode(event))
        return decided

    def step(self) -> list[Event]:
        """One turn: decide, and every decision comes back durable."""
        decided = self.decide()
        for event in decided:
            self.hub.append(event, self.now.wall)
        self._fold()
        return decided

    def settle(self) -> None:
        while self.step():
            pass

    def advance(self, seconds: float) -> None:
        self.now = Now(self.now.wall + seconds, self.now.mono + seconds)

    def push(self) -> list[dict[str, Any]]:
        """What the tasks socket would take now: the dispatches pushed to workers."""
        out = []
        while bundle := self.core.take_bundle(self.now):
            self.core.pushed(bundle, self.now)
            out += [self.hub.records[self._seq(task_id)].fields for task_id, _, _ in bundle]
        return out

    def _seq(self, task_id: str) -> int:
        return next(i for i, r in enumerate(self.hub.records)
                    if r.type == "StageDispatched" and r.fields["task_id"] == task_id)  # fmt: skip

    # --- the workers ---------------------------------------------------------------------------

    def join(self, *workers: str) -> None:
        for worker in workers:
            self.emit(WorkerStarted(worker=worker, host="h", pid=1))

    def start(self, task: dict[str, Any], worker: str = "w1") -> None:
        self.emit(StageStarted(**_task_fields(task), worker=worker))

    def complete(self, task: dict[str, Any], worker: str = "w1") -> None:
        self.emit(StageCompleted(**_task_fields(task), worker=worker, artifact=task["output"],
                                 rows_in=10, rows_out=10, bytes=100, sha256="ab", duration_s=0.1))  # fmt: skip

    def fail(self, task: dict[str, Any], retryable: bool = True, worker: str = "w1") -> None:
        self.emit(StageFailed(**_task_fields(task), worker=worker, error="boom",
                              error_type="ValueError", retryable=retryable))  # fmt: skip

    def run_all(self, worker: str = "w1") -> None:
        """Answer every task pushed, until nothing more is pushed."""
        self.settle()
        while tasks := self.push():
            for task in tasks:
                self.start(task, worker)
                self.complete(task, worker)
            self.settle()

    def status(self, eid: str) -> str:
        return self.core.state.executions[eid].status


def _task_fields(task: dict[str, Any]) -> dict[str, Any]:
    return TaskRef.of(task).fields()


def request(source: Path, eid: str = "e1", **extra: Any) -> ExecutionRequested:
    base: dict[str, Any] = {"stages": ["data_validation"], "mode": "sequential"}
    return ExecutionRequested(execution_id=eid, input_data=str(source), **{**base, **extra})


def test_a_sequential_execution_runs_one_task_at_a_time_to_completion(tmp_path, source):
    # given an orchestrator with one worker
    o = Orchestrated(tmp_path)
    o.join("w1")
    # when an execution of two stages is requested
    o.emit(request(source, stages=["data_cleaning", "data_validation"]))
    o.settle()
    # then it starts, and one task at a time goes out until it completes
    assert o.status("e1") == "running"
    while tasks := o.push():
        assert len(tasks) == 1
        o.start(tasks[0])
        o.settle()
        assert o.push() == []  # nothing more while that one runs
        o.complete(tasks[0])
        o.settle()
    assert o.status("e1") == "completed"
    assert len(o.hub.of("ExecutionCompleted")) == 1


def test_a_refused_request_fails_with_the_planner_s_reason(tmp_path, source):
    o = Orchestrated(tmp_path)
    o.emit(request(source, stages=["no_such_stage"]))
    o.settle()
    assert o.status("e1") == "failed"
    assert "refused" in o.hub.of("ExecutionFailed")[0]["error"]


def _one_pushed(tmp_path: Path, source: Path) -> tuple[Orchestrated, dict[str, Any]]:
    """An orchestrator with a 2 s lease that pushed one task to worker w1."""
    o = Orchestrated(tmp_path, lease_ms=2000)
    o.join("w1")
    o.emit(request(source))
    o.settle()
    (task,) = o.push()
    return o, task


def test_a_pushed_task_no_worker_claimed_is_pushed_again_then_fails_at_its_lease(tmp_path, source):
    # given a task pushed to a worker that then says nothing of it
    o, task = _one_pushed(tmp_path, source)
    # when time passes short of the lease: nothing
    o.advance(1.9)
    o.emit(WorkerHeartbeat(worker="w2", host="h", cpu_percent=0, memory_percent=0, rss_bytes=0))
    assert o.step() == []
    # then past it: nobody claimed it, so it may never have reached a worker (it waited in the
    # socket of a runner that was killed): the same attempt is pushed again, twice at most
    for _ in range(PUSH_AGAIN_MAX):
        o.advance(2.1)
        o.settle()
        assert o.hub.of("StageFailed") == []
        (again,) = o.push()
        assert again["task_id"] == task["task_id"]
    # and then the attempt fails as retryable and a second attempt is dispatched
    o.advance(2.1)
    o.settle()
    (failed,) = o.hub.of("StageFailed")
    assert (failed["error_type"], failed["retryable"], failed["attempt"]) == (
        "LeaseExpired",
        True,
        1,
    )
    (again,) = o.push()
    assert (again["attempt"], again["step"]) == (2, task["step"])


def test_a_claimed_task_with_no_more_sign_of_life_fails_at_its_lease(tmp_path, source):
    # given a task a worker named once, then went silent about
    o, task = _one_pushed(tmp_path, source)
    o.core.heard({"type": "WorkerHeartbeat", "worker": "w1", "task_id": task["task_id"],
                  "ts": o.now.wall}, o.now)  # fmt: skip
    # when its lease passes: the attempt fails at once, never pushed again
    o.advance(2.1)
    o.settle()
    (failed,) = o.hub.of("StageFailed")
    assert (failed["error_type"], failed["attempt"]) == ("LeaseExpired", 1)
    (again,) = o.push()
    assert again["attempt"] == 2


def test_heartbeats_naming_a_task_renew_its_lease(tmp_path, source):
    o, task = _one_pushed(tmp_path, source)
    for _ in range(5):  # ten seconds of a long stage, a heartbeat a second and a half
        o.advance(1.5)
        o.core.heard({"type": "WorkerHeartbeat", "worker": "w1", "task_id": task["task_id"],
                      "ts": o.now.wall}, o.now)  # fmt: skip
        o.settle()
    assert o.hub.of("StageFailed") == []
    o.complete(task)
    o.run_all()
    assert o.status("e1") == "completed"


def test_retryable_failures_retry_up_to_max_attempts_then_the_execution_fails(tmp_path, source):
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source, max_attempts=3))
    o.settle()
    attempts = []
    while tasks := o.push():
        attempts.append(tasks[0]["attempt"])
        o.fail(tasks[0])
        o.settle()
    assert attempts == [1, 2, 3]
    assert o.status("e1") == "failed"
    assert "after 3 attempts" in o.hub.of("ExecutionFailed")[0]["error"]


def test_a_permanent_failure_is_not_retried(tmp_path, source):
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source, max_attempts=3))
    o.settle()
    (task,) = o.push()
    o.fail(task, retryable=False)
    o.settle()
    assert o.push() == []
    assert o.status("e1") == "failed"


def test_pushes_wait_for_room_and_dispatches_for_the_window(tmp_path, source):
    # given two workers holding one task each, and a window of 4 tasks in flight (at least
    # twice what the workers hold, so the next ones are durable by the time there is room)
    o = Orchestrated(tmp_path, prefetch=1, dispatch_window=4)
    o.join("w1", "w2")
    # when a parallel execution of 8 partitions is requested
    o.emit(request(source, mode="parallel", partitions=8))
    o.settle()
    # then 4 are dispatched, and 2 pushed
    assert len(o.hub.of("StageDispatched")) == 4
    first = o.push()
    assert len(first) == 2
    assert o.push() == []
    # when one completes, one more is dispatched and pushed
    o.start(first[0])
    o.complete(first[0])
    o.settle()
    assert len(o.hub.of("StageDispatched")) == 5
    assert len(o.push()) == 1


def test_a_paused_execution_dispatches_nothing_until_resumed(tmp_path, source):
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source, stages=["data_cleaning", "data_validation"]))
    o.settle()
    (task,) = o.push()
    # when a pause is asked while a task runs
    o.emit(PauseRequested(execution_id="e1"))
    o.settle()
    assert o.status("e1") == "paused"
    # then the running task may finish, and nothing new goes out
    o.start(task)
    o.complete(task)
    o.settle()
    assert o.push() == []
    # until it is resumed
    o.emit(ResumeRequested(execution_id="e1"))
    o.run_all()
    assert o.status("e1") == "completed"
    assert len(o.hub.of("ExecutionPaused")) == len(o.hub.of("ExecutionResumed")) == 1


def test_cancel_ends_the_execution_and_drops_what_was_not_pushed(tmp_path, source):
    o = Orchestrated(tmp_path, prefetch=1, dispatch_window=8)
    o.join("w1")
    o.emit(request(source, mode="parallel", partitions=8))
    o.settle()
    assert len(o.push()) == 1  # one worker, prefetch 1: the others wait to be pushed
    o.emit(CancelRequested(execution_id="e1"))
    o.settle()
    assert o.status("e1") == "cancelled"
    assert o.push() == []


def test_a_starved_execution_gets_dispatches_when_room_frees_up(tmp_path, source):
    # given a window of 2, filled by a first execution of 8 partitions
    o = Orchestrated(tmp_path, prefetch=4, dispatch_window=2)
    o.join("w1")
    o.emit(request(source, "e1", mode="parallel", partitions=8))
    o.settle()
    o.emit(request(source, "e2"))
    o.settle()
    assert o.status("e2") == "running"
    dispatched = {f["execution_id"] for f in o.hub.of("StageDispatched")}
    assert dispatched == {"e1"}
    # when the first execution's tasks end, with nothing of e2's own happening
    o.run_all()
    # then e2 got its turn and completed too
    assert o.status("e1") == o.status("e2") == "completed"


def test_a_silent_worker_is_counted_out_once_and_back_when_heard(tmp_path):
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.advance(WORKER_TIMEOUT_S + 0.1)
    o.step()
    o.step()  # on its way: not decided twice
    assert len(o.hub.of("WorkerLost")) == 1
    assert o.core.live_workers(o.now) == 0
    o.core.heard({"type": "WorkerHeartbeat", "worker": "w1", "ts": o.now.wall}, o.now)
    o.settle()
    assert len(o.hub.of("WorkerReturned")) == 1
    assert o.core.live_workers(o.now) == 1


def test_a_decision_given_up_is_taken_again_with_the_same_id(tmp_path, source):
    # given a start decided but never back (the hub was away)
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source))
    first = o.core.decide(o.now)
    assert [e.TYPE for e in first] == ["ExecutionStarted"]
    assert o.core.decide(o.now) == []  # on its way: not again
    # when the actor gives it up
    o.core.forget([first[0].id])
    # then it is decided again, the same event
    again = o.core.decide(o.now)
    assert [e.id for e in again] == [first[0].id]


def test_a_snapshot_of_the_core_gives_back_the_same_decisions(tmp_path, source):
    # given a core halfway through an execution
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source, stages=["data_cleaning", "data_validation"]))
    o.settle()
    (task,) = o.push()
    o.start(task)
    o.complete(task)
    # when another core restores its snapshot and goes live
    other = OrchestratorCore(CoreConfig(), planner=o._plan)
    other.restore(o.core.snapshot_body(), o.now)
    other.go_live(o.now)
    # then both decide the same next step
    assert [e.id for e in other.decide(o.now)] == [e.id for e in o.core.decide(o.now)]


def test_retention_removes_the_older_execution_s_artifacts_logged_before_deleted(tmp_path, source):
    # given a policy that keeps only the newest execution, and two that completed
    policy = RetentionPolicy(keep_last=1, keep_days=0, interval_s=60)
    o = Orchestrated(tmp_path, retention=policy)
    o.join("w1")
    for eid in ("e1", "e2"):
        o.emit(request(source, eid, stages=["data_cleaning", "data_validation"]))
        o.run_all()
        o.advance(1)
    assert o.status("e1") == o.status("e2") == "completed"
    # when the retention pass comes round
    o.advance(61)
    o.settle()
    # then the older one's intermediates are removed in the log, and only then deleted
    (removed,) = o.hub.of("ArtifactsRemoved")
    assert removed["execution_id"] == "e1"
    (deletion,) = o.core.deletions
    assert deletion.execution_id == "e1"
    assert deletion.paths
    # and a pass again decides nothing new
    o.advance(61)
    o.settle()
    assert len(o.hub.of("ArtifactsRemoved")) == 1


def test_an_execution_requested_while_removals_are_on_their_way_waits_for_them(tmp_path, source):
    policy = RetentionPolicy(keep_last=0, keep_days=0, interval_s=60)
    o = Orchestrated(tmp_path, retention=policy)
    o.join("w1")
    o.emit(request(source, "e1"))
    o.settle()
    while tasks := o.push():  # one turn per task: the last turn decides the completion
        for task in tasks:
            o.start(task)
            o.complete(task)
        o.step()
    assert o.status("e1") == "completed"
    # when the removal is decided and not back yet, and a new execution is requested
    decided = o.core.decide(o.now)
    assert [e.TYPE for e in decided] == ["ArtifactsRemoved"]
    o.emit(request(source, "e2"))
    assert o.core.decide(o.now) == []
    assert o.status("e2") == "requested"
    # then it starts once the removal is back
    o.hub.append(decided[0], o.now.wall)
    o._fold()
    assert [e.TYPE for e in o.core.decide(o.now)] == ["ExecutionStarted"]


def _given_a_started_task(tmp_path: Path, source: Path) -> tuple[Orchestrated, dict[str, Any]]:
    o = Orchestrated(tmp_path, lease_ms=60_000)
    o.join("w1", "w2")
    o.emit(request(source))
    o.settle()
    (task,) = o.push()
    o.advance(1)
    o.start(task, "w1")
    return o, task


def _given_up(o: Orchestrated) -> dict[str, Any]:
    (failed,) = o.hub.of("StageFailed")
    assert (failed["retryable"], failed["attempt"]) == (True, 1)
    return failed


def test_a_task_whose_worker_restarted_runs_again_at_once_not_after_its_lease(tmp_path, source):
    # given a task started by w1, with a lease of a minute
    o, task = _given_a_started_task(tmp_path, source)
    # when w1 starts anew (a new process, which does not hold the task)
    o.advance(1)
    o.join("w1")
    o.advance(0.1)
    o.settle()
    # then the attempt is given up at once, and a second one goes out
    assert "w1 restarted" in _given_up(o)["error"]
    (again,) = o.push()
    assert (again["attempt"], again["step"]) == (2, task["step"])


def test_a_task_whose_worker_stopped_or_was_counted_out_runs_again_at_once(tmp_path, source):
    for how in ("stopped", "counted out"):
        # given a task queued on w1 (its heartbeat names it; not started yet)
        o = Orchestrated(tmp_path / how, lease_ms=60_000)
        o.join("w1", "w2")
        o.emit(request(source))
        o.settle()
        (task,) = o.push()
        o.core.heard({"type": "WorkerHeartbeat", "worker": "w1", "queued": [task["task_id"]],
                      "ts": o.now.wall}, o.now)  # fmt: skip
        # when w1 stops, or goes silent past the worker timeout while w2 is heard
        if how == "stopped":
            o.emit(WorkerStopped(worker="w1"))
        else:
            o.advance(WORKER_TIMEOUT_S + 0.1)
            o.core.heard({"type": "WorkerHeartbeat", "worker": "w2", "ts": o.now.wall}, o.now)
            o.settle()  # w1's WorkerLost goes out and comes back
        o.advance(0.1)
        o.settle()
        # then the attempt is given up well before its lease
        assert f"w1 {how}" in _given_up(o)["error"]
        assert o.push()[0]["attempt"] == 2


def test_a_claim_by_a_worker_whose_start_is_not_logged_yet_stands(tmp_path, source):
    for before in ("never heard of", "stopped before"):
        # given a task claimed by w9's runner before w9's start is logged: a worker never heard
        # of, or one that stopped a while before (its new process's runner claims it)
        o = Orchestrated(tmp_path / before.replace(" ", "-"), lease_ms=60_000)
        o.join("w1")
        if before == "stopped before":
            o.join("w9")
            o.emit(WorkerStopped(worker="w9"))
        o.advance(1)
        o.emit(request(source))
        o.settle()
        (task,) = o.push()
        o.advance(0.5)
        o.start(task, "w9")
        # when the orchestrator checks its leases
        o.advance(1)
        o.settle()
        # then the task keeps running: nothing says its holder is gone
        assert o.hub.of("StageFailed") == [], before
        # and once w9's start is logged (made before the claim, sent along another socket)
        o.hub.append(WorkerStarted(worker="w9", host="h", pid=3), o.now.wall - 1.0)
        o._fold()
        o.advance(1)
        o.settle()
        assert o.hub.of("StageFailed") == [], before
        # while a stop logged after the claim gives the attempt up at once
        o.advance(1)
        o.emit(WorkerStopped(worker="w9"))
        o.advance(0.1)
        o.settle()
        assert "w9 stopped" in _given_up(o)["error"]


def test_the_stops_remembered_are_the_last_hour_s(tmp_path):
    # given workers named per process that stop, one an hour after the other
    o = Orchestrated(tmp_path)
    o.join("w-a", "w-b")
    o.emit(WorkerStopped(worker="w-a"))
    o.advance(STOPPED_KEPT_S + 1)
    o.emit(WorkerStopped(worker="w-b"))
    # then the older stop is forgotten (a claim that old held a task whose lease ended)
    assert set(o.core.stopped) == {"w-b"}


def test_another_worker_starting_leaves_the_task_alone(tmp_path, source):
    # given a task started by w1
    o, task = _given_a_started_task(tmp_path, source)
    # when w3 joins, and w1 keeps naming the task in its heartbeats
    for _ in range(3):
        o.advance(1)
        o.join("w3")
        o.core.heard({"type": "WorkerHeartbeat", "worker": "w1", "task_id": task["task_id"],
                      "ts": o.now.wall}, o.now)  # fmt: skip
        o.settle()
    # then the task keeps running
    assert o.hub.of("StageFailed") == []


def test_after_a_restart_a_task_whose_worker_restarted_meanwhile_runs_again_at_once(
    tmp_path, source
):
    # given a task started by w1, then w1 started anew while no orchestrator ran
    o, task = _given_a_started_task(tmp_path, source)
    o.advance(1)
    o.emit(WorkerStarted(worker="w1", host="h", pid=2))
    # when a new orchestrator core folds that log and goes live
    fresh = OrchestratorCore(CoreConfig(lease_ms=60_000), planner=o._plan)
    for record in o.hub.since(0):
        fresh.apply(record.seq, record.fields, record.payload, o.now)
    fresh.go_live(o.now)
    decided = fresh.decide(o.now)
    # then it gives the attempt up at once
    (failed,) = [e for e in decided if isinstance(e, StageFailed)]
    assert (failed.attempt, failed.step) == (1, task["step"])
    assert "w1 restarted" in failed.error


def _handed_early(o: Orchestrated) -> tuple[Any, dict[str, Any]]:
    """Decide a dispatch and take the task the core pushes at once, the dispatch not back yet."""
    decided = o.decide()
    (dispatch,) = [e for e in decided if e.TYPE == "StageDispatched"]
    bundle = o.core.take_bundle(o.now)
    o.core.pushed(bundle, o.now)
    (payload,) = [p for _, _, p in bundle]
    return dispatch, to_map(decode(payload))


def test_a_task_goes_out_as_its_dispatch_is_sent_and_a_result_logged_first_waits_for_it(
    tmp_path, source
):
    # given a started execution
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source))
    o.step()
    # when its first task is decided: it is pushed before its dispatch is in the log
    dispatch, task = _handed_early(o)
    assert task["task_id"] == dispatch.task_id
    key = (task["step"], task["phase"], task["partition"])
    # and the worker's result reaches the log before the dispatch does
    o.start(task)
    o.complete(task)
    assert o.core.state.executions["e1"].tasks[key].status == "pending"
    o.hub.append(dispatch, o.now.wall)
    o._fold()
    # then the task is completed once the dispatch folds, and is not pushed again
    assert o.core.state.executions["e1"].tasks[key].status == "completed"
    o.settle()
    for later in o.push():
        assert later["task_id"] != task["task_id"]
        o.start(later)
        o.complete(later)
    o.run_all()
    assert o.status("e1") == "completed"
    assert len([e for e in o.hub.of("StageCompleted") if e["task_id"] == task["task_id"]]) == 1


def test_a_dispatch_given_up_and_decided_again_goes_to_the_workers_once(tmp_path, source):
    # given a task pushed as its dispatch was sent
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source))
    o.step()
    dispatch, task = _handed_early(o)
    # when the dispatch is given up (not back in time) and decided again
    o.core.forget([dispatch.id])
    again = [e for e in o.decide() if e.TYPE == "StageDispatched"]
    # then the same dispatch goes to the hub again, but the task is not pushed again
    assert [e.id for e in again] == [dispatch.id]
    assert o.core.take_bundle(o.now) == []
    # and its lease counts from the first push: a silent worker still loses it
    o.advance(11)
    o.hub.append(again[0], o.now.wall)
    o.settle()
    (failed,) = o.hub.of("StageFailed")
    assert (failed["task_id"], failed["error_type"]) == (task["task_id"], "LeaseExpired")
