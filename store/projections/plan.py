"""An execution's plan: which tasks its steps split into, what each reads and writes, in order.

Pure data and pure functions. The orchestrator makes the plan once (`make_plan`), from the
request, the stages' partition kinds and the input's row groups, and records it in
``ExecutionStarted`` as plain data (`Plan.to_map`); the execution fold reads it back once
(`Plan.of`), and it and the decisions derive the tasks from it, so a replay needs nothing else.

A task is ``(step, phase, part)``. Phases: ``run`` (the stage on one part, or on the whole
table), ``map``/``reduce``/``apply`` (a global-stats stage over several parts), and
``collect`` (an output step's parts written as one parquet file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from enum import StrEnum
from typing import Any, Final

from store.projections.task import TaskKey


class Phase(StrEnum):
    """What a task of a step does. A member compares equal to its string; what goes into a
    plan or an event is the ``.value`` (the event schema takes plain data only)."""

    RUN = "run"  # the stage on one part, or on the whole table
    MAP = "map"  # a global-stats stage: partial statistics of one part
    REDUCE = "reduce"  # ... the partials combined
    APPLY = "apply"  # ... the stage on one part, with the combined statistics
    REPORT = "report"  # ... the parts' reports combined
    COLLECT = "collect"  # an output step's parts written as one parquet file


SOURCE: Final = "source"
MODES: Final = ("sequential", "parallel", "hybrid")
KINDS: Final = ("row_local", "global_stats", "global")
WHOLE: Final = (Phase.RUN,)  # a step run once per part (or once)
SPLIT: Final = (Phase.MAP, Phase.REDUCE, Phase.APPLY, Phase.REPORT)  # global stats over parts


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanStep:
    """One step of a plan: ``stage`` with ``config`` on what ``source`` (a step id, or `SOURCE`
    for the execution's input) wrote, in ``parts`` parts, each through ``phases``; the steps of
    ``after`` are done first. ``columns``: the input columns it reads (None: all)."""

    id: str
    stage: str
    source: str
    kind: str
    parts: int
    phases: tuple[Phase, ...]
    config: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    columns: tuple[str, ...] | None = None

    def to_map(self) -> dict[str, Any]:
        """As ``ExecutionStarted.plan`` carries it."""
        return {
            "id": self.id,
            "stage": self.stage,
            "config": self.config,
            "after": list(self.after),
            "source": self.source,
            "kind": self.kind,
            "parts": self.parts,
            "phases": [phase.value for phase in self.phases],
            "columns": None if self.columns is None else list(self.columns),
        }

    @classmethod
    def of(cls, step: Any, where: str = "plan step") -> PlanStep:
        """From an event's map; raises ValueError naming a key that is unknown, missing or
        mistyped, or phases that are not those of a whole or a split step."""
        fields = _checked(where, step, _STEP_TYPES, _STEP_REQUIRED)
        phases = fields["phases"]
        if phases == _WHOLE_DATA:
            fields["phases"] = WHOLE
        elif phases == _SPLIT_DATA:
            fields["phases"] = SPLIT
        else:
            raise ValueError(
                f"plan step {fields['id']!r}: phases {phases!r} are neither {_WHOLE_DATA}"
                f" nor {_SPLIT_DATA}"
            )
        if fields["kind"] not in KINDS:
            raise ValueError(
                f"plan step {fields['id']!r}: kind {fields['kind']!r} is not one of"
                f" {', '.join(KINDS)}"
            )
        if fields["parts"] < 1:
            raise ValueError(
                f"plan step {fields['id']!r}: parts must be >= 1, not {fields['parts']}"
            )
        if "after" in fields:
            fields["after"] = _strings(fields["after"], "after", fields["id"])
        if fields.get("columns") is not None:
            fields["columns"] = _strings(fields["columns"], "columns", fields["id"])
        return cls(**fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """An execution's plan, as recorded in ``ExecutionStarted.plan`` (`to_map`) and read back
    from it (`of`). ``parts`` are the input's ``[first, end)`` row-group ranges; ``steps`` are
    in dependency order; ``fingerprints`` are by `task_name`. The maps it holds (``input``,
    ``fingerprints``, each step's ``config``) are the event's own: nothing changes them.

    ``steps_by_id`` indexes the steps (every dispatch and completion asks for one): built when
    the plan is, never written down, and left out of comparisons."""

    execution_id: str
    mode: str
    dir: str
    input: dict[str, Any]
    parts: tuple[tuple[int, int], ...]
    steps: tuple[PlanStep, ...]
    outputs: tuple[str, ...]
    fingerprints: dict[str, str]
    notes: tuple[str, ...] = ()
    steps_by_id: dict[str, PlanStep] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps_by_id", {step.id: step for step in self.steps})

    def to_map(self) -> dict[str, Any]:
        """As ``ExecutionStarted.plan`` carries it (``notes`` only when there are some)."""
        out: dict[str, Any] = {
            "execution_id": self.execution_id,
            "mode": self.mode,
            "dir": self.dir,
            "input": self.input,
            "parts": [list(part) for part in self.parts],
            "steps": [step.to_map() for step in self.steps],
            "outputs": list(self.outputs),
            "fingerprints": self.fingerprints,
        }
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @classmethod
    def of(cls, plan: Any) -> Plan:
        """From ``ExecutionStarted.plan``; raises ValueError naming a key that is unknown,
        missing or mistyped, or a step that reads or follows a step not before it.

        It runs once per execution, in the fold: the checks stay off the tasks (there may be
        thousands) and build no message unless one fails."""
        fields = _checked("plan", plan, _PLAN_TYPES, _PLAN_REQUIRED)
        if fields["mode"] not in MODES:
            raise ValueError(f"plan: mode {fields['mode']!r} is not one of {', '.join(MODES)}")
        parts = []
        for part in fields["parts"]:
            if type(part) is not list or len(part) != 2 or not _ints(part):
                raise ValueError(f"plan: parts must be [first, end] pairs of ints, not {part!r}")
            parts.append((part[0], part[1]))
        if not parts:
            raise ValueError("plan: parts is empty")
        fields["parts"] = tuple(parts)
        made = {SOURCE: len(parts)}  # step id -> its parts
        steps = []
        for index, raw in enumerate(fields["steps"]):
            step = PlanStep.of(raw, f"plan step {index}")
            if step.id in made:
                raise ValueError(f"plan step {step.id!r}: its id is taken")
            if step.source not in made:
                raise ValueError(f"plan step {step.id!r}: source {step.source!r} is not earlier")
            if step.parts != 1 and step.parts != made[step.source]:
                raise ValueError(
                    f"plan step {step.id!r}: parts must be 1 or {made[step.source]}, its source's"
                )
            for name in step.after:
                if name not in made or name == SOURCE:
                    raise ValueError(
                        f"plan step {step.id!r}: after {name!r} is not an earlier step"
                    )
            made[step.id] = step.parts
            steps.append(step)
        fields["steps"] = tuple(steps)
        fields["outputs"] = _strings(fields["outputs"], "outputs")
        for name in fields["outputs"]:
            if name not in made or name == SOURCE:
                raise ValueError(f"plan: output {name!r} is not a step")
        if "notes" in fields:
            fields["notes"] = _strings(fields["notes"], "notes")
        return cls(**fields)


def _required(cls: type) -> frozenset[str]:
    """The fields of a dataclass that have no default: the keys its map must have."""
    return frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is MISSING and f.default_factory is MISSING
    )


# each key's types, exactly as msgpack gives them (so a bool is no int)
_NONE: Final = type(None)
_STEP_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "id": (str,), "stage": (str,), "config": (dict,), "after": (list,), "source": (str,),
    "kind": (str,), "parts": (int,), "phases": (list,), "columns": (list, _NONE),
}  # fmt: skip
_PLAN_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "execution_id": (str,), "mode": (str,), "dir": (str,), "input": (dict,), "parts": (list,),
    "steps": (list,), "outputs": (list,), "fingerprints": (dict,), "notes": (list,),
}  # fmt: skip
_STEP_REQUIRED: Final = _required(PlanStep)
_PLAN_REQUIRED: Final = _required(Plan)
_WHOLE_DATA: Final = [phase.value for phase in WHOLE]
_SPLIT_DATA: Final = [phase.value for phase in SPLIT]


def _checked(
    where: str, data: Any, types: dict[str, tuple[type, ...]], required: frozenset[str]
) -> dict[str, Any]:
    """A copy of the map, each value of its key's type; raises ValueError naming the first key
    that is unknown, mistyped or missing."""
    if type(data) is not dict:
        raise ValueError(f"{where} must be a map, not {type(data).__name__}")
    for key, value in data.items():
        if type(value) not in types.get(key, ()):
            if key not in types:
                raise ValueError(f"{where}: unknown key {key!r}")
            names = " or ".join("null" if t is _NONE else t.__name__ for t in types[key])
            raise ValueError(f"{where}: {key} must be {names}, not {type(value).__name__}")
    if not required <= data.keys():
        raise ValueError(f"{where}: {min(required - data.keys())} is missing")
    return dict(data)


def _ints(pair: list[Any]) -> bool:
    return type(pair[0]) is int and type(pair[1]) is int


def _strings(values: list[Any], key: str, step: str | None = None) -> tuple[str, ...]:
    """The list as a tuple; raises ValueError if it holds anything but strings."""
    for value in values:
        if type(value) is not str:
            where = "plan" if step is None else f"plan step {step!r}"
            raise ValueError(f"{where}: {key} must be a list of strings, not hold {value!r}")
    return tuple(values)


def input_parts(row_groups: Sequence[int], wanted: int) -> list[list[int]]:
    """Split row groups (their row counts, in order) into at most `wanted` contiguous ranges
    of near-equal rows; each range is ``[first, end)``."""
    total = sum(row_groups)
    wanted = max(1, min(wanted, len(row_groups)))
    if wanted == 1 or total == 0:
        return [[0, len(row_groups)]]
    parts: list[list[int]] = []
    start, seen = 0, 0
    for index, rows in enumerate(row_groups):
        seen += rows
        if seen >= total * (len(parts) + 1) / wanted and len(parts) < wanted - 1:
            parts.append([start, index + 1])
            start = index + 1
    parts.append([start, len(row_groups)])
    return [p for p in parts if p[1] > p[0]] or [[0, len(row_groups)]]


def make_plan(
    *,
    execution_id: str,
    mode: str,
    steps: Sequence[Mapping[str, Any]],
    kinds: Mapping[str, str],
    columns: Mapping[str, list[str] | None],
    input_info: Mapping[str, Any],
    parts: list[list[int]],
    directory: str,
    outputs: Sequence[str],
) -> Plan:
    """The plan, fingerprints computed. `steps` are in dependency order, each with ``id``,
    ``stage``, ``config``, ``after`` and ``source``; `kinds` and `columns` are by step id."""
    out_parts: dict[str, int] = {SOURCE: len(parts)}
    planned = []
    for step in steps:
        kind = kinds[step["id"]]
        source_parts = out_parts[step["source"]]
        split = mode != "sequential" and kind != "global" and source_parts > 1
        count = source_parts if split else 1
        out_parts[step["id"]] = count
        chosen = columns.get(step["id"])
        planned.append(
            PlanStep(
                id=step["id"],
                stage=step["stage"],
                config=dict(step.get("config", {})),
                after=tuple(step.get("after", ())),
                source=step["source"],
                kind=kind,
                parts=count,
                phases=SPLIT if split and kind == "global_stats" else WHOLE,
                columns=None if chosen is None else tuple(chosen),
            )
        )
    plan = Plan(
        execution_id=execution_id,
        mode=mode,
        dir=directory,
        input=dict(input_info),
        parts=tuple((first, end) for first, end in parts),
        steps=tuple(planned),
        outputs=tuple(outputs),
        fingerprints={},
    )
    return dataclasses.replace(plan, fingerprints=fingerprints(plan))


def tasks(plan: Plan) -> Iterator[TaskKey]:
    """Every task of the plan, in an order that respects dependencies."""
    for step in plan.steps:
        for phase in step.phases:
            count = 1 if phase in (Phase.REDUCE, Phase.REPORT) else step.parts
            for part in range(count):
                yield (step.id, phase.value, part)
    for step_id in plan.outputs:
        yield (step_id, Phase.COLLECT.value, 0)


def last_phase(step: PlanStep) -> str:
    """The phase whose tasks write the step's output frames."""
    return Phase.APPLY.value if Phase.APPLY in step.phases else Phase.RUN.value


def output_tasks(plan: Plan, step_id: str) -> list[TaskKey]:
    """The tasks whose artifacts are the step's output parts, in order."""
    step = plan.steps_by_id[step_id]
    return [(step_id, last_phase(step), part) for part in range(step.parts)]


def gate_tasks(plan: Plan, step_id: str) -> list[TaskKey]:
    """The tasks after which the step is done: its outputs and, if split, its report."""
    step = plan.steps_by_id[step_id]
    extra = [(step_id, Phase.REPORT.value, 0)] if Phase.REPORT in step.phases else []
    return output_tasks(plan, step_id) + extra


def depends_on(plan: Plan, key: TaskKey) -> list[TaskKey]:
    """The tasks that must complete before `key` can run."""
    step_id, phase, part = key
    step = plan.steps_by_id[step_id]
    if phase == Phase.COLLECT:
        return gate_tasks(plan, step_id)
    if phase == Phase.REDUCE:
        return [(step_id, Phase.MAP.value, p) for p in range(step.parts)]
    if phase == Phase.APPLY:
        return [(step_id, Phase.REDUCE.value, 0), (step_id, Phase.MAP.value, part)]
    if phase == Phase.REPORT:
        return [(step_id, Phase.REDUCE.value, 0)] + [
            (step_id, Phase.APPLY.value, p) for p in range(step.parts)
        ]
    ordering = [t for after in step.after for t in gate_tasks(plan, after)]
    source = step.source
    if source == SOURCE:
        return ordering
    upstream = output_tasks(plan, source)
    reads = upstream if step.parts == 1 else [upstream[part]]
    gates = [t for t in gate_tasks(plan, source) if t not in upstream]
    return list(dict.fromkeys([*reads, *gates, *ordering]))


def path(plan: Plan, key: TaskKey) -> str:
    """Where the task writes its main artifact."""
    step_id, phase, part = key
    base = f"{plan.dir}/{step_id}"
    if phase == Phase.COLLECT:
        return f"{plan.dir}/output/{step_id}.parquet"
    if phase == Phase.REDUCE:
        return f"{base}/stats.bin"
    if phase == Phase.REPORT:
        return f"{base}/report.bin"
    return f"{base}/{phase}-{part:04d}.arrow"


def report_path(plan: Plan, step_id: str, part: int) -> str:
    """Where an apply task leaves its part of the step's report."""
    return f"{plan.dir}/{step_id}/apply-{part:04d}.report"


def partial_path(plan: Plan, step_id: str, part: int) -> str:
    return f"{plan.dir}/{step_id}/map-{part:04d}.partial"


def inputs(plan: Plan, key: TaskKey) -> list[str]:
    """The files a task reads (for a task on the execution's input: none; it reads row groups)."""
    step_id, phase, part = key
    step = plan.steps_by_id[step_id]
    if phase == Phase.COLLECT:
        return [path(plan, t) for t in output_tasks(plan, step_id)]
    if phase == Phase.REDUCE:
        return [partial_path(plan, step_id, p) for p in range(step.parts)]
    if phase == Phase.APPLY:
        return [
            path(plan, (step_id, Phase.MAP.value, part)),
            path(plan, (step_id, Phase.REDUCE.value, 0)),
        ]
    if phase == Phase.REPORT:
        parts = [report_path(plan, step_id, p) for p in range(step.parts)]
        return [path(plan, (step_id, Phase.REDUCE.value, 0)), *parts]
    if step.source == SOURCE:
        return []
    upstream = output_tasks(plan, step.source)
    chosen = upstream if step.parts == 1 else [upstream[part]]
    return [path(plan, t) for t in chosen]


def row_groups(plan: Plan, key: TaskKey) -> list[int]:
    """``[first, end)`` row groups of the input a task reads; empty if it reads artifacts."""
    step_id, phase, part = key
    step = plan.steps_by_id[step_id]
    if step.source != SOURCE or phase not in (Phase.RUN, Phase.MAP):
        return []
    if step.parts == 1:
        return [0, plan.parts[-1][1]]
    return list(plan.parts[part])


def fingerprints(plan: Plan) -> dict[str, str]:
    """A content fingerprint per task: equal fingerprints mean equal outputs (stages are pure).

    It covers the stage, its config, the phase and part, how the table is split, and the
    fingerprints of everything the task reads, down to the input file's path, size and mtime.
    """
    out: dict[str, str] = {}
    for key in tasks(plan):
        step = plan.steps_by_id[key[0]]
        reads = [out[task_name(k)] for k in depends_on(plan, key)]
        material = {
            "stage": step.stage,
            "config": step.config,
            "task": list(key),
            "parts": step.parts,
            "columns": None if step.columns is None else list(step.columns),
            "reads": reads,
            "input": plan.input if step.source == SOURCE else None,
            "row_groups": row_groups(plan, key),
        }
        text = json.dumps(material, sort_keys=True, default=str)
        out[task_name(key)] = hashlib.sha256(text.encode()).hexdigest()[:32]
    return out


def task_name(key: TaskKey) -> str:
    return f"{key[0]}:{key[1]}:{key[2]}"
