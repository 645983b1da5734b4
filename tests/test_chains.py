"""Chains: a sequential dispatch names the tasks that follow it, exactly as they will be decided;
a runner that went on to one is pushed nothing, and holds its lease.

The orchestrator's core with a fake clock over the in-memory hub (`test_orchestrator_core`'s
harness); the planner is the real one, on a real parquet file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actors.orchestrator import chains
from bus.events import StageCompleted, StageDispatched
from bus.schema import from_map
from bus.wire import pack
from store.projections.task import TaskRef, follow_on
from tests.test_orchestrator_core import Orchestrated, request

PIPELINE = ["data_cleaning", "feature_engineering", "data_aggregation", "data_validation"]
# what a decision carries beside the task: when and where it was made, and its own chain
BESIDE = ("ts", "src", "then")


def _task(dispatch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dispatch.items() if k not in BESIDE}


def _completed(task: dict[str, Any], artifact: str, then: str = "") -> StageCompleted:
    return StageCompleted(
        **TaskRef.of(task).fields(), worker="w1", artifact=artifact, rows_in=10, rows_out=10,
        bytes=100, sha256=f"sha-of-{artifact}", duration_s=0.1, then=then,
    )  # fmt: skip


def _started(tmp_path: Path, source: Path, **config: Any) -> tuple[Orchestrated, dict[str, Any]]:
    """A sequential execution of the default pipeline on one worker, its first task pushed."""
    o = Orchestrated(tmp_path, **config)
    o.join("w1")
    o.emit(request(source, stages=PIPELINE))
    o.settle()
    (first,) = o.push()
    return o, first


def test_a_sequential_dispatch_names_the_tasks_that_follow_as_they_are_decided(tmp_path, source):
    # given a sequential execution of the default pipeline, its first task pushed
    o, first = _started(tmp_path, source)
    ex = o.core.state.executions["e1"]
    # then it names every task after it, in order (up to the chain's length)
    following = chains.following(ex, TaskRef.of(first).key)
    assert [t["task_id"] for t in first["then"]] == [
        f"e1/{step}:{phase}:{part}/1" for step, phase, part in following
    ]
    assert len(first["then"]) == min(chains.AHEAD, len(ex.tasks) - 1)
    # when each task completes with an artifact of its own (not where it was planned: a
    # stage that passed its input through points at that input) and nobody went on to the next
    carried, pushed = first, first
    for step in range(len(first["then"])):
        artifact = f"{tmp_path}/written-{step}.arrow"
        expected = follow_on(carried, artifact, f"sha-of-{artifact}")
        o.emit(_completed(pushed, artifact))
        o.settle()
        (pushed,) = o.push()
        # then the task the orchestrator decides is the one the chain named, filled in
        assert expected is not None
        assert _task(pushed) == _task(expected)
        assert artifact in pushed["inputs"]
        carried = expected
    assert follow_on(carried, "x", "y") is None  # the chain named no more than there were


def test_a_parallel_execution_or_a_fan_out_names_no_chain(tmp_path, source):
    # given a parallel execution, and a sequential one whose first step two steps read
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source, eid="par", stages=PIPELINE, mode="parallel", partitions=2))
    steps = [
        {"id": "a", "stage": "data_cleaning"},
        {"id": "b", "stage": "feature_engineering", "source": "a"},
        {"id": "c", "stage": "data_aggregation", "source": "a"},
    ]
    o.emit(request(source, eid="fan", stages=[], steps=steps))
    o.settle()
    # then no task pushed names a chain: what follows is not one task for certain
    assert all(task["then"] == [] for task in o.push())


def _went_on(o: Orchestrated, first: dict[str, Any], artifact: str) -> dict[str, Any]:
    """The runner of ``first`` completed it and went on to the next task: the task it runs."""
    nxt = follow_on(first, artifact, f"sha-of-{artifact}")
    assert nxt is not None
    o.emit(_completed(first, artifact, then=nxt["task_id"]))
    return nxt


def test_a_task_a_runner_went_on_to_is_pushed_to_nobody_and_leased_to_its_worker(tmp_path, source):
    # given a sequential execution whose first task's runner went on to the second, and logged
    # its dispatch right after the completion (as the hub appends both)
    o, first = _started(tmp_path, source, lease_ms=2000)
    nxt = _went_on(o, first, f"{tmp_path}/a.arrow")
    o.emit(from_map({**nxt, "then": []}))
    # when the orchestrator turns
    decided = o.step()
    # then it decides no dispatch of its own, pushes nothing, and w1 holds the task
    assert not [e for e in decided if isinstance(e, StageDispatched)]
    assert o.push() == []
    lease = o.core.leases[nxt["task_id"]]
    assert lease.worker == "w1"
    # and when it completes, its lease ends, and the chain goes on
    o.emit(_completed(nxt, f"{tmp_path}/b.arrow"))
    o.settle()
    assert nxt["task_id"] not in o.core.leases
    assert nxt["task_id"] not in o.core.continued
    assert [t["step"] for t in o.push()] == ["data_aggregation"]


def test_a_runner_s_results_logged_before_the_dispatch_it_went_on_to_wait_for_it(tmp_path, source):
    # given a runner that went on to the second task, whose dispatch the orchestrator decides
    # itself (the runner's did not reach the log), and whose completion is logged first
    o, first = _started(tmp_path, source)
    nxt = _went_on(o, first, f"{tmp_path}/a.arrow")
    o.emit(_completed(nxt, f"{tmp_path}/b.arrow"))
    # when the orchestrator decides and its dispatch comes back
    decided = [e for e in o.step() if isinstance(e, StageDispatched)]
    # then that dispatch is the one the runner ran, it went to nobody, and the held result
    # completes it: the chain goes on with the third task
    assert [e.task_id for e in decided] == [nxt["task_id"]]
    o.settle()
    ex = o.core.state.executions["e1"]
    assert ex.tasks[TaskRef.of(nxt).key].status == "completed"
    assert not o.core.leases
    assert [t["step"] for t in o.push()] == ["data_aggregation"]


def test_a_task_a_runner_went_on_to_and_never_ran_runs_again_after_its_lease(tmp_path, source):
    # given a runner that said it went on to the second task, and then nothing more of it
    o, first = _started(tmp_path, source, lease_ms=2000)
    nxt = _went_on(o, first, f"{tmp_path}/a.arrow")
    o.settle()
    assert o.push() == []
    # when its lease ends
    o.advance(2.5)
    o.settle()
    # then the attempt fails as retryable, and the next attempt goes to the workers
    failed = o.hub.of("StageFailed")
    assert [(f["task_id"], f["error_type"]) for f in failed] == [(nxt["task_id"], "LeaseExpired")]
    (again,) = o.push()
    assert (again["step"], again["attempt"]) == (nxt["step"], 2)


def test_what_a_runner_went_on_to_survives_a_snapshot_of_the_core(tmp_path, source):
    # given a runner that went on to the second task, the orchestrator's dispatch on its way
    o, first = _started(tmp_path, source, lease_ms=2000)
    nxt = _went_on(o, first, f"{tmp_path}/a.arrow")
    # when the core is restored from a snapshot taken now, and goes live again
    body = o.core.snapshot_body()
    restored = Orchestrated(tmp_path, lease_ms=2000)
    restored.core.live = False
    restored.core.restore(body, restored.now)
    restored.hub, restored.folded = o.hub, o.hub.head
    restored.core.go_live(restored.now)
    restored.settle()
    # then the task is still pushed to nobody, and held by w1
    assert restored.push() == []
    assert restored.core.leases[nxt["task_id"]].worker == "w1"


def test_a_dispatch_names_the_chain_only_when_the_next_is_certain(tmp_path: Path, source):
    # given a sequential execution whose first task failed once (nothing else is ready)
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source, stages=PIPELINE, max_attempts=3))
    o.settle()
    (first,) = o.push()
    o.fail(first)
    o.settle()
    # then its retry names the same chain (the tasks after it were never dispatched)
    (retry,) = o.push()
    assert retry["attempt"] == 2
    assert [t["task_id"] for t in retry["then"]] == [t["task_id"] for t in first["then"]]


def test_a_chain_is_cut_where_its_dispatches_would_grow_past_their_budget(
    tmp_path, source, monkeypatch
):
    # given a budget for the tasks a dispatch names that fits about two of them
    _, first = _started(tmp_path, source)
    one = len(pack(first["then"][0]))
    monkeypatch.setattr(chains, "MAX_BYTES", 2 * one + one // 2)
    # when a dispatch with the same tasks after it is decided
    _, cut = _started(tmp_path / "again", source)
    # then it names the first two only, the same as before
    assert [t["task_id"] for t in cut["then"]] == [t["task_id"] for t in first["then"][:2]]
