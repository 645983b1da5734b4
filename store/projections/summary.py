"""A fold of any log into an overview: events per type and the last status of each execution.

It works on plain decoded maps (a dict of handlers keyed by type) because `porch replay` runs it
over millions of events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from store.statecodec import StateCodec

Fields = dict[str, Any]

EXECUTION_STATUS: Final[dict[str, str]] = {
    "ExecutionRequested": "requested",
    "ExecutionQueued": "queued",
    "ExecutionStarted": "running",
    "ExecutionPaused": "paused",
    "ExecutionResumed": "running",
    "ExecutionCompleted": "completed",
    "ExecutionFailed": "failed",
    "ExecutionCancelled": "cancelled",
    "ExecutionTimedOut": "timed_out",
}


@dataclass(slots=True)
class SummaryState:
    """Events seen per type, the last status per execution, and the last seq folded.

    Mutable on purpose: the fold updates it in place, event by event, at replay speed.
    """

    last_seq: int = 0
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    executions: dict[str, str] = field(default_factory=dict)
    workers: set[str] = field(default_factory=set)
    schedules: set[str] = field(default_factory=set)

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in self.executions.values():
            counts[status] = counts.get(status, 0) + 1
        return counts


def _execution(status: str) -> Callable[[Fields, SummaryState], None]:
    def handle(fields: Fields, state: SummaryState) -> None:
        state.executions[fields["execution_id"]] = status

    return handle


def _worker(fields: Fields, state: SummaryState) -> None:
    state.workers.add(fields["worker"])


def _worker_gone(fields: Fields, state: SummaryState) -> None:
    state.workers.discard(fields["worker"])


def _schedule(fields: Fields, state: SummaryState) -> None:
    state.schedules.add(fields["schedule_id"])


def _schedule_gone(fields: Fields, state: SummaryState) -> None:
    state.schedules.discard(fields["schedule_id"])


HANDLERS: Final[dict[str, Callable[[Fields, SummaryState], None]]] = {
    **{kind: _execution(status) for kind, status in EXECUTION_STATUS.items()},
    "WorkerStarted": _worker,
    "WorkerStopped": _worker_gone,
    "WorkerLost": _worker_gone,
    "WorkerReturned": _worker,
    "ScheduleAdded": _schedule,
    "ScheduleRemoved": _schedule_gone,
}


def evolve(seq: int, fields: Fields, state: SummaryState) -> SummaryState:
    """Fold one event; events must come in seq order."""
    if seq <= state.last_seq:
        raise ValueError(f"summary fold: seq {seq} arrived after {state.last_seq}")
    kind = fields["type"]
    state.last_seq = seq
    state.events += 1
    state.by_type[kind] = state.by_type.get(kind, 0) + 1
    handler = HANDLERS.get(kind)
    if handler is not None:
        handler(fields, state)
    return state


def fold(records: Iterable[tuple[int, Fields]], state: SummaryState | None = None) -> SummaryState:
    state = SummaryState() if state is None else state
    for seq, fields in records:
        evolve(seq, fields, state)
    return state


FOLD_VERSION: Final = 1
CODEC: Final = StateCodec(SummaryState, fold_version=FOLD_VERSION)
