"""A worker's runner takes its tasks from the orchestrator and sends their completions to the
hub itself; its worker supervises: a runner killed on its own fails the task it ran and hands
the ones it held to the next runner, and each task still has one accepted completion."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zmq

from actors.api.system import System
from actors.read.executions import fold_log
from actors.worker.intake import Ledger
from actors.worker.lane import CANCELS_KEPT, RecentIds, check_task
from bus.errors import MalformedEventError
from bus.events import ExecutionRequested, StageDispatched
from bus.schema import encode, to_map
from tests.slowstages import STAGES
from tests.watching import Watched


@pytest.fixture
def porch(tmp_path):
    running = Watched(System(data_dir=tmp_path / "porch", workers=1, stages=STAGES,
                             log=subprocess.DEVNULL))  # fmt: skip
    yield running
    running.stop()


def _rows(tmp_path, count: int, groups: int):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"x": list(range(count))}), path, row_group_size=count // groups)
    return path


def _runner(porch: Watched) -> psutil.Process:
    (worker,) = (pid for name, pid in porch.system.pids().items() if name.startswith("worker"))
    (runner,) = psutil.Process(worker).children()
    return runner


def test_a_runner_sends_its_completions_as_its_worker_one_event_for_a_short_task(porch, tmp_path):
    # given a worker (its runner takes tasks itself)
    path = _rows(tmp_path, 40, 4)
    # when it runs short tasks, one after another, and four partitions
    short = [f"short-{n}" for n in range(6)]
    for eid in short:
        porch.client.append(
            ExecutionRequested(execution_id=eid, stages=["noop"], input_data=str(path))
        )
        porch.wait(lambda seen, eid=eid: porch.of("ExecutionCompleted", execution_id=eid))
    porch.client.append(ExecutionRequested(execution_id="four", stages=["slow_part"], input_data=str(path),
                                           mode="parallel", partitions=4,
                                           config={"slow_part": {"seconds": 0.0}}))  # fmt: skip
    porch.wait(lambda seen: porch.of("ExecutionCompleted", execution_id="four"))
    # then each completion comes from the worker, as its other events do
    (worker,) = {e["worker"] for e in porch.of("WorkerStarted")}
    done = porch.of("StageCompleted")
    assert done
    assert {e["worker"] for e in done} == {worker}
    assert {e["src"].split("@")[0] for e in done} == {worker}
    # and a task's start is in its completion; a short one (the first ones warm the runner up)
    # has no StageStarted of its own: one event in the log, and the worker not woken by it
    runs = [e for e in done if e["phase"] == "run"]
    assert len(runs) == 6 + 4
    assert all(e["started_ts"] > 0 for e in runs)
    started = {e["execution_id"] for e in porch.of("StageStarted", phase="run")}
    assert set(short) - started


def test_a_killed_runner_fails_the_task_it_ran_and_the_next_runner_runs_those_it_held(
    porch, tmp_path
):
    # given one worker whose runner runs the first of six slow partitions and holds the others
    path = _rows(tmp_path, 60, 6)
    porch.client.append(ExecutionRequested(execution_id="held", stages=["slow_part"], input_data=str(path),
                                           mode="parallel", partitions=6,
                                           config={"slow_part": {"seconds": 0.8}}))  # fmt: skip
    porch.wait(lambda seen: porch.of("StageStarted", execution_id="held", phase="run"))
    beats = porch.wait(lambda seen: [e for e in porch.of("WorkerHeartbeat") if e["queued"]])
    assert [e for e in beats if e["type"] == "WorkerHeartbeat" and e["queued"]]
    runner = _runner(porch)
    # when the runner alone is killed
    os.kill(runner.pid, signal.SIGKILL)
    # then the execution still ends completed, on a new runner
    porch.wait(lambda seen: porch.of("ExecutionCompleted", execution_id="held"), timeout=60)
    assert _runner(porch).pid != runner.pid
    (died,) = porch.of("StageFailed", execution_id="held")
    assert died["error_type"] == "RunnerDied"
    assert died["retryable"]
    # and each partition has exactly one accepted completion (the killed one's next attempt)
    ex = fold_log(porch.client).executions["held"]
    runs = {k: t for k, t in ex.tasks.items() if k[1] == "run"}
    assert len(runs) == 6
    assert all(t.status == "completed" for t in runs.values())
    accepted = Counter((e["phase"], e["partition"]) for e in porch.of("StageCompleted", execution_id="held")
                       if e["attempt"] == ex.tasks[(e["step"], e["phase"], e["partition"])].attempt)  # fmt: skip
    assert set(accepted.values()) == {1}
    # the partitions it held and had not begun ran as they were: no attempt lost to the kill
    assert sorted(t.attempt for t in runs.values()) == [1, 1, 1, 1, 1, 2]


def test_a_runner_killed_between_tasks_fails_none_of_those_it_ran(porch, tmp_path):
    # given a runner that ran a task to its end and now waits for the next
    path = _rows(tmp_path, 10, 1)
    porch.client.append(
        ExecutionRequested(execution_id="done", stages=["noop"], input_data=str(path))
    )
    porch.wait(lambda seen: porch.of("ExecutionCompleted", execution_id="done"))
    runner = _runner(porch)
    # when it is killed, and its worker starts another
    os.kill(runner.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _runner_pid(porch) in (None, runner.pid):
        assert time.monotonic() < deadline, "no new runner in 20 s"
        porch.listen(0.05)
    # then nothing it ran is failed: the task it ran last had ended
    porch.listen(1.0)
    assert porch.of("StageFailed") == []
    # and the new runner runs the next task
    porch.client.append(
        ExecutionRequested(execution_id="next", stages=["noop"], input_data=str(path))
    )
    porch.wait(lambda seen: porch.of("ExecutionCompleted", execution_id="next"))


def _runner_pid(porch: Watched) -> int | None:
    try:
        return _runner(porch).pid
    except (ValueError, psutil.Error):
        return None


def test_the_cancels_a_worker_remembers_are_bounded_the_newest_kept():
    seen = RecentIds()
    seen.add(f"ex-{n}" for n in range(CANCELS_KEPT + 500))
    assert len(seen) == CANCELS_KEPT
    assert "ex-0" not in seen
    assert f"ex-{CANCELS_KEPT + 499}" in seen
    # one cancelled again is the newest again
    seen.add(["ex-500"])
    seen.add(["ex-new"])
    assert "ex-500" in seen
    assert "ex-501" not in seen


def test_a_gated_runner_takes_no_task_until_its_worker_says_go():
    # given a runner's ledger started gated (its worker has not sent its start yet), and a task
    # waiting in its socket
    ctx = zmq.Context.instance()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        task = StageDispatched(execution_id="e1", stage="noop", step="noop", task_id="t1")
        push.send(encode(task))
        assert pull.poll(5000)
        told: list[dict] = []
        ledger = Ledger(told.append, prefetch=4, gated=True)
        refused: list[str] = []
        # when it looks at the socket, then it takes nothing and has no room
        assert not ledger.receive(pull, refused.append)
        assert not ledger.room()
        assert ledger.pop() is None
        # when the worker says go, then it takes the task, as it came
        ledger.go()
        assert ledger.room()
        assert ledger.freed.is_set()  # the intake thread, waiting for room, wakes
        assert ledger.receive(pull, refused.append)
        (taken, payload) = ledger.pop()
        assert taken["task_id"] == "t1"
        assert payload == encode(task)
        assert refused == []
    finally:
        push.close(linger=0)
        pull.close(linger=0)


def test_a_task_s_chain_is_checked_as_the_task_is_taken():
    # given a task whose chain names one good task, the next task's map as the orchestrator
    # leaves defaults out of it, and one whose chain names garbage
    nxt = to_map(StageDispatched(execution_id="e1", stage="noop", step="b", task_id="e1/b/1"))
    sparse = {k: v for k, v in nxt.items() if k not in ("config", "reuse", "then")}
    good = StageDispatched(
        execution_id="e1", stage="noop", step="a", task_id="e1/a/1", then=[sparse]
    )
    bad = StageDispatched(
        execution_id="e1", stage="noop", step="a", task_id="e1/a/1",
        then=[{**nxt, "attempt": "one"}],
    )  # fmt: skip
    # when each is checked, then the good one's chain comes back whole, the bad one is refused
    (checked,) = check_task(encode(good))["then"]
    assert checked == nxt
    with pytest.raises(MalformedEventError, match="'attempt' must be int"):
        check_task(encode(bad))
