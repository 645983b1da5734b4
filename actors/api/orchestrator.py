"""The Python API of the seed README, on top of the actors: ``MLPipelineOrchestrator`` and friends.

With no endpoint, the orchestrator object starts a local porch system (hub, orchestrator,
``max_workers`` workers, as child processes) on its data dir, and stops it on `close`, at the
end of a ``with`` block, or at interpreter exit. If a system already runs for the data dir, or
an `Endpoints` is given, it connects to that one instead and leaves it running.
"""

from __future__ import annotations

import atexit
import json
import os
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from actors.api.door import check_input, check_request_numbers, check_stages
from actors.api.settings import network
from actors.api.system import System
from actors.errors import ActorError, UsageError
from actors.read.executions import execution_view, fold_log, fold_record, stage_statistics
from actors.read.model import execution_from_log
from bus.client import Client, hub_running
from bus.endpoints import Endpoints
from bus.events import CancelRequested, ExecutionRequested, PauseRequested, ResumeRequested
from store.objstore import is_remote
from store.projections import execstate
from store.projections import executions as folds

TERMINAL = ("completed", "failed", "cancelled", "timed_out")
_latest: weakref.ref[MLPipelineOrchestrator] | None = None


def latest() -> MLPipelineOrchestrator | None:
    """The orchestrator made last in this process, while it is open (the monitor's default)."""
    orchestrator = _latest() if _latest is not None else None
    return orchestrator if orchestrator is not None and not orchestrator.closed else None


class ExecutionMode(StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    HYBRID = "hybrid"


class PipelineStage(StrEnum):
    DATA_CLEANING = "data_cleaning"
    FEATURE_ENGINEERING = "feature_engineering"
    DATA_AGGREGATION = "data_aggregation"
    DATA_VALIDATION = "data_validation"


@dataclass(slots=True)
class StageResult:
    stage: str
    status: str
    records_in: int
    records_out: int
    duration_s: float
    parts: int
    attempts: int
    reused: bool
    artifacts: list[str]
    report: dict[str, Any]


@dataclass(slots=True)
class PipelineExecution:
    """An execution as last seen; `refresh` or `wait` to see it move."""

    execution_id: str
    status: str = "requested"
    mode: str = "sequential"
    total_records_processed: int = 0
    duration_s: float = 0.0
    stage_results: dict[str, StageResult] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    failed_stage: str = ""
    traceback_path: str = ""
    start_time: float = 0.0
    end_time: float = 0.0
    _owner: MLPipelineOrchestrator | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def refresh(self) -> PipelineExecution:
        if self._owner is not None:
            self._owner._update(self)
        return self

    def wait(self, timeout: float | None = None) -> PipelineExecution:
        if self._owner is not None:
            self._owner._wait(self, timeout)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "status": self.status,
            "mode": self.mode,
            "total_records_processed": self.total_records_processed,
            "duration_s": self.duration_s,
            "stage_results": {k: vars_of(v) for k, v in self.stage_results.items()},
            "outputs": self.outputs,
            "error": self.error,
            "failed_stage": self.failed_stage,
            "traceback_path": self.traceback_path,
            "start_time": self.start_time,
            "end_time": self.end_time,
        }


def vars_of(result: StageResult) -> dict[str, Any]:
    return {name: getattr(result, name) for name in result.__slots__}  # type: ignore[attr-defined]


class MLPipelineOrchestrator:
    """Runs pipelines on a porch system (its own, or a running one)."""

    def __init__(
        self,
        execution_mode: ExecutionMode | str = ExecutionMode.SEQUENTIAL,
        max_workers: int = 4,
        checkpoint_dir: str | Path = "checkpoints",
        metrics_dir: str | Path = "metrics",
        endpoint: Endpoints | str | Path | None = None,
        *,
        data_dir: str | Path | None = None,
        custom_stages: Mapping[str, str] | None = None,
    ) -> None:
        self.execution_mode = ExecutionMode(execution_mode)
        if max_workers < 1:
            raise UsageError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self.checkpoint_dir: Path | str = (
            str(checkpoint_dir) if is_remote(checkpoint_dir) else Path(checkpoint_dir).resolve()
        )
        self.metrics_dir = Path(metrics_dir).resolve()
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        self.system: System | None = None
        self.own_stages: tuple[str, ...] = ()  # custom stages of the system it started
        self._current: str | None = None
        if isinstance(endpoint, Endpoints):
            self.endpoints = endpoint
        elif endpoint is not None and str(endpoint).endswith(".toml"):
            # a config file naming a system elsewhere (TCP, CURVE keys): connect to it
            self.endpoints, _ = network(
                data_dir=None, config_file=str(endpoint), environ=dict(os.environ)
            )
        else:
            root = Path(
                endpoint
                or data_dir
                or (
                    Path(".porch")
                    if is_remote(checkpoint_dir)
                    else Path(checkpoint_dir).resolve().parent / ".porch"
                )
            ).resolve()
            self.data_dir = root
            self.endpoints = Endpoints.local(root)
            if not hub_running(root):
                stages = [f"{name}={target}" for name, target in (custom_stages or {}).items()]
                self.system = System(
                    data_dir=root,
                    workers=max_workers,
                    checkpoint_dir=self.checkpoint_dir,
                    stages=stages,
                )
                self.system.start()
                self.own_stages = tuple(custom_stages or {})
                atexit.register(self.close)
        self.client = Client(self.endpoints)
        self.closed = False
        global _latest
        _latest = weakref.ref(self)

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect; stop the system if this object started it."""
        if getattr(self, "client", None) is not None:
            self.client.close()
        self.closed = True
        if self.system is not None:
            self.system.stop()
            self.system = None

    def __enter__(self) -> MLPipelineOrchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- executions --------------------------------------------------------------------------

    def execute_pipeline(
        self,
        input_data: str | Path,
        stages: Sequence[PipelineStage | str] | None = None,
        config_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        resume_from_checkpoint: str | None = None,
        save_checkpoints: bool = True,
        *,
        wait: bool = True,
        timeout: float | None = None,
        execution_id: str | None = None,
        mode: ExecutionMode | str | None = None,
        partitions: int = 0,
        max_attempts: int = 2,
    ) -> PipelineExecution:
        """Run the stages over the parquet file; blocks until it ends unless ``wait=False``.

        Refused with `UsageError` (a ValueError) before anything is queued: an input on this
        host that is missing or not parquet, a stage neither built in nor run by a live worker,
        ``partitions`` outside 0..8192, ``max_attempts`` outside 1..100, ``timeout`` <= 0."""
        names = [
            s.value if isinstance(s, PipelineStage) else str(s)
            for s in (stages or list(PipelineStage))
        ]
        check_request_numbers(partitions, max_attempts)
        if timeout is not None and not timeout > 0:
            raise UsageError(f"timeout must be > 0 seconds (None: no limit), got {timeout!r}")
        path = (
            check_input(input_data)  # a remote system's input is on its hosts, not here
            if self.endpoints.is_local() or is_remote(input_data)
            else str(Path(input_data).expanduser().resolve())
        )
        check_stages(self.client, names, known=self.own_stages)
        eid = execution_id or f"ex-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        request = ExecutionRequested(
            execution_id=eid,
            stages=names,
            input_data=path,
            mode=ExecutionMode(mode or self.execution_mode).value,
            config={k: dict(v) for k, v in (config_overrides or {}).items()},
            resume_from=resume_from_checkpoint,
            save_checkpoints=save_checkpoints,
            partitions=partitions,
            max_attempts=max_attempts,
        )
        self.client.append(request)
        self._current = eid
        execution = PipelineExecution(execution_id=eid, _owner=self)
        if wait:
            self._wait(execution, timeout)
            self._save_summary(execution)
        return execution

    def wait_execution(self, execution_id: str, timeout: float | None = None) -> PipelineExecution:
        """Block until the execution ends (or ``timeout`` seconds pass: TimeoutError)."""
        execution = PipelineExecution(execution_id=execution_id, _owner=self)
        self._wait(execution, timeout)
        return execution

    def _state(self) -> folds.ExecutionsState:
        return fold_log(self.client)

    def _update(
        self, execution: PipelineExecution, state: folds.ExecutionsState | None = None
    ) -> None:
        state = state or self._state()
        ex = state.executions.get(execution.execution_id)
        if ex is not None:
            _apply(execution, ex)

    def _wait(self, execution: PipelineExecution, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        state = self._state()
        self._update(execution, state)
        with self.client.subscribe(state.last_seq + 1, types=folds.TYPES) as sub:
            while not execution.done:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"execution {execution.execution_id} still {execution.status} after {timeout} s"
                    )
                for record in sub.receive(500):
                    fold_record(record, state)
                self._update(execution, state)

    def _save_summary(self, execution: PipelineExecution) -> None:
        path = self.metrics_dir / f"{execution.execution_id}.json"
        path.write_text(json.dumps(execution.to_dict(), indent=2, default=str), encoding="utf-8")

    def get_execution_status(self, execution_id: str | None = None) -> dict[str, Any]:
        def wanted(s: folds.ExecutionsState) -> list[str]:
            return [execution_id or self._current or execstate.latest(s) or ""]

        state = fold_log(self.client, wanted=wanted)
        eid = execution_id or self._current or execstate.latest(state)
        ex = state.executions.get(eid) if eid is not None else None
        if ex is None and eid is not None and state.evicted:  # finished long ago: from the log
            ex = execution_from_log(self.client, eid)
        if ex is None:
            raise ActorError(f"no execution {eid!r}")
        return execution_view(ex)

    def get_execution_history(self, limit: int = 10) -> list[dict[str, Any]]:
        state = fold_log(self.client, wanted=lambda s: execstate.newest(s, max(1, limit)))
        return [
            execution_view(state.executions[e])
            for e in reversed(execstate.newest(state, max(1, limit)))
            if e in state.executions
        ]

    def pause_execution(self, execution_id: str | None = None) -> None:
        self.client.append(PauseRequested(execution_id=self._target(execution_id)))

    def resume_execution(self, execution_id: str | None = None) -> None:
        self.client.append(ResumeRequested(execution_id=self._target(execution_id)))

    def cancel_execution(self, execution_id: str | None = None) -> None:
        self.client.append(CancelRequested(execution_id=self._target(execution_id)))

    def get_stage_statistics(self) -> dict[str, dict[str, Any]]:
        return stage_statistics(self._state().executions.values())

    def _target(self, execution_id: str | None) -> str:
        eid = execution_id or self._current
        if not eid:
            raise UsageError("no current execution; pass execution_id")
        return eid


def _apply(execution: PipelineExecution, ex: folds.ExecutionState) -> None:
    view = execution_view(ex)
    execution.status = ex.status
    execution.mode = ex.mode
    execution.total_records_processed = ex.records_processed
    execution.duration_s = view["duration_s"]
    execution.outputs = ex.outputs
    execution.error = ex.error
    execution.failed_stage = ex.failed_stage
    execution.traceback_path = ex.traceback_path
    execution.start_time = ex.started_ts
    execution.end_time = ex.finished_ts
    execution.stage_results = {
        step_id: StageResult(
            stage=s["stage"],
            status=s["status"],
            records_in=s["records_in"],
            records_out=s["records_out"],
            duration_s=s["duration_s"],
            parts=s["parts"],
            attempts=s["attempts"],
            reused=s["reused"],
            artifacts=s["artifacts"],
            report=s["report"],
        )
        for step_id, s in view["steps"].items()
    }
