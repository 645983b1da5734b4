"""Executions as people and programs read them: folded from the log, shaped for printing/JSON."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Iterable
from typing import Any

from actors.read import model as readmodel
from actors.read.model import Reader
from actors.read.monitoring import quantile
from bus.client import Client, Record
from store.projections import executions as folds


def fold_log(
    client: Reader,
    to_seq: int | None = None,
    *,
    wanted: Callable[[folds.ExecutionsState], Iterable[str]] | None = None,
    rows: dict[str, list[list[Any]]] | None = None,
) -> folds.ExecutionsState:
    """The execution fold of the log (up to `to_seq`): from the newest snapshot when it is
    folded to the head, from the hub or, when no hub runs, from the log's files. ``wanted``:
    decode only those executions (see `readmodel.executions`)."""
    if to_seq is None:
        return readmodel.executions(client, wanted, rows=rows)
    assert isinstance(client, Client)
    state = folds.ExecutionsState()
    for record in client.read(1, to_seq, types=folds.TYPES):
        fold_record(record, state)
    return state


def fold_record(record: Record, state: folds.ExecutionsState) -> None:
    folds.evolve(record.seq, record.fields(), state)


def execution_view(ex: folds.ExecutionState) -> dict[str, Any]:
    """One execution as plain data: status, timings, records, per-stage results, outputs."""
    return {
        "execution_id": ex.execution_id,
        "status": ex.status,
        "mode": ex.mode,
        "input": ex.request.get("input_data", ""),
        "stages": [s.stage for s in ex.plan.steps]
        if ex.plan
        else list(ex.request.get("stages", [])),
        "records_processed": ex.records_processed,
        "duration_s": round(ex.duration_s, 3),
        "started_ts": ex.started_ts,
        "finished_ts": ex.finished_ts,
        "error": ex.error,
        "failed_stage": ex.failed_stage,
        "traceback_path": ex.traceback_path,
        "outputs": ex.outputs,
        "steps": ex.step_summary(),
        "paused": ex.status == "paused",
        "last_seq": ex.last_seq,
        "notes": list(ex.plan.notes) if ex.plan else [],
        "removed": removed_view(ex),
    }


def removed_view(ex: folds.ExecutionState) -> dict[str, Any] | None:
    """What retention (or ``porch gc``, or ``save_checkpoints=False``) removed of an execution:
    the steps whose artifacts are gone, whether the outputs went, bytes, when and why."""
    if not ex.removed_steps and not ex.outputs_removed_ts:
        return None
    order = [s.id for s in ex.plan.steps] if ex.plan else []
    steps = sorted(ex.removed_steps, key=lambda s: order.index(s) if s in order else len(order))
    whens = [when for when, _ in ex.removed_steps.values()] + (
        [ex.outputs_removed_ts] if ex.outputs_removed_ts else []
    )
    reasons = {why for _, why in ex.removed_steps.values()}
    if ex.outputs_removed_ts:
        reasons.add(ex.outputs_removed_reason)
    return {
        "steps": steps,
        "outputs": bool(ex.outputs_removed_ts),
        "bytes": ex.removed_bytes,
        "ts": max(whens),
        "reasons": sorted(reasons),
    }


def stage_statistics(
    executions: Iterable[folds.ExecutionState], rows: Iterable[list[Any]] = ()
) -> dict[str, dict[str, Any]]:
    """Per stage name over finished steps: runs, failures, seconds (mean, p50, p95), records.
    ``rows``: more steps as `folds.step_rows` gives them (of executions not decoded)."""
    durations: dict[str, list[float]] = {}
    records: dict[str, int] = {}
    failures: dict[str, int] = {}
    every = itertools.chain((r for ex in executions for r in folds.step_rows(ex)), rows)
    for name, status, duration_s, records_in in every:
        if status == "completed":
            durations.setdefault(name, []).append(duration_s)
            records[name] = records.get(name, 0) + records_in
        elif status == "failed":
            failures[name] = failures.get(name, 0) + 1
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(durations) | set(failures)):
        times = sorted(durations.get(name, []))
        out[name] = {
            "runs": len(times),
            "failures": failures.get(name, 0),
            "mean_s": round(statistics.fmean(times), 3) if times else 0.0,
            "p50_s": round(_pct(times, 50), 3),
            "p95_s": round(_pct(times, 95), 3),
            "records": records.get(name, 0),
        }
    return out


def _pct(values: list[float], q: float) -> float:
    """The q-th percentile, interpolated as the monitor's quantiles are (so `porch stats` and
    `porch metrics` give the same p50 of the same runs)."""
    return quantile(values, q / 100) if values else 0.0


def human_bytes(count: float) -> str:
    """Bytes for people: 512 B, 1.5 KB, 3.0 GB (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"
