"""The metrics fold: events -> counters, gauges and time series, with retention. Pure.

Every series is a metric name plus labels (``stage``, ``schedule``, ``worker``, ``host``, or a
custom metric's own); its samples are ``(ts, value)`` pairs taken from the events' timestamps,
kept for ``retention_s`` behind the newest event. Time comes only from the events, so folding
the same log gives the same history: a restarted monitor rebuilds it this way.

History is downsampled as a time-series database does, so memory does not grow with the event
rate. A series keeps three tiers, each sample in exactly one of them:

- raw: the samples of the last ``raw_window_s`` (1 h, up to `ROLL_SLACK_S` more: they move in
  batches) as they came, at most ``raw_max_samples`` (4800), in two columns (``raw_ts``,
  ``raw_values``: 65 bytes a sample, 112 as pairs, and cheaper to free); the oldest go into
- ``minutes``: a `Bucket` (count, sum, min, max, last, first and last ts) per minute, for
  `MINUTE_WINDOW_S` (24 h), at most `MAX_MINUTE_BUCKETS`; older minutes are merged into
- ``hours``: a `Bucket` per hour, until its newest sample is older than the retention.

``last``, ``last_ts``, ``text`` and ``count`` are exact whatever the tier (rules read them), and
so are each bucket's count, sum, min and max. Tier boundaries are judged against the ts of the
sample being recorded, and against the newest event's ts by `sweep`.

Built-in series (`BUILTIN`), each fed by the events named:

- ``stage_duration_seconds{stage}``, ``records_per_second{stage}``: one sample per step run
  that completes, as ``porch stats`` and ``porch status`` count it: from the first dispatch of
  its tasks to the end of the last task that finishes it (a split global-stats step's map,
  reduce, apply and report tasks are one run), and its records in per second of that
- ``stage_task_duration_seconds{stage,phase}``: each task's own time in its runner
  (StageCompleted's ``duration_s``; not a reused task, not an output's collect task); a task
  run again because its artifact was lost (``StageInvalidated``) is a sample of its own, but
  its step's run is counted once, when it first completed
- ``stage_queue_wait_seconds{stage}``: StageDispatched -> StageStarted of a task
- ``execution_duration_seconds``, ``executions_{completed,failed,cancelled,timed_out}_total``,
  ``executions_running``, ``success_rate``, ``failure_rate``: the execution events
- ``schedule_lateness_seconds{schedule}``: a ScheduleFired's slot -> its execution's start
- ``queue_depth``: ExecutionQueued minus the ones admitted or refused
- ``execution_error``: 1 per ExecutionFailed, its text the failing stage and error (for
  ``contains`` rules)
- ``new_failures``: executions that failed or timed out since the monitor's previous sampling
  tick (`take_new_failures`; a live sample, as the host figures are): unlike the ever-growing
  ``executions_failed_total``, it falls back to 0, so a rule on it resolves and fires again
- ``workers_alive``, ``worker_missed_heartbeats{worker}``: the monitor's liveness samples
- ``cpu_percent``, ``memory_percent``, ``disk_percent`` ``{worker}`` and ``host_cpu_percent``,
  ``host_memory_percent`` ``{host}``: WorkerHeartbeat; the monitor's own samples come as
  MetricSampled ``cpu_percent{host}`` and friends (live: never in the log)
- anything else: MetricRecorded, and the numbers under ``metrics`` in a stage's report
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice, repeat, starmap, takewhile
from math import isfinite
from operator import attrgetter
from typing import Any, Final

from store.projections.plan import Phase
from store.statecodec import StateCodec

Fields = dict[str, Any]
Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]

BUILTIN: Final = (
    "stage_duration_seconds", "records_per_second", "stage_task_duration_seconds",
    "stage_queue_wait_seconds",
    "execution_duration_seconds", "executions_completed_total", "executions_failed_total",
    "executions_cancelled_total", "executions_timed_out_total", "executions_running",
    "success_rate", "failure_rate", "schedule_lateness_seconds", "queue_depth", "cpu_percent",
    "memory_percent", "disk_percent", "host_cpu_percent", "host_memory_percent",
    "workers_alive", "worker_missed_heartbeats", "execution_error", "rejected_messages_total",
    "new_failures",
)  # fmt: skip
FINISHED: Final = {
    "ExecutionCompleted": "completed",
    "ExecutionFailed": "failed",
    "ExecutionCancelled": "cancelled",
    "ExecutionTimedOut": "timed_out",
}
MAX_PENDING: Final = 100_000  # dispatched-but-not-started tasks remembered (bounded)
MAX_RUNNING: Final = 10_000  # running executions whose steps are followed (the oldest go first)
GATES: Final = frozenset({Phase.RUN.value, Phase.APPLY.value, Phase.REPORT.value})
MAX_SERIES: Final = 20_000  # distinct (name, labels); samples of further ones are counted, not kept
MINUTE_S: Final = 60.0
HOUR_S: Final = 3600.0
MINUTE_WINDOW_S: Final = 24 * 3600.0  # minute buckets kept this long, then hour buckets
MAX_MINUTE_BUCKETS: Final = 24 * 60
ROLL_SLACK_S: Final = 300.0  # raw samples roll into minutes five minutes at a time
_START: Final = attrgetter("start")


@dataclass(slots=True)
class Bucket:
    """The samples of one minute or one hour of a series, folded into what the views need."""

    start: float  # a multiple of the bucket's width, in epoch seconds
    count: int
    sum: float
    min: float
    max: float
    last: float  # the value of the sample with the newest ts
    first_ts: float
    last_ts: float


@dataclass(slots=True)
class Series:
    """One metric and labels: raw samples (in arrival order), then minute and hour buckets (in
    time order), oldest first (see the module doc); no sample is in two tiers."""

    name: str
    labels: Labels
    raw_ts: deque[float] = field(default_factory=deque)
    raw_values: deque[float] = field(default_factory=deque)
    last: float = 0.0
    last_ts: float = 0.0
    count: int = 0  # samples ever added (counters survive the retention trim)
    text: str = ""  # the latest sample's text, for text conditions (an execution's error)
    minutes: deque[Bucket] = field(default_factory=deque)
    hours: deque[Bucket] = field(default_factory=deque)
    head_ts: float = 0.0  # raw_ts[0], read on each sample: that float is cold in the cache

    @property
    def samples(self) -> list[tuple[float, float]]:
        """The raw samples as ``(ts, value)`` pairs, oldest first (a copy)."""
        return list(zip(self.raw_ts, self.raw_values, strict=True))


@dataclass(slots=True)
class StepRun:
    """A step of a running execution, as far as its duration needs: when each of its tasks was
    dispatched (the current attempt's), and which have completed. It is done when every task
    that finishes it (``gates``: its run or apply parts, and its report) has completed."""

    stage: str
    first_phase: str
    gates: int
    dispatched: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)
    completed: dict[tuple[str, int], float] = field(default_factory=dict)
    failed: set[tuple[str, int]] = field(default_factory=set)  # until dispatched again
    rows_in: int = 0


@dataclass(slots=True)
class MetricsState:
    retention_s: float = 24 * 3600.0
    raw_window_s: float = 3600.0  # raw samples kept this long (at most the retention), then minutes
    raw_max_samples: int = 4800  # and at most this many per series, whatever the rate
    series: dict[SeriesKey, Series] = field(default_factory=dict)
    by_name: dict[str, list[Series]] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)  # execution -> status
    status_counts: dict[str, int] = field(default_factory=dict)
    dispatched: dict[str, tuple[float, str]] = field(default_factory=dict)  # task -> (ts, stage)
    tasks_of: dict[str, set[str]] = field(default_factory=dict)  # execution -> dispatched tasks
    # task -> its events logged before its dispatch (on its way), folded right after it
    early: dict[str, list[Fields]] = field(default_factory=dict)
    steps: dict[str, dict[str, StepRun]] = field(default_factory=dict)  # running: step -> run
    fire_times: dict[str, tuple[float, str]] = field(default_factory=dict)  # execution -> slot
    queued: set[str] = field(default_factory=set)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest_ts: float = 0.0
    next_sweep_ts: float = 0.0
    dropped_samples: int = 0  # non-finite values, or series past MAX_SERIES
    failures_seen: int = -1  # failed or timed out at the last sampling tick (-1: none yet)
    last_seq: int = 0
    events: int = 0
    changed: list[Series] = field(default_factory=list)  # series the last event added to

    def __post_init__(self) -> None:
        if not (self.raw_window_s >= 0 and self.raw_max_samples >= 1):
            raise ValueError(f"metrics: raw_window_s {self.raw_window_s} must be >= 0 and "
                             f"raw_max_samples {self.raw_max_samples} >= 1")  # fmt: skip

    def get(self, name: str, labels: Labels = ()) -> Series | None:
        return self.series.get((name, labels))


def labels_of(mapping: dict[str, Any]) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


def record(
    state: MetricsState, name: str, labels: Labels, ts: float, value: float, text: str = ""
) -> None:
    if not isfinite(value):  # NaN or infinite: not a sample
        state.dropped_samples += 1
        return
    key = (name, labels)
    series = state.series.get(key)
    if series is None:
        if len(state.series) >= MAX_SERIES:
            state.dropped_samples += 1
            return
        series = state.series[key] = Series(name, labels)
        state.by_name.setdefault(name, []).append(series)
    raw_ts = series.raw_ts
    if not raw_ts:
        series.head_ts = ts
    raw_ts.append(ts)
    series.raw_values.append(value)
    series.last, series.last_ts, series.text = value, ts, text
    series.count += 1
    head = series.head_ts
    if (
        head < ts - state.retention_s
        or head < ts - state.raw_window_s - ROLL_SLACK_S
        or len(raw_ts) > state.raw_max_samples
    ):
        _age(state, series, ts)
    state.changed.append(series)


def _age(state: MetricsState, series: Series, now: float, *, whole: bool = False) -> None:
    """Move what left a tier to the next one as of ``now``: raw samples older than the raw window
    or past `raw_low_water` (oldest first) into minutes; drop what is older than the retention.
    Minutes older than the minute window or past `MAX_MINUTE_BUCKETS` go into hours, judged
    when a minute bucket opens or when ``whole`` (the sweep): enough for the bounds to hold.

    `record` calls it only once the raw samples are a `ROLL_SLACK_S` past the window or over
    ``raw_max_samples``, so that the samples move in batches."""
    horizon = now - state.retention_s
    raw_ts, minutes = series.raw_ts, series.minutes
    over = max(0, len(raw_ts) - raw_low_water(state))
    cut = now - min(state.raw_window_s, state.retention_s)
    # then the samples older than the window after those, counted at C speed
    over += len(list(takewhile(cut.__gt__, islice(raw_ts, over, None))))
    ts = list(starmap(raw_ts.popleft, repeat((), over)))
    vs = list(starmap(series.raw_values.popleft, repeat((), over)))
    series.head_ts = raw_ts[0] if raw_ts else 0.0
    if ts and _roll(minutes, ts, vs, horizon):
        whole = True
    if not whole:
        return
    hours = series.hours
    cut = now - min(MINUTE_WINDOW_S, state.retention_s)
    while minutes and (minutes[0].last_ts < cut or len(minutes) > MAX_MINUTE_BUCKETS):
        _merge(hours, minutes.popleft(), HOUR_S)
    most = int(state.retention_s // HOUR_S) + 2  # bounded even if timestamps jump about
    while hours and (hours[0].last_ts < horizon or len(hours) > most):
        hours.popleft()


def raw_low_water(state: MetricsState) -> int:
    """The raw samples a series is cut down to once it holds more than ``raw_max_samples``."""
    return max(1, state.raw_max_samples - state.raw_max_samples // 8)


def _roll(minutes: deque[Bucket], ts: list[float], vs: list[float], horizon: float) -> bool:
    """Fold raw samples (oldest first) into minute buckets, a minute's run at a time, leaving
    out those older than ``horizon``; whether a bucket opened."""
    opened = False
    if ts != sorted(ts):  # late samples (a skewed clock): one at a time
        for t, v in zip(ts, vs, strict=True):
            if t >= horizon:
                opened |= _merge(minutes, Bucket(t, 1, v, v, v, v, t, t), MINUTE_S)
        return opened
    i, n = bisect_left(ts, horizon), len(ts)
    while i < n:
        t = ts[i]
        start = t - t % MINUTE_S
        j = bisect_left(ts, start + MINUTE_S, i)
        run = vs[i:j]
        part = Bucket(start, j - i, sum(run), min(run), max(run), vs[j - 1], t, ts[j - 1])
        opened |= _merge(minutes, part, MINUTE_S)
        i = j
    return opened


def _merge(buckets: deque[Bucket], part: Bucket, width: float) -> bool:
    """Add ``part``'s samples to the bucket of ``width`` seconds they fall in (``part`` itself
    becomes it if there is none yet: then True); buckets stay in order."""
    start = part.start - part.start % width
    i = len(buckets)
    if buckets and start <= buckets[-1].start:  # the newest bucket, or older ones: late samples
        i = i - 1 if buckets[-1].start == start else bisect_left(buckets, start, key=_START)
    if i == len(buckets) or buckets[i].start != start:
        part.start = start
        buckets.insert(i, part)
        return True
    b = buckets[i]
    b.count += part.count
    b.sum += part.sum
    b.min = min(b.min, part.min)
    b.max = max(b.max, part.max)
    if part.last_ts >= b.last_ts:
        b.last, b.last_ts = part.last, part.last_ts
    b.first_ts = min(b.first_ts, part.first_ts)
    return False


def _stage(f: Fields) -> Labels:
    return (("stage", str(f.get("stage", ""))),)


def _step_of(f: Fields, state: MetricsState) -> StepRun | None:
    return state.steps.get(str(f.get("execution_id", "")), {}).get(str(f.get("step", "")))


def _early(f: Fields, state: MetricsState) -> bool:
    """Hold a task's event whose dispatch the fold has not seen yet (a worker may be handed a
    task as its dispatch is sent): `_dispatched` folds it. Bounded like the rest."""
    eid, task = str(f.get("execution_id", "")), str(f.get("task_id", ""))
    if state.statuses.get(eid) not in ("running", "paused") or task in state.tasks_of.get(eid, ()):
        return False
    if task not in state.early and len(state.early) >= MAX_PENDING:
        return False
    state.early.setdefault(task, []).append(f)
    return True


def _completed(seq: int, f: Fields, state: MetricsState) -> None:
    if _early(f, state):
        return
    ts, labels = f["ts"], _stage(f)
    sent = state.dispatched.pop(f.get("task_id", ""), None)
    started = f.get("started_ts")
    if started and sent is not None:  # a short task's start, told by its completion
        record(state, "stage_queue_wait_seconds", labels, started, max(0.0, started - sent[0]))
    phase = str(f.get("phase", Phase.RUN.value))
    if phase == Phase.COLLECT:  # collect writes the output: not the stage
        return
    if not f.get("reused"):
        record(
            state,
            "stage_task_duration_seconds",
            (*labels, ("phase", phase)),
            ts,
            float(f.get("duration_s", 0.0)),
        )
    run = _step_of(f, state)
    key = (phase, int(f.get("partition", 0)))
    current = run.dispatched.get(key) if run is not None else None
    if (
        run is not None
        and current is not None
        and current[0] == f.get("attempt", 1)
        and key not in run.failed
    ):
        _step_task_done(state, f, run, key, ts)
    report = f.get("report")
    if isinstance(report, dict):
        custom = report.get("metrics")
        if isinstance(custom, dict):
            for name, value in custom.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    record(state, str(name), labels, ts, float(value))


def _step_task_done(
    state: MetricsState, f: Fields, run: StepRun, key: tuple[str, int], ts: float
) -> None:
    """A task of a step completed (its current attempt, once): when it was the last of those
    that finish the step, the step's run is a sample, as the execution fold times it."""
    if key in run.completed:
        return
    run.completed[key] = ts
    if key[0] == run.first_phase:
        run.rows_in += int(f.get("rows_in", 0))
    finished = [t for (phase, _), t in run.completed.items() if phase in GATES]
    if len(finished) < run.gates:
        return
    steps = state.steps[str(f["execution_id"])]
    del steps[str(f["step"])]
    if not steps:  # every step ran: nothing left to follow of it
        del state.steps[str(f["execution_id"])]
    duration = max(finished) - min(t for _, t in run.dispatched.values())
    labels = (("stage", run.stage),)
    record(state, "stage_duration_seconds", labels, ts, duration)
    if duration > 0:
        record(state, "records_per_second", labels, ts, run.rows_in / duration)


def _dispatched(seq: int, f: Fields, state: MetricsState) -> None:
    task = str(f.get("task_id", ""))
    if len(state.dispatched) < MAX_PENDING:
        state.dispatched[task] = (f["ts"], str(f.get("stage", "")))
    state.tasks_of.setdefault(str(f.get("execution_id", "")), set()).add(task)
    run = _step_of(f, state)
    if run is not None and f.get("phase") != Phase.COLLECT:
        key = (str(f.get("phase", Phase.RUN.value)), int(f.get("partition", 0)))
        attempt = int(f.get("attempt", 1))
        known = run.dispatched.get(key)
        if key not in run.completed and (known is None or attempt > known[0]):
            run.dispatched[key] = (attempt, f["ts"])
            run.failed.discard(key)
    for held in state.early.pop(task, ()):  # what its worker said before it was in the log
        HANDLERS[held["type"]](seq, held, state)


def _started_task(seq: int, f: Fields, state: MetricsState) -> None:
    if _early(f, state):
        return
    sent = state.dispatched.get(f.get("task_id", ""))
    if sent is not None:
        record(state, "stage_queue_wait_seconds", _stage(f), f["ts"], max(0.0, f["ts"] - sent[0]))


def _failed_task(seq: int, f: Fields, state: MetricsState) -> None:
    if _early(f, state):
        return
    state.dispatched.pop(f.get("task_id", ""), None)
    run = _step_of(f, state)
    key = (str(f.get("phase", Phase.RUN.value)), int(f.get("partition", 0)))
    current = run.dispatched.get(key) if run is not None else None
    if run is not None and current is not None and current[0] == f.get("attempt", 1):
        run.failed.add(key)  # a late completion of this attempt counts for nothing


def _set_status(state: MetricsState, eid: str, status: str) -> str | None:
    old = state.statuses.get(eid)
    if old == status:
        return old
    counts = state.status_counts
    if old is not None:
        counts[old] -= 1
    counts[status] = counts.get(status, 0) + 1
    state.statuses[eid] = status
    return old


def _requested(seq: int, f: Fields, state: MetricsState) -> None:
    eid = f["execution_id"]
    if eid not in state.statuses:
        _set_status(state, eid, "requested")
    if eid in state.queued:
        state.queued.discard(eid)
        record(state, "queue_depth", (), f["ts"], float(len(state.queued)))


def _exec_started(seq: int, f: Fields, state: MetricsState) -> None:
    eid, ts = f["execution_id"], f["ts"]
    plan = f.get("plan") or {}
    fresh = state.statuses.get(eid) in (None, "requested")
    if fresh and eid not in state.steps:
        if len(state.steps) >= MAX_RUNNING:  # the oldest, if it never ends, goes unfollowed
            del state.steps[next(iter(state.steps))]
        state.steps[eid] = {
            str(step["id"]): StepRun(
                stage=str(step["stage"]),
                first_phase=str(step["phases"][0]),
                gates=int(step["parts"]) + (Phase.REPORT.value in step["phases"]),
            )
            for step in plan.get("steps", [])
        }
    if state.statuses.get(eid) in (None, "requested"):
        _set_status(state, eid, "running")
        record(state, "executions_running", (), ts, float(state.status_counts.get("running", 0)))
    fire = state.fire_times.pop(eid, None)
    if fire is not None:
        record(
            state, "schedule_lateness_seconds", (("schedule", fire[1]),), ts, max(0.0, ts - fire[0])
        )


def _finished(seq: int, f: Fields, state: MetricsState) -> None:
    eid, ts = f["execution_id"], f["ts"]
    status = FINISHED[f["type"]]
    for task in state.tasks_of.pop(eid, ()):  # tasks of retried or lost attempts
        state.dispatched.pop(task, None)
    state.steps.pop(eid, None)  # steps that never completed: no run to count
    for task in [t for t in state.early if t.startswith(f"{eid}/")]:  # never dispatched now
        del state.early[task]
    state.fire_times.pop(eid, None)
    old = state.statuses.get(eid)
    if old in FINISHED.values():
        return
    _set_status(state, eid, status)
    counts = state.status_counts
    record(state, f"executions_{status}_total", (), ts, float(counts[status]))
    record(state, "executions_running", (), ts, float(counts.get("running", 0)))
    if status == "completed" and "duration_s" in f:
        record(state, "execution_duration_seconds", (), ts, float(f["duration_s"]))
    if status == "failed":
        text = f"{f.get('stage') or ''}: {f.get('error') or ''}"
        record(state, "execution_error", (), ts, 1.0, text[:1000])
    elif status == "completed":  # the latest execution went well: error rules clear
        record(state, "execution_error", (), ts, 0.0, "")
    done = sum(counts.get(s, 0) for s in FINISHED.values())
    ok = counts.get("completed", 0)
    record(state, "success_rate", (), ts, ok / done)
    record(
        state, "failure_rate", (), ts, (counts.get("failed", 0) + counts.get("timed_out", 0)) / done
    )
    if eid in state.queued:  # refused while queued
        state.queued.discard(eid)
        record(state, "queue_depth", (), ts, float(len(state.queued)))


def _fired(seq: int, f: Fields, state: MetricsState) -> None:
    if len(state.fire_times) < MAX_PENDING:
        state.fire_times[f["execution_id"]] = (float(f["fire_time"]), str(f["schedule_id"]))


def _queued(seq: int, f: Fields, state: MetricsState) -> None:
    eid = f["execution_id"]
    if eid not in state.queued and state.statuses.get(eid) is None:
        state.queued.add(eid)
        record(state, "queue_depth", (), f["ts"], float(len(state.queued)))


def _heartbeat(seq: int, f: Fields, state: MetricsState) -> None:
    ts, worker = f["ts"], str(f["worker"])
    info = state.workers.setdefault(worker, {"host": str(f.get("host", "")), "stopped": False})
    info["last_seen"] = ts
    info["stopped"] = False
    wl = (("worker", worker),)
    record(state, "cpu_percent", wl, ts, float(f["cpu_percent"]))
    record(state, "memory_percent", wl, ts, float(f["memory_percent"]))
    if "disk_percent" in f:
        record(state, "disk_percent", wl, ts, float(f["disk_percent"]))
    hl = (("host", info["host"]),)
    if "host_cpu_percent" in f:
        record(state, "host_cpu_percent", hl, ts, float(f["host_cpu_percent"]))
    if "host_memory_percent" in f:
        record(state, "host_memory_percent", hl, ts, float(f["host_memory_percent"]))
    if "malformed" in f:
        rl = (("actor", worker), ("reason", "malformed task"))
        record(state, "rejected_messages_total", rl, ts, float(f["malformed"]))


def _worker_seen(seq: int, f: Fields, state: MetricsState) -> None:
    worker = str(f["worker"])
    info = state.workers.setdefault(worker, {"host": str(f.get("host", "")), "stopped": False})
    info["last_seen"] = f["ts"] if f["type"] != "WorkerLost" else f["last_seen_ts"]
    info["stopped"] = f["type"] in ("WorkerStopped", "WorkerLost")
    if f.get("host"):
        info["host"] = str(f["host"])


def _metric(seq: int, f: Fields, state: MetricsState) -> None:
    value = f["value"]
    labels = f.get("labels") or {}
    if isinstance(labels, dict) and isinstance(value, int | float):
        record(state, str(f["name"]), labels_of(labels), f["ts"], float(value))


HANDLERS: Final[dict[str, Callable[[int, Fields, MetricsState], None]]] = {
    "StageCompleted": _completed,
    "StageDispatched": _dispatched,
    "StageStarted": _started_task,
    "StageFailed": _failed_task,
    "ExecutionRequested": _requested,
    "ExecutionStarted": _exec_started,
    "ExecutionCompleted": _finished,
    "ExecutionFailed": _finished,
    "ExecutionCancelled": _finished,
    "ExecutionTimedOut": _finished,
    "ScheduleFired": _fired,
    "ExecutionQueued": _queued,
    "WorkerHeartbeat": _heartbeat,
    "WorkerStarted": _worker_seen,
    "WorkerStopped": _worker_seen,
    "WorkerLost": _worker_seen,
    "WorkerReturned": _worker_seen,
    "MetricRecorded": _metric,
}
# live events: published, never in the log (heartbeats and periodic samples); `observe` takes them
LIVE_HANDLERS: Final[dict[str, Callable[[int, Fields, MetricsState], None]]] = {
    "WorkerHeartbeat": _heartbeat,
    "MetricSampled": _metric,
}
TYPES: Final = frozenset(HANDLERS)
LIVE_TYPES: Final = frozenset(LIVE_HANDLERS)


def evolve(seq: int, fields: Fields, state: MetricsState) -> MetricsState:
    """Fold one event (in seq order); ``state.changed`` lists the series it added to."""
    if seq <= state.last_seq:
        raise ValueError(f"metrics fold: seq {seq} arrived after {state.last_seq}")
    state.last_seq = seq
    state.changed.clear()
    handler = HANDLERS.get(fields["type"])
    if handler is not None:
        ts = fields["ts"]
        if ts > state.latest_ts:
            state.latest_ts = ts
        state.events += 1
        handler(seq, fields, state)
        if state.latest_ts >= state.next_sweep_ts:
            sweep(state)
    return state


def observe(fields: Fields, state: MetricsState) -> MetricsState:
    """Take a live event (a heartbeat, a sample): series as `evolve` would feed them, with no
    seq, since it has no place in the log. ``state.changed`` lists the series it added to."""
    state.changed.clear()
    handler = LIVE_HANDLERS.get(fields["type"])
    if handler is not None:
        ts = fields["ts"]
        if ts > state.latest_ts:
            state.latest_ts = ts
        handler(0, fields, state)
        if state.latest_ts >= state.next_sweep_ts:
            sweep(state)
    return state


def _failures(state: MetricsState) -> int:
    counts = state.status_counts
    return counts.get("failed", 0) + counts.get("timed_out", 0)


def count_failures_from_here(state: MetricsState) -> None:
    """Start counting ``new_failures`` at this point, unless a count is already under way (a
    snapshot keeps where it was, so failures while the monitor was down count at its first
    tick). The monitor calls it as it goes live: a fresh state counts none of its history, and
    every failure after that, even one folded before the first sampling tick."""
    if state.failures_seen < 0:
        state.failures_seen = _failures(state)


def take_new_failures(state: MetricsState) -> int:
    """Executions that failed or timed out since the previous call (the monitor calls it once a
    sampling tick). A state that never started counting counts none of its history."""
    now = _failures(state)
    seen, state.failures_seen = state.failures_seen, now
    return max(0, now - seen) if seen >= 0 else 0


def sweep(state: MetricsState) -> None:
    """Age every series as of the newest event (idle ones too), drop the empty ones and the
    workers gone for longer than the retention; runs every twentieth of the retention."""
    now = state.latest_ts
    horizon = now - state.retention_s
    state.next_sweep_ts = now + max(60.0, state.retention_s / 20)
    for key, series in list(state.series.items()):
        _age(state, series, now, whole=True)
        if not (series.raw_ts or series.minutes or series.hours):
            del state.series[key]
            state.by_name[series.name].remove(series)
            if not state.by_name[series.name]:
                del state.by_name[series.name]
    for worker, info in list(state.workers.items()):
        if info.get("last_seen", horizon) < horizon:
            del state.workers[worker]


def _index(state: MetricsState) -> None:
    state.by_name = {}
    for series in state.series.values():
        state.by_name.setdefault(series.name, []).append(series)


FOLD_VERSION: Final = 4  # 2: history downsampled to minute and hour buckets; 3: step runs;
# 4: a task's events logged before its dispatch wait for it
CODEC: Final = StateCodec(
    MetricsState, fold_version=FOLD_VERSION, transient=("by_name", "changed"), after_load=_index
)
