"""The schedule fold: events -> schedules, their fires, the admission queue, retries and workers.

Pure: no sockets, clocks or files. Times come from the events' ``ts`` (the producer's clock, kept
in the log), so folding the same log always gives the same state. The scheduler decides from this
state; ``porch schedule`` and ``porch replay`` show it.

A *run* is one execution the scheduler knows: a fire of a schedule (manual or by the clock), or a
retry of one. It moves fired -> queued -> requested -> running -> completed | failed | cancelled |
timed_out; a retry waits as ``retry_wait`` until it joins the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from store.statecodec import StateCodec

Fields = dict[str, Any]
FINISHED: Final = frozenset({"completed", "failed", "cancelled", "timed_out"})
ACTIVE: Final = frozenset({"requested", "running"})
TIMING: Final = (
    "schedule_type", "schedule_expression", "timezone", "start_date", "end_date", "interval_s",
    "fire_at",
)  # fmt: skip
KEEP_RUNS: Final = 100  # finished runs kept per schedule (older ones are dropped from the fold)


@dataclass(slots=True)
class ScheduleState:
    schedule_id: str
    config: Fields
    added_ts: float
    added_seq: int
    paused: bool = False
    paused_ts: float = 0.0
    resumed_ts: float = 0.0
    counted_from: float = 0.0  # slots count from here: the adding, or a change of the timing
    version: int = 0  # bumped by every change of the schedule itself
    last_slot: float | None = None  # the latest clock slot fired or recorded as missed
    last_fire_ts: float = 0.0
    fires: int = 0
    missed: int = 0
    runs: list[str] = field(default_factory=list)  # execution ids, oldest first
    latest_dependency_key: str = ""

    @property
    def kind(self) -> str:
        return str(self.config.get("schedule_type", ""))


@dataclass(slots=True)
class RunState:
    execution_id: str
    schedule_id: str
    root: str  # the execution id of the fire this run belongs to (itself, or what it retries)
    attempt: int
    fire_time: float
    priority: int = 0
    manual: bool = False
    key: str = ""
    config_override: Fields = field(default_factory=dict)
    status: str = "fired"
    fired_ts: float = 0.0
    queued_ts: float = 0.0
    queued_seq: int = 0
    requested_ts: float = 0.0
    started_ts: float = 0.0
    finished_ts: float = 0.0
    due_ts: float = 0.0  # a retry: when it joins the queue
    error: str = ""
    retryable: bool = True
    retry_id: str = ""  # the run that retries this one, once decided
    resources: Fields = field(default_factory=dict)
    execution: Fields = field(default_factory=dict)  # the schedule's execution_config at the fire
    timeout_s: float = 0.0


@dataclass(slots=True)
class WorkerInfo:
    host: str
    cpus: float = 0.0
    memory_gb: float = 0.0
    seen_ts: float = 0.0
    stopped: bool = False


@dataclass(slots=True)
class SchedulesState:
    schedules: dict[str, ScheduleState] = field(default_factory=dict)
    runs: dict[str, RunState] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # idempotency key -> execution id
    queue: dict[str, tuple[int, int]] = field(default_factory=dict)  # eid -> (-priority, seq)
    active: set[str] = field(default_factory=set)  # requested or running
    unqueued: dict[str, None] = field(default_factory=dict)  # fired, not yet queued, in order
    waiting_retries: set[str] = field(default_factory=set)
    unretried: set[str] = field(default_factory=set)  # failed, retry not yet decided
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    last_seq: int = 0
    # what the last event changed, for the scheduler to re-decide only that
    touched_schedules: set[str] = field(default_factory=set)
    touched_runs: set[str] = field(default_factory=set)
    queue_changed: bool = False

    def take_touched(self) -> tuple[set[str], set[str], bool]:
        touched = (self.touched_schedules, self.touched_runs, self.queue_changed)
        self.touched_schedules, self.touched_runs, self.queue_changed = set(), set(), False
        return touched


def _schedule_added(seq: int, f: Fields, state: SchedulesState) -> None:
    sid = f["schedule_id"]
    config = f.get("config") or {}
    if not isinstance(config, dict):
        return
    old = state.schedules.get(sid)
    if f["type"] == "ScheduleUpdated" and old is not None:
        before, old.config = old.config, config
        old.version += 1
        if any(before.get(k) != config.get(k) for k in TIMING):
            old.counted_from = f["ts"]  # a new timetable counts from now, not from the old slots
        enabled = bool(config.get("enabled", True))
        if enabled != bool(before.get("enabled", True)):  # only a change of `enabled` pauses
            old.paused = not enabled
            if enabled:
                old.resumed_ts = f["ts"]
            else:
                old.paused_ts = f["ts"]
    else:
        state.schedules[sid] = ScheduleState(
            schedule_id=sid,
            config=config,
            added_ts=f["ts"],
            added_seq=seq,
            paused=not config.get("enabled", True),
            counted_from=f["ts"],
            version=(old.version + 1) if old is not None else 0,
            runs=old.runs if old is not None else [],
        )
    state.touched_schedules.add(sid)


def _schedule_removed(seq: int, f: Fields, state: SchedulesState) -> None:
    if state.schedules.pop(f["schedule_id"], None) is not None:
        state.touched_schedules.add(f["schedule_id"])


def _paused(value: bool) -> Callable[[int, Fields, SchedulesState], None]:
    def handle(seq: int, f: Fields, state: SchedulesState) -> None:
        schedule = state.schedules.get(f["schedule_id"])
        if schedule is None or schedule.paused == value:
            return
        schedule.paused = value
        schedule.version += 1
        if value:
            schedule.paused_ts = f["ts"]
        else:
            schedule.resumed_ts = f["ts"]
        state.touched_schedules.add(schedule.schedule_id)

    return handle


def _fired(seq: int, f: Fields, state: SchedulesState) -> None:
    key, eid, sid = f["key"], f["execution_id"], f["schedule_id"]
    if key in state.keys or eid in state.runs:
        return  # a second fire of one slot (two schedulers, a restart) is the same fire
    schedule = state.schedules.get(sid)
    if schedule is None:
        return  # a fire of a schedule that does not exist (any more) starts nothing
    manual = bool(f.get("manual", False))
    if not manual and schedule.last_slot is not None and f["fire_time"] <= schedule.last_slot:
        return  # an old slot fired again, after its key was dropped with its run
    state.keys[key] = eid
    config = schedule.config
    state.runs[eid] = RunState(
        execution_id=eid,
        schedule_id=sid,
        root=eid,
        attempt=1,
        fire_time=f["fire_time"],
        priority=int(config.get("priority", 0)),
        manual=bool(f.get("manual", False)),
        config_override=dict(f.get("config_override") or {}),
        fired_ts=f["ts"],
        resources=dict(config.get("resource_requirements") or {}),
        execution=dict(config.get("execution_config") or {}),
        timeout_s=float(config.get("execution_timeout_minutes") or 0) * 60,
    )
    state.runs[eid].key = key
    state.unqueued[eid] = None
    schedule.runs.append(eid)
    schedule.fires += 1
    schedule.last_fire_ts = f["ts"]
    if not manual and schedule.kind != "dependency":
        schedule.last_slot = max(schedule.last_slot or f["fire_time"], f["fire_time"])
    if schedule.kind == "dependency":
        schedule.latest_dependency_key = key
    state.touched_runs.add(eid)


def _missed(seq: int, f: Fields, state: SchedulesState) -> None:
    schedule = state.schedules.get(f["schedule_id"])
    if schedule is None:
        return
    last = max(f["fire_time"], f.get("last_fire_time") or 0.0)
    schedule.last_slot = max(schedule.last_slot or last, last)
    schedule.missed += int(f.get("count", 1))


def _queued(seq: int, f: Fields, state: SchedulesState) -> None:
    run = state.runs.get(f["execution_id"])
    if run is None or run.status not in ("fired", "retry_wait"):
        return
    run.status = "queued"
    run.priority = int(f.get("priority", run.priority))
    run.queued_ts = f["ts"]
    run.queued_seq = seq
    state.unqueued.pop(run.execution_id, None)
    state.waiting_retries.discard(run.execution_id)
    state.queue[run.execution_id] = (-run.priority, seq)
    state.queue_changed = True


def _retry(seq: int, f: Fields, state: SchedulesState) -> None:
    failed = state.runs.get(f["execution_id"])
    new_id = f.get("retry_execution_id") or ""
    if failed is None or failed.retry_id or not new_id or new_id in state.runs:
        return
    failed.retry_id = new_id
    state.unretried.discard(failed.execution_id)
    state.runs[new_id] = RunState(
        execution_id=new_id,
        schedule_id=failed.schedule_id,
        root=failed.root,
        attempt=int(f["attempt"]),
        fire_time=failed.fire_time,
        priority=failed.priority,
        manual=failed.manual,
        config_override=failed.config_override,
        status="retry_wait",
        fired_ts=f["ts"],
        due_ts=float(f.get("due_ts") or f["ts"] + f["delay_s"]),
        resources=failed.resources,
        execution=failed.execution,
        timeout_s=failed.timeout_s,
    )
    state.waiting_retries.add(new_id)
    schedule = state.schedules.get(failed.schedule_id)
    if schedule is not None:
        schedule.runs.append(new_id)
    state.touched_runs.add(new_id)


def _requested(seq: int, f: Fields, state: SchedulesState) -> None:
    run = state.runs.get(f["execution_id"])
    if run is None or run.status not in ("queued", "fired"):
        return
    run.status = "requested"
    run.requested_ts = f["ts"]
    state.queue.pop(run.execution_id, None)
    state.unqueued.pop(run.execution_id, None)
    state.active.add(run.execution_id)
    state.queue_changed = True
    state.touched_runs.add(run.execution_id)


def _started(seq: int, f: Fields, state: SchedulesState) -> None:
    run = state.runs.get(f["execution_id"])
    if run is None or run.status != "requested":
        return
    run.status = "running"
    run.started_ts = f["ts"]
    state.touched_runs.add(run.execution_id)


def _finished(status: str) -> Callable[[int, Fields, SchedulesState], None]:
    def handle(seq: int, f: Fields, state: SchedulesState) -> None:
        run = state.runs.get(f["execution_id"])
        if run is None or run.status in FINISHED:
            return
        was_queued = state.queue.pop(run.execution_id, None) is not None
        run.status = status
        run.finished_ts = f["ts"]
        run.error = str(f.get("error") or f.get("reason") or "")
        if status == "timed_out":
            run.error = f"timed out after {f.get('timeout_s', 0):g} s"
        run.retryable = status == "timed_out" or (
            status == "failed" and bool(f.get("retryable", True))
        )
        state.active.discard(run.execution_id)
        state.unqueued.pop(run.execution_id, None)
        state.queue_changed = True
        if status in ("failed", "timed_out") and run.retryable and not was_queued:
            schedule = state.schedules.get(run.schedule_id)
            config = schedule.config if schedule is not None else {}
            if config.get("retry_strategy", "no_retry") != "no_retry" and run.attempt <= int(
                config.get("max_retries", 0)
            ):
                state.unretried.add(run.execution_id)
        state.touched_runs.add(run.execution_id)
        _prune(state, run.schedule_id)

    return handle


def _prune(state: SchedulesState, sid: str) -> None:
    """Keep the newest `KEEP_RUNS` runs of a schedule: memory stays bounded however long it runs.
    Only finished runs whose retry is settled go; their keys go too (`_fired` refuses an old
    slot by the schedule's last slot instead)."""
    schedule = state.schedules.get(sid)
    if schedule is None or len(schedule.runs) <= KEEP_RUNS:
        return
    keep: list[str] = []
    excess = len(schedule.runs) - KEEP_RUNS
    for eid in schedule.runs:
        run = state.runs.get(eid)
        if (
            excess > 0
            and run is not None
            and run.status in FINISHED
            and eid not in state.unretried
            and not (run.retry_id and state.runs.get(run.retry_id, run).status == "retry_wait")
        ):
            excess -= 1
            del state.runs[eid]
            state.keys.pop(run.key, None)
            continue
        keep.append(eid)
    schedule.runs = keep


def _worker(seq: int, f: Fields, state: SchedulesState) -> None:
    name = f["worker"]
    info = state.workers.get(name)
    if info is None:
        info = state.workers[name] = WorkerInfo(host=str(f.get("host", "")))
    info.seen_ts = f["ts"]
    if f["type"] in ("WorkerStopped", "WorkerLost"):
        info.stopped = True
        state.queue_changed = True
        return
    if info.stopped:
        state.queue_changed = True
    info.stopped = False
    capacity = f.get("capacity")
    if isinstance(capacity, dict):
        info.cpus = float(capacity.get("cpus", 0) or 0)
        info.memory_gb = float(capacity.get("memory_bytes", 0) or 0) / 2**30
        state.queue_changed = True


HANDLERS: Final[dict[str, Callable[[int, Fields, SchedulesState], None]]] = {
    "ScheduleAdded": _schedule_added,
    "ScheduleUpdated": _schedule_added,
    "ScheduleRemoved": _schedule_removed,
    "SchedulePaused": _paused(True),
    "ScheduleResumed": _paused(False),
    "ScheduleFired": _fired,
    "ScheduleMissed": _missed,
    "ExecutionQueued": _queued,
    "RetryScheduled": _retry,
    "ExecutionRequested": _requested,
    "ExecutionStarted": _started,
    "ExecutionCompleted": _finished("completed"),
    "ExecutionFailed": _finished("failed"),
    "ExecutionCancelled": _finished("cancelled"),
    "ExecutionTimedOut": _finished("timed_out"),
    "WorkerStarted": _worker,
    "WorkerHeartbeat": _worker,  # logs written before heartbeats became live hold them
    "WorkerStopped": _worker,
    "WorkerLost": _worker,
    "WorkerReturned": _worker,
}
TYPES: Final = frozenset(HANDLERS)


def evolve(seq: int, fields: Fields, state: SchedulesState) -> SchedulesState:
    """Fold one event; events must come in seq order."""
    if seq <= state.last_seq:
        raise ValueError(f"schedule fold: seq {seq} arrived after {state.last_seq}")
    state.last_seq = seq
    handler = HANDLERS.get(fields["type"])
    if handler is not None:
        handler(seq, fields, state)
    return state


def heard(f: Fields, state: SchedulesState) -> None:
    """A live heartbeat (never in the log): the worker was heard at its ``ts``. Only
    `live_capacity`'s staleness reads this; what a fold explains comes from the logged
    WorkerStarted, WorkerStopped, WorkerLost and WorkerReturned."""
    info = state.workers.get(f.get("worker", ""))
    if info is not None and not info.stopped:
        info.seen_ts = max(info.seen_ts, float(f.get("ts", 0.0)))


def live_capacity(state: SchedulesState, now: float, stale_s: float) -> dict[str, float]:
    """CPU cores and memory of the hosts with a worker heard from within ``stale_s``, and of
    every host ever reported (what a request is refused against: a host away for a moment does
    not make a request impossible)."""
    hosts: dict[str, tuple[float, float]] = {}
    ever: dict[str, tuple[float, float]] = {}
    for info in state.workers.values():
        cpus, mem = ever.get(info.host, (0.0, 0.0))
        ever[info.host] = (max(cpus, info.cpus), max(mem, info.memory_gb))
        if info.stopped or now - info.seen_ts > stale_s:
            continue
        cpus, mem = hosts.get(info.host, (0.0, 0.0))
        hosts[info.host] = (max(cpus, info.cpus), max(mem, info.memory_gb))
    return {
        "hosts": float(len(hosts)),
        "cpu_cores": sum(c for c, _ in hosts.values()),
        "memory_gb": sum(m for _, m in hosts.values()),
        "ever_cpu_cores": sum(c for c, _ in ever.values()),
        "ever_memory_gb": sum(m for _, m in ever.values()),
    }


def describe(state: SchedulesState, run: RunState) -> dict[str, Any]:
    return {
        "execution_id": run.execution_id,
        "schedule_id": run.schedule_id,
        "attempt": run.attempt,
        "status": run.status,
        "priority": run.priority,
        "manual": run.manual,
        "fire_time": run.fire_time,
        "queued_ts": run.queued_ts or None,
        "started_ts": run.started_ts or None,
        "finished_ts": run.finished_ts or None,
        "due_ts": run.due_ts or None,
        "error": run.error,
        "retry_id": run.retry_id or None,
    }


FOLD_VERSION: Final = 1
CODEC: Final = StateCodec(
    SchedulesState,
    fold_version=FOLD_VERSION,
    transient=("touched_schedules", "touched_runs", "queue_changed"),
)
