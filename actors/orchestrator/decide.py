"""The orchestrator's decisions: pure functions of the execution fold, time passed in.

Every decision is an event with an id made from what it decides (execution, task, attempt), so
a decision taken twice, before the first came back or after a restart, is one event: the hub
drops the second as a duplicate.

A task that failed because an artifact it read is lost or damaged (``StageFailed.lost``: frames
between stages are not synced, DESIGN section 5) is not retried as it is: the tasks that wrote
that artifact are reopened (``StageInvalidated``) and run again, and the reader runs once they
have. Bounded: when no task of the execution wrote it (the execution's input), or one of them
was reopened `MAX_RECOMPUTES` times already, the execution fails as any failure does. Neither the
reader's lost attempt nor the rerun of the writer counts against ``max_attempts``: neither task
did anything wrong.
"""

from __future__ import annotations

from collections.abc import Collection
from itertools import chain
from typing import Any, Final

from actors.orchestrator import chains
from actors.shared.ids import decision_id
from bus.events import (
    Event,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionTimedOut,
    StageDispatched,
    StageInvalidated,
)
from bus.schema import to_map
from bus.wire import pack
from store.projections import plan as plans
from store.projections.executions import ExecutionsState, ExecutionState, TaskState
from store.projections.plan import Phase
from store.projections.task import TaskKey, TaskSpec

MAX_RECOMPUTES: Final = 3  # times one task's completion may be reopened in an execution
FRAMED: Final = frozenset({Phase.RUN, Phase.MAP, Phase.APPLY})  # read a frame and write one


def decide(
    ex: ExecutionState,
    state: ExecutionsState,
    *,
    capacity: int,
    lease_ms: int,
    pending: Collection[TaskKey] = (),
    continued: Collection[str] = (),
) -> list[Event]:
    """What to do next for one execution. `capacity`: how many more tasks may be put in flight;
    `pending`: tasks whose dispatch was sent and has not come back yet (not decided again);
    `continued`: task ids a runner went on to by itself (their dispatch names no chain: it
    goes to no runner)."""
    eid = ex.execution_id
    if ex.status not in ("running", "paused"):
        return []
    if ex.cancel_requested:
        if ex.cancel_reason == "timeout":
            return [
                ExecutionTimedOut(
                    execution_id=eid, timeout_s=ex.cancel_timeout_s, id=decision_id(eid, "timedout")
                )
            ]
        return [
            ExecutionCancelled(
                execution_id=eid, reason=ex.cancel_reason, id=decision_id(eid, "cancelled")
            )
        ]
    if ex.status == "paused":
        if ex.resume_requested:
            return [ExecutionResumed(execution_id=eid, id=decision_id(eid, "resumed", ex.last_seq))]
        return []
    if ex.pause_requested:
        return [ExecutionPaused(execution_id=eid, id=decision_id(eid, "paused", ex.last_seq))]
    max_attempts = int(ex.request.get("max_attempts", 2))
    for key in ex.failed:
        task = ex.tasks[key]
        free = task.reopened + task.lost_inputs  # attempts that were no fault of the task's
        if task.lost and not task.permanent:
            reopen = recompute(ex, task)
            if reopen is None:
                return [_failed(ex, task)]
            if reopen:
                return reopen
            free -= 1  # nothing done is left to reopen: a plain retry, counted, so no loop
        tries = task.attempt - free
        if task.permanent or not (task.retryable and tries < max_attempts):
            return [_failed(ex, task)]
    if ex.completed == len(ex.tasks):
        return [_completed(ex)]
    if ex.mode == "sequential":
        capacity = min(capacity, 1 - len(ex.in_flight) - len(pending))
    events: list[Event] = []
    if capacity <= 0:
        return events
    # the fold's indices are insertion-ordered dicts: take from the front, never copy them all
    for key in chain(tuple(ex.failed), ex.ready):  # retries first
        if key in pending:
            continue
        attempt = ex.tasks[key].attempt + 1
        ahead = 0 if task_id(ex, key, attempt) in continued else chains.AHEAD
        events.append(dispatch(ex, state, key, attempt, lease_ms, ahead=ahead))
        capacity -= 1
        if capacity <= 0:
            break
    return events


def recompute(ex: ExecutionState, reader: TaskState) -> list[Event] | None:
    """The invalidations that bring back what `reader` found lost: of each completed task that
    wrote that file, and of every completed task on the way from it to the reader whose frame
    may point at it (passed through, or written as a delta over it: a task that reads a frame
    and writes one). None when no task of the execution wrote it, or one was reopened
    `MAX_RECOMPUTES` times already."""
    plan = ex.plan
    assert plan is not None, "a task of an execution with no plan"
    writers = [
        t.key
        for t in ex.tasks.values()
        if t.attempt and (plans.path(plan, t.key) == reader.lost or reader.lost in t.extra)
    ]
    if not writers:
        return None
    upstream = _upstream(ex, reader.key)
    between = set(writers)
    todo = list(writers)
    while todo:
        for dependent in ex.dependents.get(todo.pop(), ()):
            if dependent in upstream and dependent not in between and dependent[1] in FRAMED:
                between.add(dependent)
                todo.append(dependent)
    reopen = [ex.tasks[k] for k in plans.tasks(plan) if k in between]
    reopen = [t for t in reopen if t.status == "completed"]
    if any(t.reopened >= MAX_RECOMPUTES for t in reopen):
        return None
    return [_invalidated(ex, t, reader) for t in reopen]


def _upstream(ex: ExecutionState, key: TaskKey) -> set[TaskKey]:
    """Every task `key` depends on, directly or not."""
    assert ex.plan is not None
    seen: set[TaskKey] = set()
    todo = [key]
    while todo:
        for dep in plans.depends_on(ex.plan, todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _invalidated(ex: ExecutionState, task: TaskState, reader: TaskState) -> StageInvalidated:
    step_id, phase, part = task.key
    assert ex.plan is not None
    return StageInvalidated(
        id=decision_id(ex.execution_id, step_id, phase, part, task.attempt, "invalidated"),
        execution_id=ex.execution_id,
        stage=ex.plan.steps_by_id[step_id].stage,
        step=step_id,
        phase=phase,
        partition=part,
        attempt=task.attempt,
        artifact=reader.lost,
        reason=reader.error,
        found_by=reader.task_id,
    )


def task_id(ex: ExecutionState, key: TaskKey, attempt: int) -> str:
    assert ex.plan is not None, "a task of an execution with no plan"
    return f"{ex.execution_id}/{plans.task_name(key)}/{attempt}"


def dispatch(
    ex: ExecutionState,
    state: ExecutionsState,
    key: TaskKey,
    attempt: int,
    lease_ms: int,
    *,
    ahead: int = 0,
) -> StageDispatched:
    """The dispatch of a task, naming up to ``ahead`` tasks that follow it (`chains`), each as
    its own dispatch will be once the one before completed (but for that one's actual
    artifact, which the runner fills in: `task.follow_on`)."""
    plan = ex.plan
    assert plan is not None, "a task of an execution with no plan"
    step_id, phase, part = key
    step = plan.steps_by_id[step_id]
    fingerprint = plan.fingerprints[plans.task_name(key)]
    from_source = step.source == plans.SOURCE and phase in (Phase.RUN, Phase.MAP)
    # read what upstream tasks actually wrote: a stage that passed its input through points
    # at that input's artifact instead of a copy
    actual: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for dep in plans.depends_on(plan, key):
        done = ex.tasks.get(dep)
        if done is not None and done.artifact:
            actual[plans.path(plan, dep)] = done.artifact
            hashes[done.artifact] = done.sha256
    inputs = [actual.get(p, p) for p in plans.inputs(plan, key)]
    spec = TaskSpec(
        kind=step.kind,
        input_path=plan.input["path"] if from_source else None,
        row_groups=plans.row_groups(plan, key) if from_source else None,
        columns=list(step.columns) if phase == Phase.RUN and step.columns is not None else None,
        partial=plans.partial_path(plan, step_id, part) if phase == Phase.MAP else None,
        report_part=plans.report_path(plan, step_id, part) if phase == Phase.APPLY else None,
        # the frames a task reads, by hash: to check one written before a restart, to name a
        # delta's base, and for a pass-through stage's output (its input)
        input_sha256=(
            {p: hashes[p] for p in inputs if p in hashes}
            if phase in (Phase.RUN, Phase.MAP, Phase.APPLY, Phase.COLLECT)
            else None
        ),
        # a frame written again because it was lost is synced: each is recomputed at most
        # once however often the machine loses power (frames between stages are not, else)
        durable=True if ex.tasks[key].reopened else None,
    )
    return StageDispatched(
        id=decision_id(ex.execution_id, step_id, phase, part, attempt, "dispatch"),
        execution_id=ex.execution_id,
        stage=step.stage,
        task_id=task_id(ex, key, attempt),
        partition=part,
        partitions=step.parts,
        attempt=attempt,
        lease_ms=lease_ms,
        inputs=inputs,
        step=step_id,
        phase=phase,
        config=step.config,
        output=plans.path(plan, key),
        reuse=_reuse(ex, state, fingerprint),
        fingerprint=fingerprint,
        spec=spec.to_map(),
        then=_chain(ex, state, key, ahead, lease_ms),
    )


def _chain(
    ex: ExecutionState, state: ExecutionsState, key: TaskKey, ahead: int, lease_ms: int
) -> list[dict[str, Any]]:
    """The dispatches of the tasks that follow ``key`` (`chains.following`), as many as fit in
    `chains.MAX_BYTES`: a stage config of any size never makes a dispatch too big to log."""
    then: list[dict[str, Any]] = []
    size = 0
    for nxt in chains.following(ex, key, ahead):
        template = to_map(dispatch(ex, state, nxt, 1, lease_ms))
        size += len(pack(template))
        if size > chains.MAX_BYTES:
            break
        then.append(template)
    return then


def _reuse(ex: ExecutionState, state: ExecutionsState, fingerprint: str) -> dict[str, Any]:
    """The earlier execution's completed task with the same fingerprint, if resuming."""
    earlier_id = ex.request.get("resume_from")
    earlier = state.executions.get(earlier_id) if earlier_id else None
    if earlier is None or not earlier.plan:
        return {}
    names = {v: k for k, v in earlier.plan.fingerprints.items()}
    name = names.get(fingerprint)
    if name is None:
        return {}
    step_id, phase, part = name.rsplit(":", 2)
    old = earlier.tasks.get((step_id, phase, int(part)))
    if old is None or old.status != "completed":
        return {}
    return {
        "artifact": old.artifact,
        "sha256": old.sha256,
        "extra": dict(old.extra),
        "bytes": old.bytes,
        "rows_in": old.rows_in,
        "rows_out": old.rows_out,
        "report": old.report,
    }


def _failed(ex: ExecutionState, task: TaskState) -> ExecutionFailed:
    step_id, phase, part = task.key
    where = f"stage {step_id!r}" + (f" ({phase}, part {part})" if phase != Phase.RUN else "")
    tries = f" after {task.attempt} attempts" if task.attempt > 1 else ""
    recomputed = max((t.reopened for t in ex.tasks.values()), default=0) if task.lost else 0
    if recomputed:
        tries += f" (what it read was recomputed {recomputed} times)"
    return ExecutionFailed(
        id=decision_id(ex.execution_id, "failed"),
        execution_id=ex.execution_id,
        error=f"{where} failed{tries}: {task.error}",
        stage=step_id,
        traceback_path=task.traceback_path,
        retryable=not task.permanent,
    )


def _completed(ex: ExecutionState) -> ExecutionCompleted:
    outputs: dict[str, Any] = {}
    for step_id in ex.plan.outputs if ex.plan else ():
        task = ex.tasks[(step_id, Phase.COLLECT, 0)]
        outputs[step_id] = {"path": task.artifact, "rows": task.rows_out, "bytes": task.bytes}
    finished = max((t.finished_ts for t in ex.tasks.values()), default=ex.started_ts)
    return ExecutionCompleted(
        id=decision_id(ex.execution_id, "completed"),
        execution_id=ex.execution_id,
        records_processed=ex.records_processed,
        duration_s=max(0.0, finished - ex.started_ts),
        outputs=outputs,
    )


def refused(execution_id: str, reason: str) -> ExecutionFailed:
    return ExecutionFailed(
        id=decision_id(execution_id, "refused"),
        execution_id=execution_id,
        error=f"refused: {reason}",
    )
