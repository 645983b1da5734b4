"""An execution's plan: which tasks its steps split into, what each reads and writes, in order.

Pure data and pure functions. The orchestrator makes the plan once, from the request, the
stages' partition kinds and the input's row groups, and records it in ``ExecutionStarted``;
the execution fold and the decisions derive the tasks from it, so a replay needs nothing else.

A task is ``(step, phase, part)``. Phases: ``run`` (the stage on one part, or on the whole
table), ``map``/``reduce``/``apply`` (a global-stats stage over several parts), and
``collect`` (an output step's parts written as one parquet file).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
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
) -> dict[str, Any]:
    """The plan as plain data. `steps` are in dependency order, each with ``id``, ``stage``,
    ``config``, ``after`` and ``source``; `kinds` and `columns` are by step id."""
    out_parts: dict[str, int] = {SOURCE: len(parts)}
    planned = []
    for step in steps:
        kind = kinds[step["id"]]
        source_parts = out_parts[step["source"]]
        split = mode != "sequential" and kind != "global" and source_parts > 1
        count = source_parts if split else 1
        phases = [Phase.RUN.value]
        if split and kind == "global_stats":
            phases = [Phase.MAP.value, Phase.REDUCE.value, Phase.APPLY.value, Phase.REPORT.value]
        out_parts[step["id"]] = count
        planned.append(
            {
                "id": step["id"],
                "stage": step["stage"],
                "config": dict(step.get("config", {})),
                "after": list(step.get("after", [])),
                "source": step["source"],
                "kind": kind,
                "parts": count,
                "phases": phases,
                "columns": columns.get(step["id"]),
            }
        )
    plan = {
        "execution_id": execution_id,
        "mode": mode,
        "dir": directory,
        "input": dict(input_info),
        "parts": parts,
        "steps": planned,
        "outputs": list(outputs),
    }
    plan["fingerprints"] = fingerprints(plan)
    return plan


_INDEX_MAX: Final = 4096
_index: dict[int, tuple[Mapping[str, Any], dict[str, dict[str, Any]]]] = {}


def steps_by_id(plan: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The plan's steps by id. Plans are hot (every dispatch and completion asks several
    times), so the index is memoised by the plan's identity, beside the plan, never inside it."""
    found = _index.get(id(plan))
    if found is not None and found[0] is plan:
        return found[1]
    if len(_index) >= _INDEX_MAX:
        _index.clear()
    index = {s["id"]: s for s in plan["steps"]}
    _index[id(plan)] = (plan, index)
    return index


def tasks(plan: Mapping[str, Any]) -> Iterator[TaskKey]:
    """Every task of the plan, in an order that respects dependencies."""
    for step in plan["steps"]:
        for phase in step["phases"]:
            count = 1 if phase in (Phase.REDUCE, Phase.REPORT) else step["parts"]
            for part in range(count):
                yield (step["id"], phase, part)
    for step_id in plan["outputs"]:
        yield (step_id, Phase.COLLECT.value, 0)


def last_phase(step: Mapping[str, Any]) -> str:
    """The phase whose tasks write the step's output frames."""
    return Phase.APPLY.value if Phase.APPLY in step["phases"] else Phase.RUN.value


def output_tasks(plan: Mapping[str, Any], step_id: str) -> list[TaskKey]:
    """The tasks whose artifacts are the step's output parts, in order."""
    step = steps_by_id(plan)[step_id]
    return [(step_id, last_phase(step), part) for part in range(step["parts"])]


def gate_tasks(plan: Mapping[str, Any], step_id: str) -> list[TaskKey]:
    """The tasks after which the step is done: its outputs and, if split, its report."""
    step = steps_by_id(plan)[step_id]
    extra = [(step_id, Phase.REPORT.value, 0)] if Phase.REPORT in step["phases"] else []
    return output_tasks(plan, step_id) + extra


def depends_on(plan: Mapping[str, Any], key: TaskKey) -> list[TaskKey]:
    """The tasks that must complete before `key` can run."""
    step_id, phase, part = key
    step = steps_by_id(plan)[step_id]
    if phase == Phase.COLLECT:
        return gate_tasks(plan, step_id)
    if phase == Phase.REDUCE:
        return [(step_id, Phase.MAP.value, p) for p in range(step["parts"])]
    if phase == Phase.APPLY:
        return [(step_id, Phase.REDUCE.value, 0), (step_id, Phase.MAP.value, part)]
    if phase == Phase.REPORT:
        return [(step_id, Phase.REDUCE.value, 0)] + [
            (step_id, Phase.APPLY.value, p) for p in range(step["parts"])
        ]
    ordering = [t for after in step["after"] for t in gate_tasks(plan, after)]
    source = step["source"]
    if source == SOURCE:
        return ordering
    upstream = output_tasks(plan, source)
    reads = upstream if step["parts"] == 1 else [upstream[part]]
    gates = [t for t in gate_tasks(plan, source) if t not in upstream]
    return list(dict.fromkeys([*reads, *gates, *ordering]))


def path(plan: Mapping[str, Any], key: TaskKey) -> str:
    """Where the task writes its main artifact."""
    step_id, phase, part = key
    base = f"{plan['dir']}/{step_id}"
    if phase == Phase.COLLECT:
        return f"{plan['dir']}/output/{step_id}.parquet"
    if phase == Phase.REDUCE:
        return f"{base}/stats.bin"
    if phase == Phase.REPORT:
        return f"{base}/report.bin"
    return f"{base}/{phase}-{part:04d}.arrow"


def report_path(plan: Mapping[str, Any], step_id: str, part: int) -> str:
    """Where an apply task leaves its part of the step's report."""
    return f"{plan['dir']}/{step_id}/apply-{part:04d}.report"


def partial_path(plan: Mapping[str, Any], step_id: str, part: int) -> str:
    return f"{plan['dir']}/{step_id}/map-{part:04d}.partial"


def inputs(plan: Mapping[str, Any], key: TaskKey) -> list[str]:
    """The files a task reads (for a task on the execution's input: none; it reads row groups)."""
    step_id, phase, part = key
    step = steps_by_id(plan)[step_id]
    if phase == Phase.COLLECT:
        return [path(plan, t) for t in output_tasks(plan, step_id)]
    if phase == Phase.REDUCE:
        return [partial_path(plan, step_id, p) for p in range(step["parts"])]
    if phase == Phase.APPLY:
        return [
            path(plan, (step_id, Phase.MAP.value, part)),
            path(plan, (step_id, Phase.REDUCE.value, 0)),
        ]
    if phase == Phase.REPORT:
        parts = [report_path(plan, step_id, p) for p in range(step["parts"])]
        return [path(plan, (step_id, Phase.REDUCE.value, 0)), *parts]
    if step["source"] == SOURCE:
        return []
    upstream = output_tasks(plan, step["source"])
    chosen = upstream if step["parts"] == 1 else [upstream[part]]
    return [path(plan, t) for t in chosen]


def row_groups(plan: Mapping[str, Any], key: TaskKey) -> list[int]:
    """``[first, end)`` row groups of the input a task reads; empty if it reads artifacts."""
    step_id, phase, part = key
    step = steps_by_id(plan)[step_id]
    if step["source"] != SOURCE or phase not in (Phase.RUN, Phase.MAP):
        return []
    if step["parts"] == 1:
        return [0, plan["parts"][-1][1]]
    return list(plan["parts"][part])


def fingerprints(plan: Mapping[str, Any]) -> dict[str, str]:
    """A content fingerprint per task: equal fingerprints mean equal outputs (stages are pure).

    It covers the stage, its config, the phase and part, how the table is split, and the
    fingerprints of everything the task reads, down to the input file's path, size and mtime.
    """
    out: dict[str, str] = {}
    for key in tasks(plan):
        step = steps_by_id(plan)[key[0]]
        reads = [out[task_name(k)] for k in depends_on(plan, key)]
        material = {
            "stage": step["stage"],
            "config": step["config"],
            "task": list(key),
            "parts": step["parts"],
            "columns": step["columns"],
            "reads": reads,
            "input": plan["input"] if step["source"] == SOURCE else None,
            "row_groups": row_groups(plan, key),
        }
        text = json.dumps(material, sort_keys=True, default=str)
        out[task_name(key)] = hashlib.sha256(text.encode()).hexdigest()[:32]
    return out


def task_name(key: TaskKey) -> str:
    return f"{key[0]}:{key[1]}:{key[2]}"
