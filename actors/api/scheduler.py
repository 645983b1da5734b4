"""The seed README's scheduling API: ``PipelineScheduler``, ``ScheduleConfig`` and their enums.

Schedules are events in the log: `add_schedule` appends one, the scheduler actor fires it. The
scheduler runs as a process of the orchestrator's system: `start_scheduler` starts it (beside an
embedded system, or for the data dir of a running one unless a scheduler already runs there),
and `stop_scheduler` stops what `start_scheduler` started. Nothing is lost in between: fires due
while no scheduler runs are handled by its misfire policy when one starts.
"""

from __future__ import annotations

import atexit
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from actors.api.orchestrator import MLPipelineOrchestrator
from actors.api.schedules import add_schedules, refuse_removing_an_upstream, trigger
from actors.api.system import spawn_actor, stop_process
from actors.errors import ActorError, UsageError
from actors.read.schedules import fold_schedules, queue_status, recent_executions, schedule_status
from actors.scheduler.actor import scheduler_running
from actors.scheduler.specs import DEFAULTS, normalize
from bus.client import Client
from bus.events import SchedulePaused, ScheduleRemoved, ScheduleResumed


class ScheduleType(StrEnum):
    CRON = "cron"
    INTERVAL = "interval"
    ONE_TIME = "one_time"
    DEPENDENCY = "dependency"


class RetryStrategy(StrEnum):
    NO_RETRY = "no_retry"
    FIXED_DELAY = "fixed_delay"
    LINEAR_BACKOFF = "linear_backoff"
    EXPONENTIAL_BACKOFF = "exponential_backoff"


class MisfirePolicy(StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"
    CATCH_UP = "catch_up"


@dataclass(slots=True)
class ScheduleConfig:
    """One schedule. The seed's fields, then porch's: time zone, dependencies, misfires,
    resources, retry cap and jitter, start and end dates."""

    schedule_id: str
    name: str = ""
    description: str = ""
    schedule_type: ScheduleType | str = ScheduleType.CRON
    schedule_expression: str = ""
    enabled: bool = True
    execution_timeout_minutes: float | None = None
    retry_strategy: RetryStrategy | str = RetryStrategy.NO_RETRY
    max_retries: int = DEFAULTS["max_retries"]
    retry_delay_minutes: float = DEFAULTS["retry_delay_minutes"]
    priority: int = DEFAULTS["priority"]
    execution_config: dict[str, Any] = field(default_factory=dict)
    timezone: str = DEFAULTS["timezone"]
    dependencies: list[str] = field(default_factory=list)
    misfire_policy: MisfirePolicy | str = MisfirePolicy.RUN_ONCE
    misfire_grace_seconds: float = DEFAULTS["misfire_grace_seconds"]
    max_catch_up: int = DEFAULTS["max_catch_up"]
    jitter_seconds: float = DEFAULTS["jitter_seconds"]
    resource_requirements: dict[str, Any] = field(default_factory=dict)
    max_retry_delay_minutes: float = DEFAULTS["max_retry_delay_minutes"]
    retry_jitter: float = DEFAULTS["retry_jitter"]
    start_date: str | float | None = None
    end_date: str | float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(self).items()}


class PipelineScheduler:
    """Schedules executions of pipelines on the orchestrator's porch system."""

    def __init__(
        self, orchestrator: MLPipelineOrchestrator, max_concurrent_executions: int = 3
    ) -> None:
        if max_concurrent_executions < 1:
            raise UsageError(
                f"max_concurrent_executions must be >= 1, got {max_concurrent_executions}"
            )
        self.orchestrator = orchestrator
        self.max_concurrent_executions = max_concurrent_executions
        self.client = Client(orchestrator.endpoints)
        self._process: subprocess.Popen[bytes] | None = None
        self._embedded = False

    # --- the scheduler process -------------------------------------------------------------------

    def start_scheduler(self) -> None:
        system = self.orchestrator.system
        if system is not None:
            system.add_scheduler(self.max_concurrent_executions)
            self._embedded = True
            return
        data_dir = getattr(self.orchestrator, "data_dir", None)
        if data_dir is None:
            raise ActorError(
                "this orchestrator talks to a remote system: start `porch scheduler` on its host"
            )
        if scheduler_running(data_dir) or self._process is not None:
            return
        self._process = spawn_actor(
            data_dir, "scheduler", "--max-concurrent", str(self.max_concurrent_executions)
        )
        atexit.register(self.stop_scheduler)

    def stop_scheduler(self) -> None:
        if self._embedded and self.orchestrator.system is not None:
            self.orchestrator.system.remove_scheduler()
            self._embedded = False
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def close(self) -> None:
        self.stop_scheduler()
        self.client.close()

    def __enter__(self) -> PipelineScheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- schedules -------------------------------------------------------------------------------

    def add_schedule(self, schedule_config: ScheduleConfig | Mapping[str, Any]) -> str:
        """Add the schedule, or update it if its id exists; returns the schedule id."""
        raw = (
            schedule_config.to_dict()
            if isinstance(schedule_config, ScheduleConfig)
            else dict(schedule_config)
        )
        config = normalize(raw, now=time.time(), base_dir=Path.cwd())
        add_schedules(
            self.client,
            [config],
            replace=True,
            own_stages=getattr(self.orchestrator, "own_stages", ()),
        )
        return str(config["schedule_id"])

    def _control(self, schedule_id: str, kind: type) -> None:
        core = fold_schedules(self.client)
        if schedule_id not in core.state.schedules:
            raise ActorError(f"no schedule {schedule_id!r}")
        self.client.append(kind(schedule_id=schedule_id))

    def remove_schedule(self, schedule_id: str) -> None:
        refuse_removing_an_upstream(fold_schedules(self.client), schedule_id)
        self._control(schedule_id, ScheduleRemoved)

    def pause_schedule(self, schedule_id: str) -> None:
        self._control(schedule_id, SchedulePaused)

    def resume_schedule(self, schedule_id: str) -> None:
        self._control(schedule_id, ScheduleResumed)

    def trigger_manual_execution(
        self, schedule_id: str, config_override: Mapping[str, Any] | None = None
    ) -> str:
        """Fire now, through the queue like any fire; returns the execution id."""
        return trigger(self.client, schedule_id, dict(config_override or {}))

    # --- status ----------------------------------------------------------------------------------

    def get_schedule_status(self, schedule_id: str | None = None) -> dict[str, Any]:
        """One schedule's status (with its next fire time), or every schedule's by id."""
        core = fold_schedules(self.client, self.max_concurrent_executions)
        now = time.time()
        if schedule_id is None:
            return {sid: schedule_status(core, s, now) for sid, s in core.state.schedules.items()}
        schedule = core.state.schedules.get(schedule_id)
        if schedule is None:
            raise ActorError(f"no schedule {schedule_id!r}")
        return schedule_status(core, schedule, now)

    def get_execution_queue_status(self) -> dict[str, Any]:
        core = fold_schedules(self.client, self.max_concurrent_executions)
        return queue_status(core, time.time())

    def get_recent_executions(self, limit: int = 10) -> list[dict[str, Any]]:
        return recent_executions(fold_schedules(self.client), limit)
