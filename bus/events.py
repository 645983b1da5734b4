"""The event catalogue: every event type of porch, declared once, with its schema version.

Each event is a frozen dataclass registered by `catalogued` (the machinery is in `bus.schema`).
When a schema changes, bump ``V`` and add a pure upcaster to ``UPCASTERS``; old logs are upcast
when decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from bus.schema import Event, Upcaster, catalogued, payload, register_upcasters
from store.projections.alerts import RuleSpec

# --- the catalogue -----------------------------------------------------------------------------
# Executions


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionRequested(Event):
    execution_id: str
    stages: list[str]
    input_data: str
    mode: str = "sequential"
    pipeline: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    resume_from: str | None = None
    save_checkpoints: bool = True
    schedule_id: str | None = None
    priority: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    partitions: int = 0
    max_attempts: int = 2


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionStarted(Event):
    execution_id: str
    mode: str
    stages: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class StageDispatched(Event):
    # v2: ``step`` is always set (a v1 event may name it by its stage); v3: ``then``
    V: ClassVar[int] = 3
    execution_id: str
    stage: str
    task_id: str
    partition: int = 0
    partitions: int = 1
    attempt: int = 1
    lease_ms: int = 10_000
    inputs: list[str] = field(default_factory=list)
    step: str = ""
    phase: str = "run"
    config: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    reuse: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    # the tasks that follow this one in a chain, each the ``StageDispatched`` map the
    # orchestrator will decide once the one before it completed (its inputs naming the planned
    # output of the one before): the runner goes on to the next as soon as its completion is
    # durable (DESIGN 4, Dispatch; `actors.orchestrator.chains`)
    then: list[dict[str, Any]] = field(default_factory=list)


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class StageStarted(Event):
    V: ClassVar[int] = 2  # v2: ``step`` is always set (a v1 event may name it by its stage)
    execution_id: str
    stage: str
    worker: str
    partition: int = 0
    attempt: int = 1
    step: str = ""
    phase: str = "run"
    task_id: str = ""


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class StageProgress(Event):
    V: ClassVar[int] = 2  # v2: ``step`` is always set (a v1 event may name it by its stage)
    execution_id: str
    stage: str
    worker: str
    fraction: float
    partition: int = 0
    attempt: int = 1
    message: str = ""
    step: str = ""
    phase: str = "run"
    task_id: str = ""


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class StageCompleted(Event):
    # v2: ``step`` is always set (a v1 event may name it by its stage); v3: ``started_ts``;
    # v4: ``then``
    V: ClassVar[int] = 4
    execution_id: str
    stage: str
    worker: str
    artifact: str
    rows_in: int
    rows_out: int
    bytes: int
    sha256: str
    duration_s: float
    partition: int = 0
    attempt: int = 1
    report: dict[str, Any] = field(default_factory=dict)
    step: str = ""
    phase: str = "run"
    task_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    reused: bool = False
    # when its runner began it, for a task that ended before its worker sent a StageStarted
    # (one event where a short task had two); 0.0 when a StageStarted was sent
    started_ts: float = 0.0
    # the task id its runner goes on to, this completion being durable (the first of the
    # dispatch's ``then``): the orchestrator pushes that task to nobody; "" when none
    then: str = ""


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class StageFailed(Event):
    # v2: ``step`` is always set (a v1 event may name it by its stage); v3: ``report``;
    # v4: ``lost``
    V: ClassVar[int] = 4
    execution_id: str
    stage: str
    worker: str
    error: str
    partition: int = 0
    attempt: int = 1
    error_type: str = ""
    retryable: bool = False
    traceback_path: str = ""
    permanent: bool = False  # the stage said a retry of the execution cannot help
    step: str = ""
    phase: str = "run"
    task_id: str = ""
    # what the stage found before it failed (a validation's rules, their failing counts and
    # example rows), bounded like a completion's report
    report: dict[str, Any] = field(default_factory=dict)
    # the artifact the task read that is missing or damaged (its hash not what its producer
    # recorded), when that is why it failed: the orchestrator recomputes its producer
    lost: str = ""


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class StageInvalidated(Event):
    """A completed task's artifact was found lost or damaged by a task that read it (the
    orchestrator's decision, on that reader's ``StageFailed.lost``): the completion of
    ``attempt`` no longer counts, and the task runs again as a new attempt."""

    execution_id: str
    stage: str
    step: str
    phase: str
    partition: int
    attempt: int  # the attempt whose completion is reopened
    artifact: str  # the file found lost or damaged
    reason: str  # what the reader said of it
    found_by: str = ""  # the task id of the reader


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class PauseRequested(Event):
    execution_id: str
    reason: str = ""


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionPaused(Event):
    execution_id: str


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeRequested(Event):
    execution_id: str


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionResumed(Event):
    execution_id: str


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequested(Event):
    execution_id: str
    reason: str = ""
    timeout_s: float = 0.0  # set with reason "timeout": the execution ends as ExecutionTimedOut


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionCancelled(Event):
    execution_id: str
    reason: str = ""


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionCompleted(Event):
    execution_id: str
    records_processed: int
    duration_s: float
    outputs: dict[str, Any] = field(default_factory=dict)


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionFailed(Event):
    execution_id: str
    error: str
    stage: str = ""
    traceback_path: str = ""
    retryable: bool = True  # False: a scheduler retry cannot help (the stage said so)


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionTimedOut(Event):
    execution_id: str
    timeout_s: float


# Workers


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStarted(Event):
    V: ClassVar[int] = 2  # v2: ``stages``, the names of the stages it can run
    worker: str
    host: str
    pid: int
    capacity: dict[str, Any] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerHeartbeat(Event):
    """Live: published every ``heartbeat_s`` for leases and liveness, never appended."""

    LIVE: ClassVar[bool] = True
    worker: str
    host: str
    cpu_percent: float
    memory_percent: float
    rss_bytes: int
    host_cpu_percent: float = 0.0
    host_memory_percent: float = 0.0
    disk_percent: float = 0.0
    task_id: str | None = None
    queued: list[str] = field(default_factory=list)
    malformed: int = 0  # tasks this worker refused so far (garbage on its tasks socket)


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStopped(Event):
    worker: str
    reason: str = ""


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLost(Event):
    """The orchestrator heard nothing of a worker for ``silent_s``: it counts it out."""

    worker: str
    last_seen_ts: float
    silent_s: float


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReturned(Event):
    """A worker counted out by `WorkerLost` was heard again."""

    worker: str
    host: str = ""


# Schedules


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleAdded(Event):
    schedule_id: str
    config: dict[str, Any]


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleUpdated(Event):
    schedule_id: str
    config: dict[str, Any]


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRemoved(Event):
    schedule_id: str


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulePaused(Event):
    schedule_id: str


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleResumed(Event):
    schedule_id: str


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleFired(Event):
    schedule_id: str
    fire_time: float
    key: str  # the idempotency key: one fire per key, whoever sends it and however often
    execution_id: str
    manual: bool = False
    config_override: dict[str, Any] = field(default_factory=dict)


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleMissed(Event):
    schedule_id: str
    fire_time: float  # the first slot missed
    reason: str
    last_fire_time: float = 0.0  # the last slot of a run of missed slots (0: only fire_time)
    count: int = 1


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionQueued(Event):
    execution_id: str
    schedule_id: str | None = None
    priority: int = 0
    attempt: int = 1


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    execution_id: str  # the execution that failed
    attempt: int  # the attempt number of the retry (2 is the first retry)
    delay_s: float
    reason: str
    schedule_id: str | None = None
    retry_execution_id: str = ""  # the retry's own execution id
    due_ts: float = 0.0  # when the retry joins the queue


# Alerts and metrics


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
@payload(RuleSpec, required=("severity",))
class AlertRuleAdded(Event):
    """A rule added, or replaced (same ``rule_id``): the settings of a `RuleSpec`, declared in
    the alert fold. The wire requires ``severity``, as it always did, though a rule's default
    is ``medium``."""


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRuleRemoved(Event):
    rule_id: str


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class AlertFired(Event):
    alert_id: str
    rule_id: str
    metric_name: str
    value: float | str
    threshold: float | str
    severity: str
    message: str = ""
    labels: dict[str, Any] = field(default_factory=dict)  # the series it fired for


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class AlertAcknowledged(Event):
    alert_id: str


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class AlertResolved(Event):
    alert_id: str
    reason: str = ""


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class MetricRecorded(Event):
    name: str
    value: float
    labels: dict[str, Any] = field(default_factory=dict)
    execution_id: str | None = None


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSampled(Event):
    """A periodic sample (host CPU, liveness, hub counters): live, published, never appended.
    A sample worth keeping as history is a `MetricRecorded`."""

    LIVE: ClassVar[bool] = True
    name: str
    value: float
    labels: dict[str, Any] = field(default_factory=dict)


# Local stages


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class StagesReloadRequested(Event):
    """Asks the orchestrator and every worker to read the ``[stages]`` table of their own
    config file again. It names no code: each actor imports only what its local file says."""

    reason: str = ""


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class StagesLoaded(Event):
    """The stages an actor can run now (every registered name), said at its start and after
    each reload. ``request_id`` is the `StagesReloadRequested` it answers ("" at start);
    ``error`` says why a reload failed, and ``stages`` are then the ones it kept."""

    actor: str  # "orchestrator", or the worker's name
    role: str  # "orchestrator" | "worker"
    stages: list[str]
    config: str = ""  # the config file it read ("" for none)
    request_id: str = ""
    error: str = ""


# Bounded history


@catalogued
@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactsRemoved(Event):
    """Artifacts of a finished execution were deleted (retention, ``porch gc``, or
    ``save_checkpoints=False``): status, resume and replay know they are gone."""

    execution_id: str
    steps: list[str]  # step ids whose artifacts were removed
    bytes: int
    reason: str
    finals: bool = False  # the final outputs went too


# --- upcasters: (type, version) -> the event's fields at the next version ----------------------


def _step_from_stage_v1_v2(fields: dict[str, Any]) -> dict[str, Any]:
    """v1 task events written before plans had steps name the step by its stage only."""
    return {**fields, "step": fields.get("step") or fields.get("stage", "")}


def _no_stages_v1_v2(fields: dict[str, Any]) -> dict[str, Any]:
    """A v1 worker did not say which stages it runs: it announced none."""
    return {**fields, "stages": []}


def _failure_report_v2_v3(fields: dict[str, Any]) -> dict[str, Any]:
    """A v2 ``StageFailed`` carried no report: the stage's findings were lost with it."""
    return {**fields, "report": {}}


def _nothing_lost_v3_v4(fields: dict[str, Any]) -> dict[str, Any]:
    """A v3 ``StageFailed`` never said an input was lost: none was recomputed for it."""
    return {**fields, "lost": ""}


def _started_apart_v2_v3(fields: dict[str, Any]) -> dict[str, Any]:
    """A v2 ``StageCompleted`` always followed a ``StageStarted`` of its own."""
    return {**fields, "started_ts": 0.0}


def _no_chain_v2_v3(fields: dict[str, Any]) -> dict[str, Any]:
    """A v2 ``StageDispatched`` named no tasks to follow it: each was pushed on its own."""
    return {**fields, "then": []}


def _not_continued_v3_v4(fields: dict[str, Any]) -> dict[str, Any]:
    """A v3 ``StageCompleted``'s runner went on to no task of its own: the next was pushed."""
    return {**fields, "then": ""}


UPCASTERS: Final[dict[tuple[str, int], Upcaster]] = {
    **{
        (kind, 1): _step_from_stage_v1_v2
        for kind in (
            "StageDispatched",
            "StageStarted",
            "StageProgress",
            "StageCompleted",
            "StageFailed",
        )
    },
    ("WorkerStarted", 1): _no_stages_v1_v2,
    ("StageFailed", 2): _failure_report_v2_v3,
    ("StageFailed", 3): _nothing_lost_v3_v4,
    ("StageCompleted", 2): _started_apart_v2_v3,
    ("StageDispatched", 2): _no_chain_v2_v3,
    ("StageCompleted", 3): _not_continued_v3_v4,
}
register_upcasters(UPCASTERS)
