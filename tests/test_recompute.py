"""A lost or damaged intermediate costs a recomputation, never a failed execution: the execution
fold reopens a completion on ``StageInvalidated``, the orchestrator's core decides it on a
``StageFailed`` that names a lost input, and a snapshot taken anywhere folds on the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.orchestrator.decide import MAX_RECOMPUTES
from bus.events import (
    ExecutionRequested,
    ExecutionStarted,
    StageCompleted,
    StageDispatched,
    StageFailed,
    StageInvalidated,
)
from bus.schema import to_map
from store.projections import executions as folds
from store.projections import metrics
from store.projections import plan as plans
from tests.stagedata import write_sample
from tests.test_orchestrator_core import Orchestrated, _task_fields, request
from tests.test_snapshots import EVENTS, FOLDS, fold_all, plain, through_disk

PLAN = plans.make_plan(
    execution_id="e1",
    mode="sequential",
    steps=[
        {"id": "clean", "stage": "data_cleaning", "source": plans.SOURCE},
        {"id": "valid", "stage": "data_validation", "source": "clean"},
    ],
    kinds={"clean": "row_local", "valid": "row_local"},
    columns={},
    input_info={"path": "/in.parquet"},
    parts=[[0, 1]],
    directory="/ck/e1",
    outputs=["valid"],
)
CLEAN = ("clean", "run", 0)
VALID = ("valid", "run", 0)
COLLECT = ("valid", "collect", 0)
LOST = plans.path(PLAN, CLEAN)


def _ref(key: tuple[str, str, int], attempt: int) -> dict[str, Any]:
    step, phase, part = key
    return {"execution_id": "e1", "stage": PLAN.steps_by_id[step].stage, "step": step,
            "phase": phase, "partition": part, "attempt": attempt,
            "task_id": f"e1/{plans.task_name(key)}/{attempt}"}  # fmt: skip


def dispatched(key, attempt):
    ref = _ref(key, attempt)
    return StageDispatched(**ref, partitions=1, lease_ms=1000, inputs=plans.inputs(PLAN, key),
                           output=plans.path(PLAN, key))  # fmt: skip


def completed(key, attempt, rows=100):
    return StageCompleted(**_ref(key, attempt), worker="w1", artifact=plans.path(PLAN, key),
                          rows_in=rows, rows_out=rows, bytes=10, sha256=f"sha-{attempt}",
                          duration_s=0.1)  # fmt: skip


def lost_input(key, attempt):
    return StageFailed(**_ref(key, attempt), worker="w1", error=f"artifact {LOST!r} is damaged",
                       error_type="ArtifactLostError", retryable=True, lost=LOST)  # fmt: skip


def invalidated(key, attempt):
    return StageInvalidated(**{k: v for k, v in _ref(key, attempt).items() if k != "task_id"},
                            artifact=LOST, reason="damaged",
                            found_by=_ref(VALID, 1)["task_id"])  # fmt: skip


START = [
    ExecutionRequested(execution_id="e1", stages=["data_cleaning", "data_validation"],
                       input_data="/in.parquet"),
    ExecutionStarted(execution_id="e1", mode="sequential", plan=PLAN.to_map()),
]  # fmt: skip


def fold(events) -> folds.ExecutionState:
    state = folds.fold((seq, to_map(e)) for seq, e in enumerate(events, start=1))
    return state.executions["e1"]


def statuses(ex: folds.ExecutionState) -> tuple[str, str, str]:
    return tuple(ex.tasks[k].status for k in (CLEAN, VALID, COLLECT))


# (events after the start, the tasks' statuses, completed count, records, ready tasks)
TABLE = [
    ([dispatched(CLEAN, 1), completed(CLEAN, 1)],
     ("completed", "pending", "pending"), 1, 100, [VALID]),
    ([dispatched(CLEAN, 1), completed(CLEAN, 1), dispatched(VALID, 1), lost_input(VALID, 1)],
     ("completed", "failed", "pending"), 1, 100, []),
    # the invalidation reopens the producer and sends the failed reader back to waiting
    ([dispatched(CLEAN, 1), completed(CLEAN, 1), dispatched(VALID, 1), lost_input(VALID, 1),
      invalidated(CLEAN, 1)],
     ("pending", "pending", "pending"), 0, 0, [CLEAN]),
    # a late copy of the reopened attempt's completion, and a repeated invalidation, count for
    # nothing
    ([dispatched(CLEAN, 1), completed(CLEAN, 1), dispatched(VALID, 1), lost_input(VALID, 1),
      invalidated(CLEAN, 1), completed(CLEAN, 1), invalidated(CLEAN, 1)],
     ("pending", "pending", "pending"), 0, 0, [CLEAN]),
    # the producer's new attempt is the accepted completion; the reader is ready again
    ([dispatched(CLEAN, 1), completed(CLEAN, 1), dispatched(VALID, 1), lost_input(VALID, 1),
      invalidated(CLEAN, 1), dispatched(CLEAN, 2), completed(CLEAN, 2)],
     ("completed", "pending", "pending"), 1, 100, [VALID]),
    ([dispatched(CLEAN, 1), completed(CLEAN, 1), dispatched(VALID, 1), lost_input(VALID, 1),
      invalidated(CLEAN, 1), dispatched(CLEAN, 2), completed(CLEAN, 2), dispatched(VALID, 2),
      completed(VALID, 2), dispatched(COLLECT, 1), completed(COLLECT, 1)],
     ("completed", "completed", "completed"), 3, 100, []),
    # the reader fails on a lost input after the producer was reopened: it waits, not fails
    ([dispatched(CLEAN, 1), completed(CLEAN, 1), dispatched(VALID, 1), invalidated(CLEAN, 1),
      lost_input(VALID, 1)],
     ("pending", "pending", "pending"), 0, 0, [CLEAN]),
    # an invalidation of an attempt that is not the accepted one changes nothing
    ([dispatched(CLEAN, 1), completed(CLEAN, 1), invalidated(CLEAN, 2)],
     ("completed", "pending", "pending"), 1, 100, [VALID]),
]  # fmt: skip


def test_the_execution_fold_reopens_a_completion_and_counts_it_once():
    for events, want, done, records, ready in TABLE:
        ex = fold(START + events)
        got = (statuses(ex), ex.completed, ex.records_processed, list(ex.ready))
        assert got == (want, done, records, ready), [e.TYPE for e in events]
    # and the reopened task's next attempt is the one whose completion counts
    ex = fold(START + TABLE[5][0])
    assert (ex.tasks[CLEAN].attempt, ex.tasks[CLEAN].sha256, ex.tasks[CLEAN].reopened) == (
        2,
        "sha-2",
        1,
    )
    assert (ex.tasks[VALID].attempt, ex.tasks[VALID].lost_inputs) == (2, 1)
    assert ex.step_summary()["valid"]["status"] == "completed"


# --- snapshots: fold(snapshot(fold(prefix)), rest) == fold(log) with invalidations in it -----

COMPLETIONS = [i for i, (_, f) in enumerate(EVENTS) if f["type"] == "StageCompleted"]


def with_recomputes(chosen: set[int]) -> list[tuple[int, dict]]:
    """The golden log with each chosen completion reopened right after it, then dispatched and
    completed again as the next attempt (and the reopening repeated, which changes nothing)."""
    out: list[dict] = []
    for index, (_, fields) in enumerate(EVENTS):
        out.append(fields)
        if index not in chosen:
            continue
        attempt = fields["attempt"]
        ref = {k: fields[k] for k in ("execution_id", "stage", "step", "phase", "partition")}
        again = {**ref, "attempt": attempt + 1, "task_id": f"{fields['task_id']}+r"}
        reopen = to_map(StageInvalidated(**ref, attempt=attempt, artifact=fields["artifact"],
                                         reason="damaged", ts=fields["ts"]))  # fmt: skip
        out += [
            reopen,
            {**reopen, "id": f"{reopen['id']}-again"},
            to_map(StageDispatched(**again, partitions=1, lease_ms=1000, inputs=[],
                                   output=fields["artifact"], ts=fields["ts"])),
            {**fields, **again, "id": f"{fields['id']}-again"},
        ]  # fmt: skip
    return list(enumerate(out, start=1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chosen=st.sets(st.sampled_from(COMPLETIONS), max_size=12),
    split=st.floats(0, 1),
    name=st.sampled_from(sorted(FOLDS)),
)
def test_a_log_with_reopened_completions_resumes_from_any_snapshot_to_the_same_state(
    chosen, split, name
):
    # given the golden log with some completions reopened and run again
    module, make = FOLDS[name]
    log = with_recomputes(chosen)
    cut = int(split * len(log))
    # when it is folded whole, and through a snapshot taken after `cut` events
    whole = fold_all(module, make(), log)
    resumed = fold_all(module, through_disk(module, fold_all(module, make(), log[:cut])), log[cut:])
    # then both give the same state
    assert plain(module, resumed) == plain(module, whole)


def test_a_recomputed_completion_leaves_every_execution_as_the_log_without_it_does():
    # given every completion of the golden log reopened and completed again
    plain_state = fold_all(folds, folds.ExecutionsState(), EVENTS)
    again = fold_all(folds, folds.ExecutionsState(), with_recomputes(set(COMPLETIONS)))
    # then every execution ends as it did, its records counted once
    for eid, ex in plain_state.executions.items():
        other = again.executions[eid]
        assert (other.status, other.completed, other.records_processed) == (
            ex.status,
            ex.completed,
            ex.records_processed,
        ), eid
    # and the metrics count each step's run once, whatever ran again
    runs = {}
    for log in (EVENTS, with_recomputes(set(COMPLETIONS))):
        state = fold_all(metrics, FOLDS["metrics"][1](), log)
        runs[len(runs)] = {
            key: series.count
            for key, series in state.series.items()
            if key[0] in ("stage_duration_seconds", "records_per_second")
        }
    assert runs[0]
    assert runs[1] == runs[0]


# --- the orchestrator's core ------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("input") / "in.parquet", 1000, 4, 250)


def _lost(o: Orchestrated, task: dict[str, Any], path: str) -> None:
    o.emit(StageFailed(**_task_fields(task), worker="w1", error=f"artifact {path!r} is missing",
                       error_type="ArtifactLostError", retryable=True, lost=path))  # fmt: skip


def _two_stages(tmp_path: Path, source: Path, **extra: Any) -> tuple[Orchestrated, dict, dict]:
    """An execution of two stages whose producer has completed and whose reader is pushed."""
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source, stages=["data_cleaning", "data_validation"], **extra))
    o.settle()
    (producer,) = o.push()
    o.start(producer)
    o.complete(producer)
    o.settle()
    (reader,) = o.push()
    o.start(reader)
    return o, producer, reader


def test_the_core_recomputes_a_lost_input_s_producer_then_reruns_the_reader(tmp_path, source):
    # given a reader that found its input lost, in an execution that allows no retry
    o, producer, reader = _two_stages(tmp_path, source, max_attempts=1)
    _lost(o, reader, producer["output"])
    o.settle()
    # then the producer's completion is reopened, in the log, and it is dispatched again
    (reopened,) = o.hub.of("StageInvalidated")
    assert (reopened["step"], reopened["attempt"], reopened["artifact"]) == (
        producer["step"],
        1,
        producer["output"],
    )
    assert reopened["found_by"] == reader["task_id"]
    (again,) = o.push()
    assert (again["step"], again["attempt"]) == (producer["step"], 2)
    # written durable this time (synced: another crash cannot lose it), as the first was not
    assert again["spec"].get("durable") is True
    assert "durable" not in producer["spec"]
    assert o.push() == []  # the reader waits for it
    o.start(again)
    o.complete(again)
    o.settle()
    # and the reader runs again, its lost attempt not counted as a retry
    (rerun,) = o.push()
    assert (rerun["step"], rerun["attempt"]) == (reader["step"], 2)
    o.start(rerun)
    o.complete(rerun)
    o.run_all()
    assert o.status("e1") == "completed"
    assert o.hub.of("ExecutionFailed") == []
    assert o.core.state.executions["e1"].records_processed == 10


def test_a_lost_file_no_task_wrote_fails_the_execution_as_any_failure(tmp_path, source):
    o, _, reader = _two_stages(tmp_path, source)
    _lost(o, reader, str(source))
    o.settle()
    assert o.hub.of("StageInvalidated") == []
    assert o.status("e1") == "failed"
    assert "is missing" in o.hub.of("ExecutionFailed")[0]["error"]


def test_recomputing_the_same_producer_is_bounded(tmp_path, source):
    # given a producer whose output is lost each time its reader reads it
    o, producer, reader = _two_stages(tmp_path, source)
    for _ in range(MAX_RECOMPUTES + 1):
        _lost(o, reader, producer["output"])
        o.settle()
        if o.status("e1") != "running":
            break
        (producer,) = o.push()
        o.start(producer)
        o.complete(producer)
        o.settle()
        (reader,) = o.push()
        o.start(reader)
    # then after MAX_RECOMPUTES reopenings the execution fails, with the reason, and no loop
    assert len(o.hub.of("StageInvalidated")) == MAX_RECOMPUTES
    assert o.status("e1") == "failed"
    error = o.hub.of("ExecutionFailed")[0]["error"]
    assert f"recomputed {MAX_RECOMPUTES} times" in error


def test_a_lost_delta_base_reopens_its_writer_and_every_frame_over_it(tmp_path, source):
    # given three stages run in turn, the second's frame written as a delta over the first's
    o = Orchestrated(tmp_path)
    o.join("w1")
    o.emit(request(source, stages=["data_cleaning", "feature_engineering", "data_validation"]))
    o.settle()
    done = []
    for _ in range(2):
        (task,) = o.push()
        o.start(task)
        o.complete(task)
        o.settle()
        done.append(task)
    (reader,) = o.push()
    o.start(reader)
    # when the third finds the first's frame (the delta's base) lost
    _lost(o, reader, done[0]["output"])
    o.settle()
    # then both completions are reopened, and the two run again in order before the reader
    reopened = [(e["step"], e["attempt"]) for e in o.hub.of("StageInvalidated")]
    assert reopened == [(done[0]["step"], 1), (done[1]["step"], 1)]
    order = []
    while tasks := o.push():
        (task,) = tasks
        order.append((task["step"], task["attempt"]))
        o.start(task)
        o.complete(task)
        o.settle()
    assert order[:3] == [(done[0]["step"], 2), (done[1]["step"], 2), (reader["step"], 2)]
    assert o.status("e1") == "completed"
