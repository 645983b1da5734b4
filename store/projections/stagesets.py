"""A fold of which stages the orchestrator and each live worker can run, from their
``StagesLoaded`` and the workers' comings and goings: what `porch pipeline check` and
`porch reload-stages` compare against."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

Fields = dict[str, Any]
TYPES: Final = frozenset(
    {"StagesLoaded", "WorkerStarted", "WorkerStopped", "WorkerLost", "WorkerReturned"}
)


@dataclass(slots=True)
class StageSetsState:
    """``orchestrator``: the stages it last said it runs (None: it never said). ``workers``:
    each live worker's stages, None until it says (a worker that starts anew says again)."""

    last_seq: int = 0
    orchestrator: list[str] | None = None
    orchestrator_config: str = ""
    workers: dict[str, list[str] | None] = field(default_factory=dict)
    known: dict[str, list[str]] = field(default_factory=dict)  # every worker's last word

    def announced(self) -> dict[str, list[str]]:
        """The live workers that said what they run, with their stages."""
        return {w: stages for w, stages in self.workers.items() if stages is not None}


def evolve(seq: int, fields: Fields, state: StageSetsState) -> StageSetsState:
    """Fold one event; events must come in seq order."""
    if seq <= state.last_seq:
        raise ValueError(f"stage sets fold: seq {seq} arrived after {state.last_seq}")
    state.last_seq = seq
    kind = fields["type"]
    if kind == "StagesLoaded":
        stages = sorted(str(s) for s in fields["stages"])
        if fields["role"] == "orchestrator":
            state.orchestrator = stages
            state.orchestrator_config = str(fields.get("config", ""))
        else:
            state.known[fields["actor"]] = stages
            state.workers[fields["actor"]] = stages
    elif kind == "WorkerStarted":
        state.workers[fields["worker"]] = None
        state.known.pop(fields["worker"], None)
    elif kind == "WorkerReturned":
        state.workers[fields["worker"]] = state.known.get(fields["worker"])
    elif kind in ("WorkerStopped", "WorkerLost"):
        state.workers.pop(fields["worker"], None)
    return state


def fold(
    records: Iterable[tuple[int, Fields]], state: StageSetsState | None = None
) -> StageSetsState:
    state = StageSetsState() if state is None else state
    for seq, fields in records:
        evolve(seq, fields, state)
    return state
