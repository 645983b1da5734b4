"""The scheduler's decisions: a fold of the log plus a heap of due times, with the clock passed in.

`SchedulerCore` is the whole scheduler without sockets: ``apply`` folds an event, ``decide(now)``
returns the events to send, ``next_due()`` says when to wake up. Tests drive it with a fake
clock; the actor (`actors.scheduler.actor`) drives it with the real one and the hub.

Every decision has an id made from what it decides (a fire from its idempotency key, an
admission from its execution id), so a decision sent twice, by a restarted scheduler or by two
schedulers on one data dir, is one event: the hub drops the repeat, and the fold ignores a
second fire of a key it has seen.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Final

from actors.scheduler.specs import DEFAULTS, ScheduleSpec, check_stored, timetable
from actors.scheduler.timetable import Slots, Timetable, slots_between
from actors.shared.ids import decision_id
from actors.shared.outbox import RESEND_AFTER_S
from bus.events import (
    CancelRequested,
    Event,
    ExecutionFailed,
    ExecutionQueued,
    ExecutionRequested,
    RetryScheduled,
    ScheduleFired,
    ScheduleMissed,
)
from store.projections import schedules as folds
from store.projections.schedules import RunState, SchedulesState, ScheduleState

log = logging.getLogger("porch.scheduler")
WORKER_STALE_S: Final = 15.0

ON_TIME_LIMIT: Final = 100_000
_NONE: Final = Slots([], 0, None)


def retry_delay_s(
    strategy: str,
    retry: int,
    *,
    delay_s: float,
    cap_s: float,
    jitter: float = 0.0,
    seed: str = "",
) -> float | None:
    """The wait before retry number ``retry`` (1 is the first), or None for no retry.

    fixed: ``delay``; linear: ``delay * retry``; exponential: ``delay * 2**(retry-1)``; each
    capped at ``cap_s``. ``jitter`` (0..1) takes up to that fraction off, drawn from a generator
    seeded by ``seed``, so the same run gets the same delays every time."""
    if strategy == "no_retry" or retry < 1:
        return None
    if strategy == "fixed_delay":
        delay = delay_s
    elif strategy == "linear_backoff":
        delay = delay_s * retry
    elif strategy == "exponential_backoff":
        delay = delay_s * 2.0 ** min(retry - 1, 60)
    else:
        raise ValueError(f"unknown retry strategy {strategy!r}")
    delay = min(delay, cap_s) if cap_s > 0 else delay
    if jitter > 0:
        delay *= 1.0 - jitter * random.Random(f"{seed}/{retry}").random()
    return delay


def slot_jitter_s(schedule_id: str, slot: float, jitter_s: float) -> float:
    """A fixed, spread-out delay for one slot of one schedule (the same after any restart)."""
    if jitter_s <= 0:
        return 0.0
    digest = hashlib.sha256(f"{schedule_id}@{slot!r}".encode()).digest()
    return jitter_s * int.from_bytes(digest[:4], "big") / 2**32


def slot_execution_id(schedule_id: str, slot: float) -> str:
    """``<schedule>-YYYYmmddTHHMMSS[.mmm]Z``: readable, sortable, one per slot."""
    return f"{schedule_id}-{_stamp(slot)}Z"


@functools.lru_cache(maxsize=1024)
def _stamp(slot: float) -> str:
    whole = math.floor(slot)
    t = time.gmtime(whole)
    stamp = (
        f"{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}T{t.tm_hour:02d}{t.tm_min:02d}{t.tm_sec:02d}"
    )
    millis = round((slot - whole) * 1000)
    return f"{stamp}.{min(millis, 999):03d}" if millis else stamp


@dataclass(slots=True)
class _Table:
    version: int
    table: Timetable | None
    error: str = ""
    checked: bool = False


class SchedulerCore:
    def __init__(self, max_concurrent: int = 3, *, worker_stale_s: float = WORKER_STALE_S) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent_executions must be >= 1, got {max_concurrent}")
        self.max_concurrent = max_concurrent
        self.worker_stale_s = worker_stale_s
        self.state = SchedulesState()
        self.live = False
        self._heap: list[tuple[float, int, str, str, int]] = []
        self._count = itertools.count()
        self._tables: dict[str, _Table] = {}
        # (schedule, its adding's seq) -> the latest slot this process decided on
        self._handled: dict[tuple[str, int], float] = {}
        self._sent: dict[str, float] = {}  # decision id -> when sent, until folded
        self._inflight: dict[str, tuple[Event, float]] = {}  # fires and misses not yet back
        self._admitted: dict[str, float] = {}  # execution id -> when admitted, until folded
        self._dependents: dict[str, set[str]] | None = None
        self._slot_due: dict[str, tuple[int, float]] = {}  # the one live heap slot per schedule
        self._specs: dict[str, tuple[int, ScheduleSpec]] = {}  # typed settings, by version
        self._pending: list[Event] = []
        self._admission_due = False
        self._admitted_at = 0.0

    # --- folding ---------------------------------------------------------------------------------

    def apply(self, seq: int, fields: dict[str, Any], now: float) -> None:
        folds.evolve(seq, fields, self.state)
        event_id = fields.get("id", "")
        self._sent.pop(event_id, None)
        self._inflight.pop(event_id, None)
        schedules, runs, queue_changed = self.state.take_touched()
        if fields["type"] == "ExecutionRequested":
            self._admitted.pop(fields["execution_id"], None)
        if not self.live:
            return
        for sid in schedules:
            self._guard(self._schedule_changed, sid, now)
        for eid in runs:
            self._guard(self._run_changed, eid)
        if queue_changed or runs:
            self._admission_due = True

    def heard(self, fields: dict[str, Any]) -> None:
        """A live heartbeat: keeps its worker's capacity counted (never folded from the log)."""
        folds.heard(fields, self.state)

    @staticmethod
    def _guard(step: Any, *args: Any) -> Any:
        """Run one schedule's or run's step; a bad one is logged and skipped, never fatal."""
        try:
            return step(*args)
        except Exception:
            log.exception("scheduler: %s(%s) failed", step.__name__, args[0])
            return None

    def go_live(self, now: float) -> None:
        """After the catch-up fold: put every schedule, retry and timeout on the heap."""
        self.live = True
        self.state.take_touched()
        for sid in self.state.schedules:  # checked before their first fire: a quick start
            self._guard(lambda s: self._schedule_changed(s, now, check=False), sid)
        for eid, run in self.state.runs.items():
            if run.status in ("retry_wait", "running"):
                self._guard(self._run_changed, eid)
        self._admission_due = True

    # --- reacting to changes --------------------------------------------------------------------

    def spec(self, schedule: ScheduleState) -> ScheduleSpec:
        """The schedule's settings, typed (read once per version of the schedule)."""
        cached = self._specs.get(schedule.schedule_id)
        if cached is None or cached[0] != schedule.version:
            cached = self._specs[schedule.schedule_id] = (
                schedule.version,
                ScheduleSpec.of(schedule.config),
            )
        return cached[1]

    def table(self, schedule: ScheduleState) -> _Table:
        cached = self._tables.get(schedule.schedule_id)
        if cached is None or cached.version != schedule.version:
            try:
                cached = _Table(schedule.version, timetable(schedule.config, schedule.added_ts))
            except Exception as exc:  # any program can publish a config: never crash on one
                cached = _Table(schedule.version, None, f"{type(exc).__name__}: {exc}")
                log.error("scheduler: schedule %s cannot run: %s", schedule.schedule_id, exc)
            self._tables[schedule.schedule_id] = cached
        return cached

    def _check(self, schedule: ScheduleState) -> Timetable | None:
        """The whole config checked once per version (at its adding, or for schedules folded at
        start, before their first fire); None if it cannot run."""
        cached = self.table(schedule)
        if cached.table is not None and not cached.checked:
            try:
                check_stored(schedule.config)
            except Exception as exc:
                log.error("scheduler: schedule %s cannot run: %s", schedule.schedule_id, exc)
                cached.table, cached.error = None, f"{type(exc).__name__}: {exc}"
            cached.checked = True
        return cached.table

    def _after(self, schedule: ScheduleState) -> float:
        last = schedule.last_slot
        handled = self._handled.get((schedule.schedule_id, schedule.added_seq))
        candidates = [t for t in (last, handled) if t is not None]
        return max([*candidates, schedule.counted_from or schedule.added_ts])

    def next_fire(self, schedule: ScheduleState, now: float | None = None) -> float | None:
        """The next slot this schedule fires at (None: paused, finished, or dependency-driven)."""
        if schedule.paused:
            return None
        table = self.table(schedule).table
        if table is None:
            return None
        return table.next_after(self._after(schedule))

    def _schedule_changed(self, sid: str, now: float, *, check: bool = True) -> None:
        schedule = self.state.schedules.get(sid)
        if check and schedule is not None:
            self._check(schedule)  # a schedule added live is checked now, not at its first fire
        self._dependents = None
        if schedule is None:
            self._tables.pop(sid, None)
            self._specs.pop(sid, None)
            self._slot_due.pop(sid, None)
            for key in [k for k in self._handled if k[0] == sid]:
                del self._handled[key]
            return
        if schedule.kind == "dependency":
            self._check_dependency(schedule)
            return
        nxt = self.next_fire(schedule)
        if nxt is not None:
            # read straight from the stored config: this runs for every schedule at start
            jitter = schedule.config.get("jitter_seconds", DEFAULTS["jitter_seconds"])
            due = nxt + slot_jitter_s(sid, nxt, jitter)
            self._push_slot(sid, schedule.version, due)

    def _push_slot(self, sid: str, version: int, due: float) -> None:
        if self._slot_due.get(sid) == (version, due):
            return
        self._slot_due[sid] = (version, due)
        self._push(due, "slot", sid, version)

    def _run_changed(self, eid: str) -> None:
        run = self.state.runs.get(eid)
        if run is None:
            return
        if run.status == "retry_wait":
            self._push(run.due_ts, "retry", eid, 0)
        elif run.status == "running" and run.timeout_s > 0:
            self._push(run.started_ts + run.timeout_s, "timeout", eid, 0)
        elif run.status == "completed":
            if self._dependents is None:
                self._rebuild_dependents()
            assert self._dependents is not None
            for dependent in self._dependents.get(run.schedule_id, ()):
                schedule = self.state.schedules.get(dependent)
                if schedule is not None:
                    self._check_dependency(schedule)

    def _rebuild_dependents(self) -> None:
        self._dependents = {}
        for sid, schedule in self.state.schedules.items():  # every schedule: the stored config
            for up in schedule.config.get("dependencies", ()):
                self._dependents.setdefault(up, set()).add(sid)

    def _push(self, due: float, kind: str, ident: str, version: int) -> None:
        heapq.heappush(self._heap, (due, next(self._count), kind, ident, version))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    # --- deciding ----------------------------------------------------------------------------

    def decide(self, now: float, max_due: int = 128) -> list[Event]:
        """What is due at ``now``: fires and misses, queueing, retries, timeouts, admissions.

        At most ``max_due`` heap entries per call, so the first fires of a burst are sent while
        the rest are still being decided; ``next_due() <= now`` says more are waiting."""
        events, self._pending = self._pending, []
        for event_id, (event, sent) in list(self._inflight.items()):
            if now - sent >= RESEND_AFTER_S:  # a fire or miss that never came back: again
                self._inflight[event_id] = (event, now)
                self._sent.pop(event_id, None)
                events.append(event)
        popped = 0
        while self._heap and self._heap[0][0] <= now and popped < max_due:
            popped += 1
            due, _, kind, ident, version = heapq.heappop(self._heap)
            if kind == "slot":
                if self._slot_due.get(ident) != (version, due):
                    continue  # superseded by a change of the schedule
                del self._slot_due[ident]
                schedule = self.state.schedules.get(ident)
                if schedule is not None and schedule.version == version and not schedule.paused:
                    decided = self._guard(self._slots, schedule, now) or []
                    for event in decided:
                        self._inflight[event.id] = (event, now)
                    events.extend(decided)
            elif kind == "retry":
                run = self.state.runs.get(ident)
                if run is not None and run.status == "retry_wait":
                    events.append(self._queue(run))
            elif kind == "timeout":
                run = self.state.runs.get(ident)
                if run is not None and run.status == "running":
                    events.append(
                        CancelRequested(
                            id=decision_id("timeout", ident),
                            execution_id=ident,
                            reason="timeout",
                            timeout_s=run.timeout_s,
                        )
                    )
        if self._heap and self._heap[0][0] <= now:
            return self._unsent(events, now)  # more fires due: they go out first
        for eid in self.state.unqueued:  # in fire order: FIFO within a priority
            if not self._sent_recently(f"queued:{eid}", now):
                events.append(self._queue(self.state.runs[eid]))
        for eid in sorted(self.state.unretried):
            if not self._sent_recently(f"retry:{eid}", now):
                event = self._guard(self._retry, self.state.runs[eid])
                if event is not None:
                    events.append(event)
        if self._admission_due or (self.state.queue and now - self._admitted_at >= 1.0):
            # also once a second while runs wait: workers coming back change what fits
            self._admission_due = False
            self._admitted_at = now
            events.extend(self._guard(self._admit, now) or [])
        return self._unsent(events, now)

    def _sent_recently(self, event_id: str, now: float) -> bool:
        sent = self._sent.get(event_id)
        return sent is not None and now - sent < RESEND_AFTER_S

    def _unsent(self, events: list[Event], now: float) -> list[Event]:
        out = []
        for event in events:
            sent = self._sent.get(event.id)
            if sent is not None and now - sent < RESEND_AFTER_S:
                continue
            self._sent[event.id] = now
            out.append(event)
        if len(self._sent) > 100_000:  # decisions that never came back: let them be retaken
            self._sent = {k: v for k, v in self._sent.items() if now - v < RESEND_AFTER_S}
        return out

    def _slots(self, schedule: ScheduleState, now: float) -> list[Event]:
        """Fire what is due; record as missed what the misfire policy skips; push the next slot.

        A slot is on time while it is less than ``misfire_grace_seconds`` (plus the jitter) old:
        every on-time slot fires. Older ones go by the policy: ``skip`` none, ``run_once`` the
        latest (unless an on-time one fires anyway), ``catch_up`` the latest ``max_catch_up``."""
        sid, spec = schedule.schedule_id, self.spec(schedule)
        cached = self.table(schedule)
        if cached.table is None:
            return []
        table = self._check(schedule)
        if table is None:
            return []
        events: list[Event] = []
        after = self._after(schedule)
        if schedule.resumed_ts > after:
            paused = slots_between(table, after, schedule.resumed_ts, 1)
            if paused.count:
                events.append(self._missed(sid, paused, paused.latest[-1], paused.count,
                                           "the schedule was paused"))  # fmt: skip
                after = paused.latest[-1]
        jitter = spec.jitter_seconds
        boundary = now - spec.misfire_grace_seconds - jitter
        first = table.next_after(after)
        if first is not None and first > boundary:  # the usual case: nothing is late
            slot: float | None = first
            while slot is not None and slot <= now and len(events) < ON_TIME_LIMIT:
                events.extend(self._fire(schedule, slot))
                newest = slot
                slot = table.next_after(slot)
            if slot is not None and slot <= now:  # more than ON_TIME_LIMIT due at once
                slot = table.next_after(now)
            if first <= now:
                key = (sid, schedule.added_seq)
                self._handled[key] = max(newest, self._handled.get(key, newest))
            if slot is not None:
                self._push_slot(sid, schedule.version, slot + slot_jitter_s(sid, slot, jitter))
            return events
        policy = spec.misfire_policy
        keep = spec.max_catch_up
        # one more than kept, so the last slot not fired is known for its ScheduleMissed
        late = slots_between(table, after, boundary, keep + 1) if boundary > after else _NONE
        on_time = slots_between(table, max(after, boundary), now, ON_TIME_LIMIT)
        fire_late: list[float] = []
        if late.count:
            if policy == "run_once" and not on_time.count:
                fire_late = late.latest[-1:]
            elif policy == "catch_up":
                fire_late = late.latest[-keep:]
            skipped = late.count - len(fire_late)
            if skipped:
                unfired = late.latest[: len(late.latest) - len(fire_late)]
                last = unfired[-1] if unfired else (late.first or after)
                lateness = now - (late.first or now)
                reason = {
                    "skip": f"misfire: {lateness:.0f} s late, past the grace of "
                    f"{spec.misfire_grace_seconds:g} s (policy skip)",
                    "run_once": "misfire: coalesced into one run (policy run_once)",
                    "catch_up": f"misfire: over max_catch_up {keep} (policy catch_up)",
                }[policy]
                events.append(self._missed(sid, late, last, skipped, reason))
        if on_time.count > len(on_time.latest):
            skipped_slots = on_time.count - len(on_time.latest)
            events.append(self._missed(sid, on_time, on_time.latest[0], skipped_slots,
                                       f"over {ON_TIME_LIMIT} slots due at once"))  # fmt: skip
        for slot in [*fire_late, *on_time.latest]:
            events.extend(self._fire(schedule, slot))
        newest = (
            on_time.latest[-1] if on_time.latest else (late.latest[-1] if late.latest else None)
        )
        if newest is not None:
            key = (sid, schedule.added_seq)
            self._handled[key] = max(newest, self._handled.get(key, newest))
        nxt = table.next_after(max(after, newest) if newest is not None else after)
        if nxt is not None:
            self._push_slot(sid, schedule.version, nxt + slot_jitter_s(sid, nxt, jitter))
        return events

    def _missed(
        self, sid: str, slots: Slots, last: float, count: int, reason: str
    ) -> ScheduleMissed:
        start = slots.first if slots.first is not None else last
        if not slots.exact:
            reason += f" (about {count} slots)"
        return ScheduleMissed(
            id=decision_id("missed", sid, start, last),
            schedule_id=sid,
            fire_time=start,
            last_fire_time=last,
            count=count,
            reason=reason,
        )

    def _fire(self, schedule: ScheduleState, slot: float) -> list[Event]:
        """The fire alone: its ExecutionQueued follows once the fire is folded (`unqueued`), so a
        burst of fires reaches the log first."""
        sid = schedule.schedule_id
        key = f"{sid}@{slot!r}"
        return [
            ScheduleFired(
                id=f"fire:{key}",  # the key is unique and short: no need to hash it
                schedule_id=sid,
                fire_time=slot,
                key=key,
                execution_id=slot_execution_id(sid, slot),
            )
        ]

    def _queue(self, run: RunState) -> ExecutionQueued:
        return ExecutionQueued(
            id=f"queued:{run.execution_id}",
            execution_id=run.execution_id,
            schedule_id=run.schedule_id,
            priority=run.priority,
            attempt=run.attempt,
        )

    def _retry(self, run: RunState) -> RetryScheduled | None:
        schedule = self.state.schedules.get(run.schedule_id)
        if schedule is None:
            return None
        spec = self.spec(schedule)
        delay = retry_delay_s(
            spec.retry_strategy,
            run.attempt,
            delay_s=spec.retry_delay_minutes * 60,
            cap_s=spec.max_retry_delay_minutes * 60,
            jitter=spec.retry_jitter,
            seed=run.root,
        )
        if delay is None:
            return None
        attempt = run.attempt + 1
        return RetryScheduled(
            id=f"retry:{run.execution_id}",
            execution_id=run.execution_id,
            attempt=attempt,
            delay_s=delay,
            reason=run.error or run.status,
            schedule_id=run.schedule_id,
            retry_execution_id=f"{run.root}.r{attempt}",
            due_ts=run.finished_ts + delay,
        )

    def _check_dependency(self, schedule: ScheduleState) -> None:
        """Fire a dependency schedule when every upstream's latest run succeeded after it was
        added, once per combination of those runs."""
        if schedule.paused:
            return
        latest: list[RunState] = []
        for up in self.spec(schedule).dependencies:
            upstream = self.state.schedules.get(up)
            if upstream is None or not upstream.runs:
                return
            run = self.state.runs[upstream.runs[-1]]
            if run.status != "completed" or run.finished_ts < schedule.added_ts:
                return
            latest.append(run)
        digest = hashlib.sha256("|".join(r.execution_id for r in latest).encode()).hexdigest()[:16]
        key = f"{schedule.schedule_id}@dep-{digest}"
        if key in self.state.keys or key == schedule.latest_dependency_key:
            return
        slot = max(r.finished_ts for r in latest)
        eid = f"{slot_execution_id(schedule.schedule_id, slot)}-{digest[:6]}"
        self._pending.append(
            ScheduleFired(
                id=decision_id("fire", key),
                schedule_id=schedule.schedule_id,
                fire_time=slot,
                key=key,
                execution_id=eid,
            )
        )

    # --- admission ---------------------------------------------------------------------------

    def capacity(self, now: float) -> dict[str, float]:
        return folds.live_capacity(self.state, now, self.worker_stale_s)

    def _admit(self, now: float) -> list[Event]:
        state = self.state
        for eid, sent in list(self._admitted.items()):
            if now - sent > RESEND_AFTER_S:
                del self._admitted[eid]
        if not state.queue:
            return []
        active = [state.runs[e] for e in state.active] + [
            state.runs[e] for e in self._admitted if e in state.runs and e not in state.active
        ]
        running = len(active)
        per_schedule: dict[str, int] = {}
        used_cpu = used_mem = 0.0
        for run in active:
            per_schedule[run.schedule_id] = per_schedule.get(run.schedule_id, 0) + 1
            used_cpu += float(run.resources.get("cpu_cores", 0))
            used_mem += float(run.resources.get("memory_gb", 0))
        cap = self.capacity(now)
        events: list[Event] = []
        for eid in sorted(state.queue, key=state.queue.__getitem__):
            if running >= self.max_concurrent:
                break
            if eid in self._admitted:
                continue
            run = state.runs[eid]
            need = run.resources
            limit = need.get("max_concurrent_jobs")
            if limit and per_schedule.get(run.schedule_id, 0) >= limit:
                continue
            cpu, mem = float(need.get("cpu_cores", 0)), float(need.get("memory_gb", 0))
            if cpu or mem:
                if cap["ever_cpu_cores"] and (
                    cpu > cap["ever_cpu_cores"] or mem > cap["ever_memory_gb"]
                ):
                    events.append(self._refuse(run, cpu, mem, cap))
                    continue
                if not cap["hosts"]:
                    continue  # no worker heard from lately: wait for one
                if used_cpu + cpu > cap["cpu_cores"] or used_mem + mem > cap["memory_gb"]:
                    continue
            try:
                events.append(self._request(run))
            except Exception as exc:  # a run whose stored config cannot make a request
                log.exception("scheduler: cannot request %s", eid)
                events.append(
                    ExecutionFailed(
                        id=decision_id("refused", eid),
                        execution_id=eid,
                        error=f"refused: cannot build its request: {type(exc).__name__}: {exc}",
                        retryable=False,
                    )
                )
                continue
            self._admitted[eid] = now
            running += 1
            used_cpu += cpu
            used_mem += mem
            per_schedule[run.schedule_id] = per_schedule.get(run.schedule_id, 0) + 1
        return events

    def _refuse(self, run: RunState, cpu: float, mem: float, cap: dict[str, float]) -> Event:
        return ExecutionFailed(
            id=decision_id("refused", run.execution_id),
            execution_id=run.execution_id,
            error=(
                f"refused: needs {cpu:g} cpu cores and {mem:g} GB of memory; the worker hosts "
                f"ever seen have {cap['ever_cpu_cores']:g} cores and "
                f"{cap['ever_memory_gb']:.1f} GB in all"
            ),
            retryable=False,
        )

    def _request(self, run: RunState) -> ExecutionRequested:
        execution = {**run.execution, **run.config_override}
        return ExecutionRequested(
            id=decision_id("admit", run.execution_id),
            execution_id=run.execution_id,
            stages=list(execution.get("stages") or []),
            steps=list(execution.get("steps") or []),
            input_data=str(execution.get("input_data", "")),
            mode=str(execution.get("mode", "sequential")),
            config=dict(execution.get("config") or {}),
            save_checkpoints=bool(execution.get("save_checkpoints", True)),
            partitions=int(execution.get("partitions", 0)),
            max_attempts=int(execution.get("max_attempts", 2)),
            schedule_id=run.schedule_id,
            priority=run.priority,
        )
