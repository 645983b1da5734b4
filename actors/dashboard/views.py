"""What the dashboard's pages show, as plain data: a page of executions, one execution with its
DAG, the timeline of its tasks, and its state at any seq (as `porch replay --state` folds it).

Everything here is read from the execution fold (`store.projections.executions`) or from the
execution's own events in the log (as `histories` keeps them for the pages).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from actors.api.door import stages_of
from actors.read.executions import execution_view
from store.projections import executions as folds
from store.projections.plan import SOURCE

PER_PAGE_MAX: Final = 200
STATUSES: Final = (
    "requested",
    "running",
    "paused",
    "completed",
    "failed",
    "cancelled",
    "timed_out",
)
TASK_TYPES: Final = frozenset({"StageDispatched", "StageStarted", "StageCompleted", "StageFailed"})
MARK_TYPES: Final = frozenset(
    {"PauseRequested", "ExecutionPaused", "ResumeRequested", "ExecutionResumed",
     "CancelRequested", "ExecutionCancelled", "ExecutionStarted", "ExecutionCompleted",
     "ExecutionFailed", "ExecutionTimedOut", "StageInvalidated"}
)  # fmt: skip
Fields = dict[str, Any]


def pipeline_of(request: Fields) -> str:
    return str(request.get("pipeline") or "") or " → ".join(stages_of(request))


def trigger_of(request: Fields) -> str:
    if request.get("schedule_id"):
        return f"schedule {request['schedule_id']}"
    if request.get("resume_from"):
        return f"resume of {request['resume_from']}"
    return "manual"


def row(ex: folds.ExecutionState) -> Fields:
    """One line of the executions list."""
    return {
        "execution_id": ex.execution_id,
        "status": ex.status,
        "pipeline": pipeline_of(ex.request),
        "mode": ex.mode,
        "started_ts": ex.started_ts or ex.requested_ts,
        "duration_s": round(ex.duration_s, 3),
        "records": ex.records_processed,
        "trigger": trigger_of(ex.request),
        "last_seq": ex.last_seq,
    }


def executions_page(
    state: folds.ExecutionsState, *, status: str, text: str, page: int, per_page: int
) -> Fields:
    """The newest executions first, those of ``status`` (any when empty) whose id, pipeline or
    trigger holds ``text``; page ``page`` (from 1) of ``per_page``."""
    by_status: dict[str, int] = {}
    chosen: list[folds.ExecutionState] = []
    needle = text.lower()
    for eid in reversed(state.order):
        ex = state.executions.get(eid)
        if ex is None:
            continue
        by_status[ex.status] = by_status.get(ex.status, 0) + 1
        if status and ex.status != status:
            continue
        if needle and not any(
            needle in part.lower()
            for part in (eid, pipeline_of(ex.request), trigger_of(ex.request))
        ):
            continue
        chosen.append(ex)
    first = (page - 1) * per_page
    return {
        "rows": [row(ex) for ex in chosen[first : first + per_page]],
        "matched": len(chosen),
        "page": page,
        "per_page": per_page,
        "by_status": by_status,
        "kept": len(state.executions),
        "evicted": state.evicted,
        "seq": state.last_seq,
    }


def detail(ex: folds.ExecutionState) -> Fields:
    """One execution: its view (as `porch status --json`), its request and its DAG."""
    view = execution_view(ex)
    steps = view["steps"]
    nodes = [{"id": SOURCE, "stage": "input", "status": "completed" if ex.plan else "pending"}]
    edges: list[list[str]] = []
    for step in ex.plan.steps if ex.plan else ():
        info = steps.get(step.id, {})
        nodes.append({
            "id": step.id, "stage": step.stage, "status": info.get("status", "pending"),
            "parts": step.parts, "reused": info.get("reused", False),
        })  # fmt: skip
        for before in dict.fromkeys((step.source, *step.after)):
            edges.append([before, step.id])
    if not ex.plan:  # not started: the stages it asked for, in order
        previous = SOURCE
        for index, stage in enumerate(stages_of(ex.request)):
            node_id = f"{index + 1}:{stage}"
            nodes.append({"id": node_id, "stage": stage, "status": "pending", "parts": 1})
            edges.append([previous, node_id])
            previous = node_id
    return {
        **view,
        "pipeline": pipeline_of(ex.request),
        "trigger": trigger_of(ex.request),
        "requested_ts": ex.requested_ts,
        "requested_seq": ex.requested_seq,
        "pause_requested": ex.pause_requested,
        "cancel_requested": ex.cancel_requested,
        "dag": {"nodes": nodes, "edges": edges},
    }


def task_key(fields: Fields) -> tuple[str, str, int, int]:
    return (
        str(fields.get("step") or fields.get("stage", "")),
        str(fields.get("phase", "run")),
        int(fields.get("partition", 0)),
        int(fields.get("attempt", 1)),
    )


def timeline(records: Iterable[tuple[int, Fields]]) -> Fields:
    """Every attempt of every task as a bar (dispatched, started, finished; by worker), and the
    execution's control events as marks. An attempt that never ended while a later attempt of
    its task ran was lost (its lease expired)."""
    bars: dict[tuple[str, str, int, int], Fields] = {}
    marks: list[Fields] = []
    for seq, fields in records:
        kind = fields.get("type")
        if kind in MARK_TYPES:
            marks.append({"seq": seq, "type": kind, "ts": fields.get("ts", 0.0)})
            continue
        if kind not in TASK_TYPES:
            continue
        key = task_key(fields)
        bar = bars.setdefault(key, {
            "step": key[0], "stage": fields.get("stage", ""), "phase": key[1],
            "partition": key[2], "attempt": key[3], "worker": "", "status": "dispatched",
            "dispatched_ts": 0.0, "started_ts": 0.0, "finished_ts": 0.0, "reused": False,
            "rows_out": 0, "error": "", "seq": seq,
        })  # fmt: skip
        ts = float(fields.get("ts", 0.0))
        if kind == "StageDispatched":
            bar["dispatched_ts"] = ts
        elif kind == "StageStarted":
            bar.update(worker=fields.get("worker", ""), started_ts=ts, status="running")
        elif kind == "StageCompleted":
            bar.update(
                worker=fields.get("worker", ""), finished_ts=ts, status="completed",
                reused=bool(fields.get("reused")), rows_out=int(fields.get("rows_out", 0)),
                started_ts=bar["started_ts"] or ts - float(fields.get("duration_s", 0.0)),
            )  # fmt: skip
        elif kind == "StageFailed":
            bar.update(worker=fields.get("worker", "") or bar["worker"], finished_ts=ts,
                       status="failed", error=str(fields.get("error", "")))  # fmt: skip
    latest: dict[tuple[str, str, int], int] = {}
    for step, phase, part, attempt in bars:
        latest[(step, phase, part)] = max(attempt, latest.get((step, phase, part), 0))
    for (step, phase, part, attempt), bar in bars.items():
        if bar["status"] in ("dispatched", "running") and attempt < latest[(step, phase, part)]:
            bar["status"] = "lost"
        if bar["reused"]:
            bar["worker"] = "(reused from checkpoint)"
    ordered = sorted(bars.values(), key=lambda b: (b["dispatched_ts"] or b["started_ts"], b["seq"]))
    workers = sorted({b["worker"] or "(not started)" for b in ordered})
    return {"bars": ordered, "workers": workers, "marks": marks}


def events_list(records: Iterable[tuple[int, Fields]]) -> list[Fields]:
    """The execution's events, for the time-travel slider: seq, type, time, and what of."""
    return [
        {"seq": seq, "type": f.get("type", ""), "ts": f.get("ts", 0.0),
         "step": f.get("step") or f.get("stage") or "", "worker": f.get("worker", "")}
        for seq, f in records
    ]  # fmt: skip


def state_at(records: Iterable[tuple[int, Fields]], execution_id: str, seq: int) -> Fields | None:
    """The execution as the log had it at ``seq``: its events up to there folded as
    `porch replay --state ID --at SEQ` folds them; None when it did not exist yet."""
    state = folds.ExecutionsState()
    for at, fields in records:
        if at > seq:
            break
        try:
            folds.evolve(at, fields, state)
        except (KeyError, TypeError, ValueError):
            continue
    ex = state.executions.get(execution_id)
    return None if ex is None else detail(ex)
