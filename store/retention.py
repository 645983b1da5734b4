"""Retention: which artifacts of finished executions to remove, decided from the execution fold.

Pure: no clock, no files. `decide(state, policy, now)` names, per finished execution, the step
directories (intermediates) and, if the policy says so, the ``output`` directory (final outputs)
to remove; whoever acts on it logs an ``ArtifactsRemoved`` first and deletes after that event is
durable. What the log says was removed, `removed_paths` names again, so deletions cut short by a
crash are redone.

Kept, whatever the policy: everything of an active (requested, running, paused) execution, and
of an execution that an active one resumes from. Kept by the policy: everything of the newest
``keep_last`` finished executions of each pipeline and of every execution that finished less
than ``keep_days`` ago; the final outputs of all, unless ``remove_outputs``. An execution asked
to run with ``save_checkpoints=False`` loses its intermediates as soon as it completes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from store.errors import StoreError
from store.projections.executions import ACTIVE, FINISHED, ExecutionsState, ExecutionState
from store.projections.plan import Phase

DAY_S: Final = 86_400.0
OUTPUT_DIR: Final = "output"  # where an execution's final outputs are (see projections.plan)
RETENTION: Final = "retention"
NO_CHECKPOINTS: Final = "save_checkpoints=False"


class RetentionConfigError(StoreError, ValueError):
    """A retention setting out of its range."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPolicy:
    """What to keep of finished executions, and how often the orchestrator applies it.

    ``enabled`` turns the orchestrator's automatic pass on or off (``porch gc`` and the
    removal of ``save_checkpoints=False`` intermediates work either way)."""

    enabled: bool = True
    keep_last: int = 3
    keep_days: float = 7.0
    remove_outputs: bool = False
    interval_s: float = 600.0

    def __post_init__(self) -> None:
        if self.keep_last < 0:
            raise RetentionConfigError(f"retention: keep_last must be >= 0, got {self.keep_last}")
        if self.keep_days < 0:
            raise RetentionConfigError(f"retention: keep_days must be >= 0, got {self.keep_days}")
        if self.interval_s <= 0:
            raise RetentionConfigError(f"retention: interval_s must be > 0, got {self.interval_s}")

    def describe(self) -> str:
        outputs = "outputs removed" if self.remove_outputs else "outputs kept"
        return f"keep_last={self.keep_last}, keep_days={self.keep_days:g}, {outputs}"


@dataclass(frozen=True, slots=True)
class Removal:
    """Artifacts of one finished execution to remove: step ids (their directories) and, with
    ``finals``, the output directory; ``paths`` are those directories, inside ``root`` (the
    execution's directory)."""

    execution_id: str
    pipeline: str
    steps: tuple[str, ...]
    finals: bool
    paths: tuple[str, ...]
    root: str
    finished_ts: float
    reason: str

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.finished_ts)


def pipeline_of(ex: ExecutionState) -> str:
    """The pipeline an execution ran: its request's ``pipeline`` name, else its stage list."""
    name = ex.request.get("pipeline")
    if name:
        return str(name)
    stages = ex.request.get("stages") or ([s.stage for s in ex.plan.steps] if ex.plan else [])
    return ",".join(map(str, stages))


def protected(state: ExecutionsState) -> set[str]:
    """Executions nothing may be removed of: the active ones and those they resume from."""
    keep: set[str] = set()
    for eid, ex in state.executions.items():
        if ex.status in ACTIVE:
            keep.add(eid)
            earlier = ex.request.get("resume_from")
            if earlier:
                keep.add(str(earlier))
    return keep


def decide(
    state: ExecutionsState, policy: RetentionPolicy, now: float, *, reason: str = RETENTION
) -> list[Removal]:
    """What the policy removes now, oldest execution first. ``reason`` goes into the removals
    the policy decides (``save_checkpoints=False`` ones say so instead)."""
    keep = protected(state)
    runs: dict[str, list[ExecutionState]] = {}
    for ex in state.executions.values():
        if ex.status in FINISHED and ex.plan:  # a protected one counts among the newest too
            runs.setdefault(pipeline_of(ex), []).append(ex)
    removals: list[Removal] = []
    for group in runs.values():
        group.sort(key=_recency, reverse=True)
        for index, ex in enumerate(group):
            if ex.execution_id in keep:
                continue
            kept = index < policy.keep_last or now - ex.finished_ts < policy.keep_days * DAY_S
            removal = (
                without_checkpoints(ex)
                if kept
                else _removal(ex, reason, finals=policy.remove_outputs)
            )
            if removal is not None:
                removals.append(removal)
    removals.sort(key=lambda r: state.executions[r.execution_id].requested_seq)
    return removals


def without_checkpoints(ex: ExecutionState, keep: Iterable[str] = ()) -> Removal | None:
    """The intermediates of a completed ``save_checkpoints=False`` execution, if any remain
    (None while it is in ``keep``)."""
    if not _no_checkpoints(ex) or ex.execution_id in set(keep):
        return None
    return _removal(ex, NO_CHECKPOINTS, finals=False)


def removed_paths(ex: ExecutionState) -> list[str]:
    """The directories the log says were removed of this execution."""
    if not ex.plan:
        return []
    root = ex.plan.dir
    paths = [f"{root}/{step}" for step in ex.removed_steps]
    if ex.outputs_removed_ts:
        paths.append(f"{root}/{OUTPUT_DIR}")
    return paths


def _no_checkpoints(ex: ExecutionState) -> bool:
    return ex.status == "completed" and not ex.request.get("save_checkpoints", True)


def _recency(ex: ExecutionState) -> tuple[float, int]:
    return ex.finished_ts, ex.requested_seq


def _removal(ex: ExecutionState, reason: str, *, finals: bool) -> Removal | None:
    """What is left to remove of a finished execution: the steps that ran (a step never
    dispatched wrote nothing) and, with ``finals``, its outputs."""
    if ex.plan is None:
        return None
    touched = {key[0] for key, task in ex.tasks.items() if task.attempt and key[1] != Phase.COLLECT}
    steps = tuple(s.id for s in ex.plan.steps if s.id in touched and s.id not in ex.removed_steps)
    wrote_outputs = any(
        task.attempt for key, task in ex.tasks.items() if key[1] == Phase.COLLECT
    ) or bool(ex.outputs)
    finals = finals and wrote_outputs and not ex.outputs_removed_ts
    if not steps and not finals:
        return None
    root = ex.plan.dir
    paths = tuple(f"{root}/{s}" for s in steps) + ((f"{root}/{OUTPUT_DIR}",) if finals else ())
    return Removal(
        execution_id=ex.execution_id,
        pipeline=pipeline_of(ex),
        steps=steps,
        finals=finals,
        paths=paths,
        root=root,
        finished_ts=ex.finished_ts,
        reason=reason,
    )
