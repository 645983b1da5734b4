"""What a task event names and carries: `TaskRef` (which task) and `TaskSpec` (its settings).

A task is ``(step, phase, part)`` of an execution's plan (see `store.projections.plan`); a
``StageDispatched`` names it and hands the same names on to every event of its run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

TaskKey = tuple[str, str, int]  # (step id, phase, part)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """What a task reads and writes beyond its inputs and output: ``StageDispatched.spec``.

    ``input_path`` and ``row_groups`` (``[first, end)``) for a task on the execution's input;
    ``columns`` for a stage that reads some columns only; ``partial`` (a map's statistics) and
    ``report_part`` (an apply's report) for a global-stats stage's phases; ``input_sha256``, for
    a task that reads frames, the hashes of its input artifacts as their producers recorded
    them; ``durable`` for a task that writes again what was lost (its frame is synced to disk,
    so another crash cannot lose it too)."""

    kind: str
    input_path: str | None = None
    row_groups: list[int] | None = None
    columns: list[str] | None = None
    partial: str | None = None
    report_part: str | None = None
    input_sha256: dict[str, str] | None = None
    durable: bool | None = None

    def to_map(self) -> dict[str, Any]:
        """As the event carries it: the settings that apply, nothing else."""
        return {name: value for name, value in _spec_items(self) if value is not None}

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> TaskSpec:
        """From an event's map; raises ValueError naming a key that is unknown or mistyped."""
        unknown = sorted(set(spec) - set(_SPEC_TYPES))
        if unknown:
            raise ValueError(f"task spec: unknown key {unknown[0]!r}")
        for key, value in spec.items():
            if value is not None and not isinstance(value, _SPEC_TYPES[key]):
                raise ValueError(f"task spec: {key} must be {_SPEC_TYPES[key].__name__}")
        if "kind" not in spec:
            raise ValueError("task spec: kind is missing")
        return cls(**spec)


_SPEC_TYPES: Final[dict[str, type]] = {
    "kind": str, "input_path": str, "row_groups": list, "columns": list, "partial": str,
    "report_part": str, "input_sha256": dict, "durable": bool,
}  # fmt: skip


def _spec_items(spec: TaskSpec) -> Iterator[tuple[str, Any]]:
    for name in _SPEC_TYPES:
        yield name, getattr(spec, name)


@dataclass(frozen=True, slots=True)
class TaskRef:
    """Which task an event is about: the fields a ``StageDispatched`` hands on to the
    ``StageStarted``, ``StageProgress``, ``StageCompleted`` or ``StageFailed`` of its run."""

    execution_id: str
    stage: str
    step: str
    phase: str
    partition: int
    attempt: int
    task_id: str

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> TaskRef:
        """From a task event's map (a ``StageDispatched``, or anything naming a task)."""
        return cls(
            execution_id=str(fields["execution_id"]),
            stage=str(fields["stage"]),
            step=str(fields["step"]),
            phase=str(fields["phase"]),
            partition=int(fields["partition"]),
            attempt=int(fields["attempt"]),
            task_id=str(fields["task_id"]),
        )

    @property
    def key(self) -> TaskKey:
        return (self.step, self.phase, self.partition)

    def fields(self) -> dict[str, Any]:
        """The keyword arguments of a task event about this task."""
        return {
            "execution_id": self.execution_id,
            "stage": self.stage,
            "step": self.step,
            "phase": self.phase,
            "partition": self.partition,
            "attempt": self.attempt,
            "task_id": self.task_id,
        }


def follow_on(task: Mapping[str, Any], artifact: str, sha256: str) -> dict[str, Any] | None:
    """The task that follows ``task`` in its chain, ``task`` having written ``artifact`` (its
    content hash ``sha256``): the first of its ``then``, with ``task``'s planned output replaced
    by ``artifact`` in its inputs and that artifact's hash added to the ones it checks, and the
    rest of the chain as its own ``then``. That is the dispatch the orchestrator decides once
    ``task``'s completion is in the log. None when no task follows."""
    then = task.get("then") or []
    if not then:
        return None
    planned = task["output"]
    nxt = dict(then[0])
    nxt["inputs"] = [artifact if path == planned else path for path in nxt.get("inputs", [])]
    spec = dict(nxt.get("spec", {}))
    hashes = spec.get("input_sha256")
    if isinstance(hashes, dict) and artifact in nxt["inputs"]:
        spec["input_sha256"] = {**hashes, artifact: sha256}
    nxt["spec"] = spec
    nxt["then"] = list(then[1:])
    return nxt
