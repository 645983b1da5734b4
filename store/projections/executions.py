"""The execution fold: events -> every execution's status and the state of each of its tasks.

Pure and in place, on plain decoded maps (a dict of handlers keyed by type), like the summary
fold. Attempts decide what counts: a task's state follows only its current attempt, so a late
result of a superseded attempt changes nothing, and a record is never counted twice.

A completion can be reopened (``StageInvalidated``: an artifact it wrote was found lost or
damaged): the task goes back to pending with its attempt kept, its completion stops counting
(completed tasks, records processed), its dependents wait for it again (a failed one back to
pending), and its next dispatch is a new attempt, whose completion is then the accepted one.
So each task has at most one accepted completion at any seq.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgpack

from store.projections import plan as plans
from store.projections.execstate import (
    ACTIVE,
    FINISHED,
    KEEP_FINISHED,
    MAX_EARLY,
    ExecutionsState,
    ExecutionState,
    Fields,
    TaskState,
)
from store.projections.plan import Phase, Plan
from store.statecodec import StateCodec, paused_gc


def _get(state: ExecutionsState, fields: Fields) -> ExecutionState | None:
    return state.executions.get(fields.get("execution_id", ""))


def _task(ex: ExecutionState, fields: Fields) -> TaskState | None:
    key = (
        fields["step"],
        fields.get("phase", Phase.RUN.value),
        fields.get("partition", 0),
    )
    return ex.tasks.get(key)


def _requested(seq: int, fields: Fields, state: ExecutionsState) -> None:
    eid = fields["execution_id"]
    if eid in state.executions:
        return  # a second request with the same id changes nothing
    state.executions[eid] = ExecutionState(
        execution_id=eid, request=fields, requested_ts=fields["ts"], requested_seq=seq
    )
    state.order[eid] = None


def _started(seq: int, fields: Fields, state: ExecutionsState) -> None:
    ex = _get(state, fields)
    if ex is None or ex.status != "requested":
        return
    raw = fields.get("plan")
    plan = Plan.of(raw) if raw else None  # its one reading: a bad plan changes nothing
    ex.status = "running"
    ex.started_ts = fields["ts"]
    ex.plan = plan
    ex.records_processed = 0
    ex.tasks = {}
    if plan is None:
        return
    ex.tasks = {key: TaskState(key=key) for key in plans.tasks(plan)}
    for key in ex.tasks:
        deps = plans.depends_on(plan, key)
        ex.waiting[key] = len(deps)
        for dep in deps:
            ex.dependents.setdefault(dep, []).append(key)
        if not deps:
            ex.ready[key] = None


def _dispatched(seq: int, fields: Fields, state: ExecutionsState) -> None:
    ex = _get(state, fields)
    task = _task(ex, fields) if ex is not None else None
    if task is None:
        return
    assert ex is not None
    early = ex.early.pop(fields["task_id"], ()) if ex.early else ()
    if fields["attempt"] <= task.attempt or task.status == "completed":
        return
    task.attempt = fields["attempt"]
    task.status = "dispatched"
    assert ex is not None
    ex.ready.pop(task.key, None)
    ex.failed.pop(task.key, None)
    ex.in_flight.add(task.key)
    task.task_id = fields["task_id"]
    task.dispatched_ts = fields["ts"]
    task.worker = ""
    task.error = task.error_type = task.traceback_path = task.lost = ""
    task.report = {}
    task.progress, task.progress_message = 0.0, ""
    for held in early:  # what its worker said before the dispatch was in the log
        HANDLERS[held["type"]](seq, held, state)


def _early(fields: Fields, state: ExecutionsState) -> bool:
    """Hold an event of a task attempt newer than the fold knows: its dispatch is on its way
    (the worker was handed the task as the dispatch was sent) and folds it when it comes. Of
    several progress reports only the last is kept, as the fold keeps only the last."""
    ex = _get(state, fields)
    task = _task(ex, fields) if ex is not None else None
    if task is None or fields.get("attempt", 1) <= task.attempt or task.status == "completed":
        return False
    assert ex is not None
    if ex.status not in ACTIVE:
        return False
    held = ex.early.setdefault(str(fields.get("task_id", "")), [])
    if held and fields["type"] == "StageProgress" and held[-1]["type"] == "StageProgress":
        held[-1] = fields
    elif len(held) < MAX_EARLY:
        held.append(fields)
    return True


def _current(fields: Fields, state: ExecutionsState) -> TaskState | None:
    ex = _get(state, fields)
    task = _task(ex, fields) if ex is not None else None
    if task is None or fields.get("attempt", 1) != task.attempt:
        return None  # not dispatched, or a superseded attempt
    return task


def _stage_started(seq: int, fields: Fields, state: ExecutionsState) -> None:
    if _early(fields, state):
        return
    task = _current(fields, state)
    if task is not None and task.status == "dispatched":
        task.status = "running"
        task.worker = fields["worker"]
        task.started_ts = fields["ts"]


def _stage_progress(seq: int, fields: Fields, state: ExecutionsState) -> None:
    if _early(fields, state):
        return
    task = _current(fields, state)
    if task is not None and task.status in ("dispatched", "running"):
        task.progress = float(fields["fraction"])
        task.progress_message = str(fields.get("message", ""))


def _stage_completed(seq: int, fields: Fields, state: ExecutionsState) -> None:
    if _early(fields, state):
        return
    task = _current(fields, state)
    if task is None or task.status not in ("dispatched", "running"):
        return
    if task.status == "dispatched" and fields.get("started_ts"):  # no StageStarted of its own
        task.started_ts = fields["started_ts"]
    task.status = "completed"
    ex = _get(state, fields)
    assert ex is not None
    ex.in_flight.discard(task.key)
    ex.completed += 1
    for dependent in ex.dependents.get(task.key, ()):
        ex.waiting[dependent] -= 1
        if ex.waiting[dependent] == 0 and ex.tasks[dependent].status == "pending":
            ex.ready[dependent] = None
    task.worker = fields["worker"]
    task.finished_ts = fields["ts"]
    task.artifact = fields["artifact"]
    task.sha256 = fields["sha256"]
    task.extra = dict(fields.get("extra", {}))
    task.rows_in = fields["rows_in"]
    task.rows_out = fields["rows_out"]
    task.bytes = fields["bytes"]
    task.duration_s = fields["duration_s"]
    task.report = fields.get("report", {})
    task.reused = bool(fields.get("reused", False))
    step = ex.plan.steps_by_id.get(task.key[0]) if ex.plan else None
    if step is not None and step.source == plans.SOURCE and task.key[1] == step.phases[0]:
        ex.records_processed += task.rows_in


def _stage_failed(seq: int, fields: Fields, state: ExecutionsState) -> None:
    if _early(fields, state):
        return
    task = _current(fields, state)
    if task is None or task.status not in ("dispatched", "running"):
        return
    ex = _get(state, fields)
    assert ex is not None
    ex.in_flight.discard(task.key)
    task.lost = str(fields.get("lost", ""))
    if task.lost:
        task.lost_inputs += 1
    if task.lost and ex.waiting.get(task.key, 0) > 0 and not fields.get("permanent"):
        # what it read is being recomputed already: it waits for it, as after an invalidation
        task.status = "pending"
    else:
        task.status = "failed"
        ex.failed[task.key] = None
    task.worker = fields["worker"]
    task.finished_ts = fields["ts"]
    task.error = fields["error"]
    task.error_type = fields.get("error_type", "")
    task.retryable = bool(fields.get("retryable", False))
    task.permanent = bool(fields.get("permanent", False))
    task.traceback_path = fields.get("traceback_path", "")
    task.report = fields.get("report", {})  # what the stage found before it failed
    task.failures += 1


def _stage_invalidated(seq: int, fields: Fields, state: ExecutionsState) -> None:
    """Reopen a completion (of the attempt named, of an active execution): see the module
    docstring. A late or repeated invalidation of an attempt no longer accepted changes nothing."""
    ex = _get(state, fields)
    task = _task(ex, fields) if ex is not None else None
    if task is None or task.status != "completed" or fields["attempt"] != task.attempt:
        return
    assert ex is not None
    if ex.status not in ACTIVE:
        return
    task.status = "pending"
    task.reopened += 1
    ex.completed -= 1
    step = ex.plan.steps_by_id.get(task.key[0]) if ex.plan else None
    if step is not None and step.source == plans.SOURCE and task.key[1] == step.phases[0]:
        ex.records_processed -= task.rows_in  # counted again when it completes again
    for dependent in ex.dependents.get(task.key, ()):
        ex.waiting[dependent] += 1
        ex.ready.pop(dependent, None)
        waiter = ex.tasks[dependent]
        if waiter.status == "failed" and not waiter.permanent:
            waiter.status = "pending"  # it runs again once what it reads is back
            ex.failed.pop(dependent, None)
    if ex.waiting.get(task.key, 0) == 0:
        ex.ready[task.key] = None


def _flag(name: str, value: bool) -> Callable[[int, Fields, ExecutionsState], None]:
    def handle(seq: int, fields: Fields, state: ExecutionsState) -> None:
        ex = _get(state, fields)
        if ex is not None and ex.status in ACTIVE:
            setattr(ex, name, value)
            if name == "cancel_requested":
                ex.cancel_reason = fields.get("reason", "")
                ex.cancel_timeout_s = float(fields.get("timeout_s", 0.0))

    return handle


def _paused(seq: int, fields: Fields, state: ExecutionsState) -> None:
    ex = _get(state, fields)
    if ex is not None and ex.status == "running":
        ex.status = "paused"
        ex.pause_requested = False


def _resumed(seq: int, fields: Fields, state: ExecutionsState) -> None:
    ex = _get(state, fields)
    if ex is not None and ex.status == "paused":
        ex.status = "running"
    if ex is not None:
        ex.resume_requested = False
        ex.pause_requested = False


def _finished(status: str) -> Callable[[int, Fields, ExecutionsState], None]:
    def handle(seq: int, fields: Fields, state: ExecutionsState) -> None:
        ex = _get(state, fields)
        if ex is None and status == "failed" and isinstance(fields.get("execution_id"), str):
            # refused before it was requested (the scheduler's admission): still an execution
            # that ended, so status and waiting on it work
            eid = fields["execution_id"]
            ex = state.executions[eid] = ExecutionState(
                execution_id=eid, requested_ts=fields["ts"], requested_seq=seq
            )
            state.order[eid] = None
        if ex is None or ex.status in FINISHED:
            return
        ex.status = status
        ex.finished_ts = fields["ts"]
        ex.early.clear()  # held for dispatches that never came: they never will now
        if status == "completed":
            ex.outputs = dict(fields.get("outputs", {}))
            ex.records_processed = fields.get("records_processed", ex.records_processed)
        elif status == "failed":
            ex.error = fields.get("error", "")
            ex.failed_stage = fields.get("stage", "")
            ex.traceback_path = fields.get("traceback_path", "")
            ex.retryable = bool(fields.get("retryable", True))
        elif status == "cancelled":
            ex.error = fields.get("reason", "") or "cancelled"
        elif status == "timed_out":
            ex.error = f"timed out after {fields.get('timeout_s', 0)} s"
        state.finished[ex.execution_id] = state.finishes
        state.finishes += 1
        if _settled(ex):
            heapq.heappush(state.settled, (state.finished[ex.execution_id], ex.execution_id))
        _evict(state)

    return handle


def _settled(ex: ExecutionState) -> bool:
    """Nothing of it is left for retention to remove but its final outputs: every step that
    ran has had its artifacts removed (or none ran)."""
    ran = {key[0] for key, task in ex.tasks.items() if task.attempt and key[1] != Phase.COLLECT}
    return ran <= ex.removed_steps.keys()


def _evict(state: ExecutionsState) -> None:
    """Drop the settled finished executions that are not among the newest `KEEP_FINISHED`."""
    cutoff = state.finishes - KEEP_FINISHED
    settled = state.settled
    while settled and settled[0][0] < cutoff:
        rank, eid = heapq.heappop(settled)
        if state.finished.get(eid) != rank:
            continue
        del state.finished[eid]
        state.executions.pop(eid, None)  # absent only in a state loaded in part
        state.order.pop(eid, None)
        state.evicted += 1


def _artifacts_removed(seq: int, fields: Fields, state: ExecutionsState) -> None:
    """Files of a finished execution are gone: only steps of its plan count (the deletions
    follow this record, never the event's raw names), and never of an active execution."""
    ex = _get(state, fields)
    if ex is None or ex.status not in FINISHED or not ex.plan:
        return
    known = ex.plan.steps_by_id
    was_settled = _settled(ex)
    when, why = float(fields["ts"]), str(fields.get("reason", ""))
    new = False
    for step in fields.get("steps", []):
        if isinstance(step, str) and step in known and step not in ex.removed_steps:
            ex.removed_steps[step] = (when, why)
            new = True
    if fields.get("finals") and not ex.outputs_removed_ts:
        ex.outputs_removed_ts, ex.outputs_removed_reason = when, why
        new = True
    if new:
        ex.removed_bytes += int(fields.get("bytes", 0))
        rank = state.finished.get(ex.execution_id)
        if rank is not None and not was_settled and _settled(ex):
            heapq.heappush(state.settled, (rank, ex.execution_id))
            _evict(state)


HANDLERS: Final[dict[str, Callable[[int, Fields, ExecutionsState], None]]] = {
    "ExecutionRequested": _requested,
    "ExecutionStarted": _started,
    "StageDispatched": _dispatched,
    "StageStarted": _stage_started,
    "StageProgress": _stage_progress,
    "StageCompleted": _stage_completed,
    "StageFailed": _stage_failed,
    "StageInvalidated": _stage_invalidated,
    "PauseRequested": _flag("pause_requested", True),
    "ResumeRequested": _flag("resume_requested", True),
    "CancelRequested": _flag("cancel_requested", True),
    "ExecutionPaused": _paused,
    "ExecutionResumed": _resumed,
    "ExecutionCompleted": _finished("completed"),
    "ExecutionFailed": _finished("failed"),
    "ExecutionCancelled": _finished("cancelled"),
    "ExecutionTimedOut": _finished("timed_out"),
    "ArtifactsRemoved": _artifacts_removed,
}
TYPES: Final = frozenset(HANDLERS)


def evolve(seq: int, fields: Fields, state: ExecutionsState) -> ExecutionsState:
    """Fold one event; events must come in seq order."""
    if seq <= state.last_seq:
        raise ValueError(f"execution fold: seq {seq} arrived after {state.last_seq}")
    state.last_seq = seq
    handler = HANDLERS.get(fields["type"])
    if handler is not None:
        handler(seq, fields, state)
        ex = state.executions.get(fields.get("execution_id", ""))
        if ex is not None:
            ex.last_seq = seq
            ex.last_ts = max(ex.last_ts, float(fields.get("ts", 0.0)))
    return state


def fold(
    records: Iterable[tuple[int, Fields]], state: ExecutionsState | None = None
) -> ExecutionsState:
    state = ExecutionsState() if state is None else state
    for seq, fields in records:
        evolve(seq, fields, state)
    return state


# bump when a handler changes what it makes of the same events (the shape is hashed by itself)
FOLD_VERSION: Final = 8  # 5: a failed task keeps its report; 6: the last progress;
# 7: a task's events logged before its dispatch wait for it; 8: a completion can be reopened
# the plan is written as the event carried it, and read back through its door
CODEC: Final = StateCodec(ExecutionsState, fold_version=FOLD_VERSION, as_maps=[Plan])


# --- snapshots read in part -------------------------------------------------------------------
# A snapshot of this fold keeps each execution as its own packed blob, so a query that needs a
# few executions (``porch status ID``, the newest N of ``porch history``) decodes only those, and
# a snapshot of thousands of executions costs a query milliseconds, not a second.

EXECUTION_CODEC: Final = StateCodec(ExecutionState, fold_version=FOLD_VERSION, as_maps=[Plan])
LAZY_VERSION: Final = f"lazy2+{CODEC.version}"


def step_rows(ex: ExecutionState) -> list[list[Any]]:
    """Per step: stage, status, seconds, records in: what `porch stats` counts."""
    return [
        [step["stage"], step["status"], step["duration_s"], step["records_in"]]
        for step in ex.step_summary().values()
    ]


def dump_lazy(state: ExecutionsState) -> dict[str, Any]:
    """The state as a snapshot body: the bookkeeping, one msgpack blob per execution, and each
    execution's `step_rows` (statistics over thousands need no blob decoded)."""
    return {
        "rows": {eid: step_rows(ex) for eid, ex in state.executions.items()},
        "last_seq": state.last_seq,
        "order": list(state.order),
        "finished": [[eid, rank] for eid, rank in state.finished.items()],
        "finishes": state.finishes,
        "settled": [list(item) for item in state.settled],
        "evicted": state.evicted,
        "blobs": {
            eid: msgpack.packb(EXECUTION_CODEC.dump(ex), use_bin_type=True)
            for eid, ex in state.executions.items()
        },
    }


def load_lazy(body: dict[str, Any], wanted: Iterable[str] | None = None) -> ExecutionsState:
    """A state from `dump_lazy`'s body: every execution, or only those in ``wanted`` (then the
    state is partial: good for answering about them, not for folding on and saving)."""
    blobs: dict[str, bytes] = body["blobs"]
    ids = blobs if wanted is None else [e for e in dict.fromkeys(wanted) if e in blobs]
    with paused_gc():
        executions = {
            eid: EXECUTION_CODEC.load(msgpack.unpackb(blobs[eid], strict_map_key=False))
            for eid in ids
        }
    return ExecutionsState(
        last_seq=int(body["last_seq"]),
        executions=executions,
        order=dict.fromkeys(str(e) for e in body["order"]),
        finished={str(eid): int(rank) for eid, rank in body["finished"]},
        finishes=int(body["finishes"]),
        settled=[(int(rank), str(eid)) for rank, eid in body["settled"]],
        evicted=int(body["evicted"]),
    )
