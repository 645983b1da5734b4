"""The execution fold's state: every execution the log holds, its tasks, and the indices the
fold keeps so decisions never scan every task (the handlers are in `executions`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Final

from store.projections import plan as plans
from store.projections.plan import Phase, Plan
from store.projections.task import TaskKey

Fields = dict[str, Any]
ACTIVE: Final = frozenset({"requested", "running", "paused"})
# finished executions kept in the fold whatever their artifacts (see `ExecutionsState`)
KEEP_FINISHED: Final = 1000
FINISHED: Final = frozenset({"completed", "failed", "cancelled", "timed_out"})
MAX_EARLY: Final = 8  # events held per task until its dispatch folds (start, progress, end)


@dataclass(slots=True)
class TaskState:
    key: TaskKey
    attempt: int = 0
    status: str = "pending"  # pending | dispatched | running | completed | failed
    task_id: str = ""
    worker: str = ""
    dispatched_ts: float = 0.0
    started_ts: float = 0.0
    finished_ts: float = 0.0
    artifact: str = ""
    sha256: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    rows_in: int = 0
    rows_out: int = 0
    bytes: int = 0
    duration_s: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    reused: bool = False
    error: str = ""
    error_type: str = ""
    retryable: bool = False
    permanent: bool = False
    traceback_path: str = ""
    failures: int = 0
    lost: str = ""  # the artifact whose loss failed the current attempt (StageFailed.lost)
    reopened: int = 0  # times its completion was reopened (StageInvalidated)
    lost_inputs: int = 0  # attempts that failed because an input was lost
    progress: float = 0.0  # the last StageProgress of the current attempt: 0..1, and what
    progress_message: str = ""  # the stage said it was doing


@dataclass(slots=True)
class ExecutionState:
    execution_id: str
    status: str = "requested"
    request: Fields = field(default_factory=dict)
    plan: Plan | None = None  # from ExecutionStarted, read once
    tasks: dict[TaskKey, TaskState] = field(default_factory=dict)
    # indices kept by the fold so decisions never scan every task
    waiting: dict[TaskKey, int] = field(default_factory=dict)
    dependents: dict[TaskKey, list[TaskKey]] = field(default_factory=dict)
    ready: dict[TaskKey, None] = field(default_factory=dict)
    in_flight: set[TaskKey] = field(default_factory=set)
    failed: dict[TaskKey, None] = field(default_factory=dict)
    completed: int = 0
    requested_ts: float = 0.0
    started_ts: float = 0.0
    finished_ts: float = 0.0
    requested_seq: int = 0
    error: str = ""
    failed_stage: str = ""
    traceback_path: str = ""
    retryable: bool = True
    records_processed: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    pause_requested: bool = False
    resume_requested: bool = False
    cancel_requested: bool = False
    cancel_reason: str = ""
    cancel_timeout_s: float = 0.0
    last_seq: int = 0
    # artifacts removed (``ArtifactsRemoved``): step id -> (when, why), and the final outputs
    removed_steps: dict[str, tuple[float, str]] = field(default_factory=dict)
    outputs_removed_ts: float = 0.0
    outputs_removed_reason: str = ""
    removed_bytes: int = 0
    # task id -> its events logged before its dispatch (which is on its way: a worker may get a
    # task before its StageDispatched is durable); folded right after the dispatch
    early: dict[str, list[Fields]] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return (self.plan.mode if self.plan else "") or str(self.request.get("mode", "sequential"))

    @property
    def duration_s(self) -> float:
        if not self.started_ts:
            return 0.0
        return (self.finished_ts or self.last_ts) - self.started_ts

    last_ts: float = 0.0

    def step_summary(self) -> dict[str, dict[str, Any]]:
        """Per step: state, parts done, records in and out, seconds, attempts, worker(s)."""
        out: dict[str, dict[str, Any]] = {}
        for step in self.plan.steps if self.plan else ():
            sid = step.id
            mine = [t for k, t in self.tasks.items() if k[0] == sid and k[1] != Phase.COLLECT]
            finals = [t for t in mine if t.key[1] == plans.last_phase(step)]
            gates = [t for t in mine if t.key[1] in (Phase.APPLY, Phase.RUN, Phase.REPORT)]
            firsts = [t for t in mine if t.key[1] == step.phases[0]]
            done = sum(1 for t in finals if t.status == "completed")
            status = "pending"
            if any(t.status == "failed" for t in mine):
                status = "failed"
            elif gates and all(t.status == "completed" for t in gates):
                status = "completed"
            elif any(t.status in ("dispatched", "running", "completed") for t in mine):
                status = "running"
            started = [t.dispatched_ts for t in mine if t.dispatched_ts]
            finished = [t.finished_ts for t in gates if t.finished_ts]
            out[sid] = {
                "stage": step.stage,
                "status": status,
                "parts": step.parts,
                "parts_done": done,
                "phases": [phase.value for phase in step.phases],
                "records_in": sum(t.rows_in for t in firsts if t.status == "completed"),
                "records_out": sum(t.rows_out for t in finals if t.status == "completed"),
                "duration_s": (max(finished) - min(started))
                if status == "completed" and started and finished
                else 0.0,
                "attempts": max((t.attempt for t in mine), default=0),
                "workers": sorted({t.worker for t in mine if t.worker}),
                "reused": bool(finals) and all(t.reused for t in finals),
                "artifacts": [t.artifact for t in finals if t.status == "completed"],
                "removed": sid in self.removed_steps,
                "report": next((t.report for t in mine if t.key[1] == Phase.REPORT), None)
                or (finals[0].report if len(finals) == 1 else {}),
                "progress": _progress(mine) if status == "running" else None,
            }
        return out


def _progress(tasks: list[TaskState]) -> dict[str, Any]:
    """How far a running step is: the mean of its tasks' fractions (a completed one counts 1),
    and what the furthest running task last said it was doing."""
    done = [1.0 if t.status == "completed" else t.progress for t in tasks]
    running = [t for t in tasks if t.status == "running" and t.progress_message]
    said = max(running, key=lambda t: t.progress, default=None)
    return {
        "fraction": round(sum(done) / len(done), 3) if done else 0.0,
        "message": said.progress_message if said is not None else "",
    }


@dataclass(slots=True)
class ExecutionsState:
    """The executions the log holds, by id, and the last seq folded.

    Bounded: of the finished executions, the newest `KEEP_FINISHED` stay, and older ones stay
    only while artifacts of theirs may still be removed by retention (a step that ran whose
    artifacts no ``ArtifactsRemoved`` has covered yet). The rest are dropped (``evicted``
    counts them): the log keeps their history, and a query for one folds it from there.
    """

    last_seq: int = 0
    executions: dict[str, ExecutionState] = field(default_factory=dict)
    order: dict[str, None] = field(default_factory=dict)  # ids in request order
    finished: dict[str, int] = field(default_factory=dict)  # kept finished ones -> finish rank
    finishes: int = 0  # finish ranks handed out
    # finished executions retention is done with, by finish rank (a heap): they leave once
    # they are not among the newest KEEP_FINISHED
    settled: list[tuple[int, str]] = field(default_factory=list)
    evicted: int = 0


def latest(state: ExecutionsState) -> str | None:
    """The id of the execution requested last."""
    return next(reversed(state.order), None)


def newest(state: ExecutionsState, count: int) -> list[str]:
    """The ids of the ``count`` executions requested last, oldest first."""
    return list(itertools.islice(reversed(state.order), max(0, count)))[::-1]
