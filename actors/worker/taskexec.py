"""Running one stage task: read its inputs, call the stage phase, write its artifacts.

This is the code a worker's runner process executes; it is the only place where a stage
function meets files. A task is the map of its ``StageDispatched`` event. The result is a plain
map: what ``StageCompleted`` or ``StageFailed`` will carry.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgpack
import numpy as np
import pandas as pd
import pyarrow as pa

from stages import codec
from stages.errors import StageError, StageInputError, StageRuleError, is_permanent
from stages.registry import Registry
from stages.spec import Partitioning, Stage, sum_reports
from store import artifacts, deltas, slices
from store.artifacts import ArtifactError
from store.errors import ArtifactLostError
from store.fsutil import make_private_dir
from store.objstore import is_remote
from store.projections.plan import Phase
from store.projections.task import TaskSpec

MAX_REPORT_BYTES: Final = 200_000


class TaskInputError(StageInputError):
    """The execution's input file is missing, unreadable or not parquet."""


def execute(task: Mapping[str, Any], registry: Registry) -> dict[str, Any]:
    """Run `task`; never raises for a stage's or an input's fault (it returns the failure)."""
    start = time.perf_counter()
    try:
        stage = registry.get(task["stage"])
        reused = _reuse(task)
        result = reused if reused is not None else _run(task, stage)
    except Exception as exc:  # the task fails, the worker stays up
        return _failure(task, exc)
    result["duration_s"] = time.perf_counter() - start
    result["ok"] = True
    result["report"] = plain_report(result.get("report", {}))
    return result


def _run(task: Mapping[str, Any], stage: Stage) -> dict[str, Any]:
    phase = task["phase"]
    spec = TaskSpec.of(task.get("spec") or {})
    cfg = stage.config(task.get("config") or {})
    output = task["output"]
    if phase == Phase.COLLECT:
        info = artifacts.write_parquet(output, task["inputs"], spec.input_sha256)
        return _done(info, rows_in=info.rows, rows_out=info.rows)
    if phase == Phase.REDUCE:
        partials = [codec.unpack(artifacts.read_bytes(p)) for p in task["inputs"]]
        assert stage.reduce is not None
        stats = stage.reduce(partials, cfg)
        info = artifacts.write_bytes(output, codec.pack(stats))
        return _done(info, rows_in=0, rows_out=0)
    if phase == Phase.REPORT:
        stats = codec.unpack(artifacts.read_bytes(task["inputs"][0]))
        parts = [codec.unpack(artifacts.read_bytes(p)) for p in task["inputs"][1:]]
        report = stage.report(stats, parts, cfg) if stage.report else sum_reports(parts)
        info = artifacts.write_bytes(output, codec.pack(plain_report(report)))
        return _done(info, rows_in=0, rows_out=0, report=report)
    if phase == Phase.APPLY:
        prepared = artifacts.read_frames([task["inputs"][0]], hashes=spec.input_sha256)
        as_read = deltas.guard(prepared)
        stats = codec.unpack(artifacts.read_bytes(task["inputs"][1]))
        assert stage.apply is not None
        out, part_report = stage.apply(prepared, cfg, stats, int(task["partition"]))
        base = _base(task["inputs"][0], spec, as_read, out)
        rows_in = len(prepared)
        del prepared, as_read
        assert spec.report_part is not None
        extra = artifacts.write_bytes(spec.report_part, codec.pack(plain_report(part_report)))
        info = artifacts.write_frame(output, out, base=base, durable=bool(spec.durable))
        return _done(info, rows_in=rows_in, rows_out=len(out), extra=[extra])
    wanted = _wanted(task, spec, stage, cfg)
    df = _load(task, spec, wanted)
    as_read = deltas.guard(df)
    rows_in = len(df)
    if phase == Phase.MAP:
        assert stage.map is not None
        prepared, partial = stage.map(df, cfg)
        base = _base(_one(task), spec, as_read, prepared)
        del df, as_read
        assert spec.partial is not None
        extra = artifacts.write_bytes(spec.partial, codec.pack(partial))
        info = artifacts.write_frame(output, prepared, base=base, durable=bool(spec.durable))
        return _done(info, rows_in=rows_in, rows_out=len(prepared), extra=[extra])
    out, report = stage.func(df, cfg)
    if out is df and wanted is None:
        # the stage handed its input back untouched: its output is its input, not a copy
        passed = _passed_through(task, spec, stage, rows_in)
        if passed is not None:
            return _done(passed, rows_in=rows_in, rows_out=rows_in, report=report)
    base = _base(_one(task), spec, as_read, out)
    del df, as_read
    info = artifacts.write_frame(output, out, base=base, durable=bool(spec.durable))
    return _done(info, rows_in=rows_in, rows_out=len(out), report=report)


def _one(task: Mapping[str, Any]) -> str | None:
    """The task's input artifact when it reads exactly one."""
    inputs = task["inputs"]
    return str(inputs[0]) if len(inputs) == 1 else None


def _base(
    source: str | None, spec: TaskSpec, as_read: pd.DataFrame, out: pd.DataFrame
) -> deltas.Base | None:
    """The artifact `source` the task read its frame from (`as_read`), when `out` keeps some of
    its columns untouched and its producer's hash is known: `out` is then written as a delta
    of it."""
    sha = (spec.input_sha256 or {}).get(source) if source is not None else None
    if not sha or source is None or slices.is_slice(source):
        return None
    kept = deltas.kept_columns(as_read, out)
    return deltas.Base(source, str(sha), tuple(kept)) if kept else None


def _passed_through(
    task: Mapping[str, Any], spec: TaskSpec, stage: Stage, rows: int
) -> artifacts.ArtifactInfo | None:
    """The artifact of a task whose output is its input: the one input artifact, or the row
    groups it read of the execution's input (a slice); None when it read something else."""
    inputs = task["inputs"]
    if len(inputs) == 1:
        source = inputs[0]
        return artifacts.ArtifactInfo(
            source, rows, artifacts.artifact_bytes(source), _sha(spec, source)
        )
    if inputs or spec.input_path is None:
        return None
    path = spec.input_path
    first, end = spec.row_groups or [0, None]
    if end is None:
        end = slices.parquet_file(path).num_row_groups
    return artifacts.slice_info(slices.source_slice(path, first, end))


def _wanted(task: Mapping[str, Any], spec: TaskSpec, stage: Stage, cfg: Any) -> list[str] | None:
    """The input columns the task reads: the plan's choice, or those a whole-table stage says
    it reads (its other columns are neither read from disk nor converted); None for all."""
    if spec.columns is not None:
        return list(spec.columns)
    if stage.partitioning is not Partitioning.GLOBAL or stage.columns is None:
        return None
    try:
        if task["inputs"]:
            available = artifacts.column_names(task["inputs"][0])
        elif spec.input_path is not None:
            available = slices.parquet_file(spec.input_path).schema_arrow.names
        else:
            return None
    except (OSError, pa.ArrowException, ValueError):
        return None  # the read that follows says what is wrong
    return stage.columns(cfg, available)


def _sha(spec: TaskSpec, path: str) -> str:
    """The input artifact's hash, as its producer recorded it (or computed now)."""
    known = spec.input_sha256 or {}
    return str(known.get(path) or artifacts.file_sha256(path))


def _load(task: Mapping[str, Any], spec: TaskSpec, wanted: list[str] | None) -> pd.DataFrame:
    if task["inputs"]:
        return artifacts.read_frames(task["inputs"], wanted, spec.input_sha256)
    if spec.input_path is None:
        raise TaskInputError("the task has no inputs and no input path")
    path = spec.input_path
    first, end = spec.row_groups or [0, None]
    try:
        parquet = slices.parquet_file(path)
        end = parquet.num_row_groups if end is None else end
        table = slices.read_row_groups(parquet, first, end, wanted)
    except FileNotFoundError:
        raise TaskInputError(f"input {path!r} does not exist") from None
    except IsADirectoryError:
        raise TaskInputError(f"input {path!r} is a directory, not a parquet file") from None
    except PermissionError:
        raise TaskInputError(f"input {path!r} cannot be read (permission denied)") from None
    except OSError as exc:
        if is_remote(path):  # the store is down or slow: a retry may find it back
            text = " ".join(str(exc).split())[:300]
            raise ArtifactError(f"object store: cannot read input {path}: {text}") from exc
        raise TaskInputError(f"input {path!r} is not a readable parquet file: {exc}") from exc
    except pa.ArrowException as exc:
        raise TaskInputError(f"input {path!r} is not a readable parquet file: {exc}") from exc
    return artifacts.to_frame(table)


def _done(
    info: artifacts.ArtifactInfo,
    *,
    rows_in: int,
    rows_out: int,
    report: Mapping[str, Any] | None = None,
    extra: list[artifacts.ArtifactInfo] | None = None,
) -> dict[str, Any]:
    return {
        "artifact": info.path,
        "sha256": info.sha256,
        "bytes": info.bytes,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "report": dict(report or {}),
        "extra": {e.path: e.sha256 for e in extra or []},
        "reused": False,
    }


def _reuse(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """Take an earlier execution's artifacts when every one is still what it was."""
    reuse = task.get("reuse") or {}
    if not reuse:
        return None
    wanted = {reuse["artifact"]: reuse["sha256"], **reuse.get("extra", {})}
    # each file as its producer wrote it (a delta's base is checked once linked, below)
    if not all(artifacts.verify(path, sha, base=False) for path, sha in wanted.items()):
        return None  # missing or altered: recompute, never trust
    spec = TaskSpec.of(task.get("spec") or {})
    # a slice stays what it is: the input's row groups, verified above
    main = reuse["artifact"] if slices.is_slice(reuse["artifact"]) else task["output"]
    targets = {reuse["artifact"]: main}
    for old in reuse.get("extra", {}):
        name = Path(old).name
        for new in (spec.partial, spec.report_part):
            if new and Path(new).name == name:
                targets[old] = new
    for old, new in targets.items():
        if old != new:
            artifacts.link_or_copy(old, new)
    if not artifacts.base_verifies(main):
        # a delta whose base, as this execution has it, is not the one it was written over
        return None
    return {
        "artifact": main,
        "sha256": reuse["sha256"],
        "bytes": int(reuse.get("bytes", 0)),
        "rows_in": int(reuse.get("rows_in", 0)),
        "rows_out": int(reuse.get("rows_out", 0)),
        "report": dict(reuse.get("report", {})),
        "extra": {targets.get(p, p): sha for p, sha in reuse.get("extra", {}).items()},
        "reused": True,
    }


def _failure(task: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    expected = isinstance(exc, StageError | ArtifactError)
    error = text if expected else f"{type(exc).__name__}: {text}"
    trace_path = ""
    output = task.get("output")
    if output and is_remote(output):
        # no folder beside an object: the trace goes to the task's log (its stderr)
        traceback.print_exception(exc, file=sys.stderr)
    elif output:
        trace_path = str(
            Path(output).with_name(
                f"{task['phase']}-{int(task['partition']):04d}.attempt-{task['attempt']}.traceback.txt"
            )
        )
        try:
            make_private_dir(Path(trace_path).parent)  # synced: artifacts go there too
            Path(trace_path).write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
        except OSError:
            trace_path = ""
    permanent = is_permanent(exc)
    retryable = not permanent and isinstance(exc, MemoryError | ArtifactError | OSError)
    result: dict[str, Any] = {
        "ok": False,
        "error": error[:2000],
        "error_type": type(exc).__name__,
        "retryable": retryable,
        "permanent": permanent,
        "traceback_path": trace_path,
    }
    if isinstance(exc, StageRuleError):
        result["report"] = plain_report(exc.report)
    if isinstance(exc, ArtifactLostError):
        result["lost"] = exc.path  # its producer can write it again: the orchestrator decides
    return result


def plain_report(report: Any) -> dict[str, Any]:
    """A report as msgpack-safe plain data, cut down if it would make an event too big."""
    value = _plain(report)
    if not isinstance(value, dict):
        value = {"value": value}
    if len(msgpack.packb(value)) > MAX_REPORT_BYTES:
        return {"truncated": True, "keys": sorted(map(str, value))[:100]}
    return value


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)
