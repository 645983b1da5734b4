"""The workers fold: events -> each worker the log knows, whether it is present, and the stages
it announced.

What the log says only: a worker is present from its ``WorkerStarted`` (or ``WorkerReturned``)
to its ``WorkerStopped`` (or ``WorkerLost``). Whether it is alive now is a matter of its
heartbeats, which are live and never in the log: a reader decides that (`actors.read.workers`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from store.statecodec import StateCodec

Fields = dict[str, Any]


@dataclass(slots=True)
class WorkerSeen:
    host: str = ""
    stages: list[str] = field(default_factory=list)  # as it last announced them
    present: bool = True
    since_ts: float = 0.0  # when it started or returned (its own clock)


@dataclass(slots=True)
class WorkersState:
    workers: dict[str, WorkerSeen] = field(default_factory=dict)
    last_seq: int = 0

    def present(self) -> dict[str, WorkerSeen]:
        return {name: w for name, w in self.workers.items() if w.present}


def _started(f: Fields, state: WorkersState) -> None:
    stages = f.get("stages")
    state.workers[str(f["worker"])] = WorkerSeen(
        host=str(f.get("host", "")),
        stages=[str(s) for s in stages] if isinstance(stages, list) else [],
        since_ts=float(f["ts"]),
    )


def _returned(f: Fields, state: WorkersState) -> None:
    seen = state.workers.setdefault(str(f["worker"]), WorkerSeen(host=str(f.get("host", ""))))
    seen.present = True
    seen.since_ts = float(f["ts"])


def _loaded(f: Fields, state: WorkersState) -> None:
    """A worker's stages after a reload of its config (an orchestrator's are not a worker's)."""
    seen = state.workers.get(str(f.get("actor", "")))
    if f.get("role") == "worker" and seen is not None and isinstance(f.get("stages"), list):
        seen.stages = [str(s) for s in f["stages"]]


def _gone(f: Fields, state: WorkersState) -> None:
    seen = state.workers.get(str(f["worker"]))
    if seen is not None:
        seen.present = False


HANDLERS: Final[dict[str, Callable[[Fields, WorkersState], None]]] = {
    "WorkerStarted": _started,
    "WorkerReturned": _returned,
    "StagesLoaded": _loaded,
    "WorkerStopped": _gone,
    "WorkerLost": _gone,
}
TYPES: Final = frozenset(HANDLERS)


def evolve(seq: int, fields: Fields, state: WorkersState) -> WorkersState:
    """Fold one event; events must come in seq order."""
    if seq <= state.last_seq:
        raise ValueError(f"workers fold: seq {seq} arrived after {state.last_seq}")
    state.last_seq = seq
    handler = HANDLERS.get(fields["type"])
    if handler is not None:
        handler(fields, state)
    return state


FOLD_VERSION: Final = 1
CODEC: Final = StateCodec(WorkersState, fold_version=FOLD_VERSION)
