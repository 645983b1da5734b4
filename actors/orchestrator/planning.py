"""Turning an ``ExecutionRequested`` into a plan: the one decision that reads files (metadata).

The request is checked at the door: ids that become directory names, the mode, the stages (only
registered ones: a request can never make porch import code), their configs, and the input
(an absolute path to a readable parquet file). Anything wrong refuses the execution with one
line naming it.

A request that resumes from an earlier execution whose artifacts retention has removed plans as
any other: those tasks are recomputed (the worker never trusts an artifact it cannot verify),
and the plan carries one note per removed step that would have been reused, saying so.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from actors.errors import ActorError
from bus.events import Event, ExecutionStarted
from stages.errors import StageError
from stages.pipeline import build
from stages.registry import Registry
from store.errors import StoreError
from store.objstore import is_remote, join
from store.projections import plan as plans
from store.projections.executions import ExecutionState
from store.projections.plan import Phase, Plan
from store.slices import is_slice

MAX_PARTS: Final = 8192  # so a plan and a collect task fit in one event (1 MiB)
SAFE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class PlanRefusedError(ActorError, ValueError):
    """The request cannot run; the message says why, in one line."""


def input_info(path: str) -> tuple[dict[str, Any], list[int]]:
    """Size, mtime, rows and row-group sizes of the input parquet file (or object)."""
    if is_remote(path):
        return _object_info(path)
    if not path or not Path(path).is_absolute():
        raise PlanRefusedError(
            f"input_data must be an absolute path to a parquet file or an s3:// URL, got {path!r}"
        )
    file = Path(path)
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise PlanRefusedError(f"input {path!r} does not exist") from None
    except OSError as exc:
        raise PlanRefusedError(f"input {path!r} cannot be read: {exc.strerror}") from None
    if not file.is_file():
        raise PlanRefusedError(f"input {path!r} is not a file")
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PlanRefusedError(f"input {path!r} is not a parquet file ({reason})") from None
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    info = {
        "path": path,
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "rows": meta.num_rows,
    }
    return info, groups


def _object_info(path: str) -> tuple[dict[str, Any], list[int]]:
    """`input_info` of an object of an S3 store."""
    from store.slices import object_info, parquet_file

    try:
        size, mtime_ns = object_info(path)
        meta = parquet_file(path).metadata
    except FileNotFoundError:
        raise PlanRefusedError(f"input {path!r} does not exist") from None
    except (pa.ArrowException, OSError, StoreError) as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise PlanRefusedError(f"input {path!r} cannot be read: {reason}") from None
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    info = {"path": path, "bytes": size, "mtime_ns": mtime_ns, "rows": meta.num_rows}
    return info, groups


def plan_execution(
    request: Mapping[str, Any],
    *,
    registry: Registry,
    checkpoint_dir: Path | str,
    workers: int,
    hybrid_min_rows: int,
    earlier: ExecutionState | None = None,
) -> Event:
    """``ExecutionStarted`` with the plan; raises `PlanRefusedError` when it cannot run.
    ``earlier``: the execution it resumes from, as folded (for the notes on removed artifacts)."""
    eid = request["execution_id"]
    if not SAFE_NAME.match(eid):
        raise PlanRefusedError(
            f"execution_id {eid!r} must be 1-100 letters, digits, '_', '.' or '-', not starting with a symbol"
        )
    mode = request.get("mode", "sequential")
    if mode not in plans.MODES:
        raise PlanRefusedError(f"mode {mode!r} is not one of {', '.join(plans.MODES)}")
    try:
        if request.get("steps"):
            pipeline = build(list(request["steps"]), name=eid, registry=registry)
        else:
            configs = request.get("config") or {}
            if not isinstance(configs, Mapping) or not all(
                isinstance(v, Mapping) for v in configs.values()
            ):
                raise PlanRefusedError("config must map stage names to tables of settings")
            pipeline = build(list(request["stages"]), name=eid, configs=configs, registry=registry)
    except StageError as exc:
        raise PlanRefusedError(str(exc)) from None
    for step in pipeline.steps:
        if not SAFE_NAME.match(step.id):
            raise PlanRefusedError(f"step id {step.id!r} must be letters, digits, '_', '.' or '-'")
    info, groups = input_info(request["input_data"])
    rows = int(info["rows"])
    wanted = 1
    if mode == "parallel":
        wanted = int(request.get("partitions") or workers)
    elif mode == "hybrid":
        wanted = min(
            int(request.get("partitions") or workers), max(1, rows // max(1, hybrid_min_rows))
        )
    if wanted > MAX_PARTS:
        raise PlanRefusedError(f"partitions must be <= {MAX_PARTS}, got {wanted}")
    parts = plans.input_parts(groups, wanted)
    steps = [
        {
            "id": s.id,
            "stage": s.stage,
            "config": dict(s.config),
            "after": list(s.after),
            "source": s.source,
        }
        for s in pipeline.steps
    ]
    kinds = {s.id: pipeline.stage(s).partitioning.value for s in pipeline.steps}
    plan = plans.make_plan(
        execution_id=eid,
        mode=mode,
        steps=steps,
        kinds=kinds,
        columns={},
        input_info=info,
        parts=parts,
        directory=join(str(checkpoint_dir), eid),
        outputs=pipeline.outputs,
    )
    notes = resume_notes(plan, earlier)
    if notes:
        plan = dataclasses.replace(plan, notes=tuple(notes))
    return ExecutionStarted(
        execution_id=eid, mode=mode, stages=[s.stage for s in pipeline.steps], plan=plan.to_map()
    )


def resume_notes(plan: Plan, earlier: ExecutionState | None) -> list[str]:
    """One line per step of ``earlier`` that this plan would reuse (same fingerprints) but whose
    artifacts were removed, so it is recomputed; and one for its removed final outputs."""
    if earlier is None or not earlier.plan:
        return []
    wanted = set(plan.fingerprints.values())
    reusable: set[tuple[str, bool]] = set()  # (step, is a collect task) that would be reused
    for name, fingerprint in earlier.plan.fingerprints.items():
        step, phase, part = name.rsplit(":", 2)
        task = earlier.tasks.get((step, phase, int(part)))
        if (
            fingerprint in wanted
            and task is not None
            and task.status == "completed"
            and not is_slice(task.artifact)  # a slice of the input: nothing was removed
        ):
            reusable.add((step, phase == Phase.COLLECT))
    eid = earlier.execution_id
    notes = []
    for step in earlier.plan.steps:
        removed = earlier.removed_steps.get(step.id)
        if removed is not None and (step.id, False) in reusable:
            when, why = removed
            notes.append(
                f"artifacts of {eid} step {step.id} were removed by {why or 'retention'}"
                f" on {_date(when)}; recomputing"
            )
    if earlier.outputs_removed_ts and any(collect for _, collect in reusable):
        notes.append(
            f"final outputs of {eid} were removed by"
            f" {earlier.outputs_removed_reason or 'retention'} on"
            f" {_date(earlier.outputs_removed_ts)}; recomputing"
        )
    return notes


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
