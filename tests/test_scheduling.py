"""The scheduler's decisions as pure functions of the log and an injected clock."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from actors.scheduler.core import SchedulerCore, retry_delay_s
from actors.scheduler.specs import check_dependencies, normalize
from actors.scheduler.timetable import Cron, ScheduleSpecError, iso, zone
from bus.events import (
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    ScheduleAdded,
    ScheduleFired,
    SchedulePaused,
    ScheduleResumed,
    WorkerStarted,
)
from bus.schema import to_map
from tests.memhub import MemoryHub

T0 = datetime(2026, 11, 2, tzinfo=ZoneInfo("UTC")).timestamp()
HOUR = 3600.0


def schedule(sid: str, kind: str = "cron", expression: str = "0 * * * *", **extra) -> dict:
    return normalize(
        {
            "schedule_id": sid,
            "schedule_type": kind,
            "schedule_expression": expression,
            "execution_config": {"input_data": "/data/in.parquet"},
            **extra,
        }
    )


class Loop:
    """A scheduler core over the in-memory hub: decisions come back as folded events."""

    def __init__(self, now: float = T0, max_concurrent: int = 3, log: list | None = None) -> None:
        self.core = SchedulerCore(max_concurrent)
        self.now = now
        self.hub = MemoryHub()
        self.folded = 0
        for fields in log or []:
            self.hub.append(fields, fields.get("ts", now))
        self._fold()
        self.core.go_live(now)

    @property
    def log(self) -> list[dict[str, Any]]:
        return [r.fields for r in self.hub.records]

    def _fold(self) -> None:
        for record in self.hub.since(self.folded):
            self.core.apply(record.seq, record.fields, self.now)
            self.folded = record.seq

    def emit(self, event: Event, ts: float | None = None) -> None:
        self.hub.append(event, self.now if ts is None else ts)  # a duplicate id is dropped
        self._fold()

    def step(self) -> list[Event]:
        decided = self.core.decide(self.now)
        for event in decided:
            self.emit(event)
        return decided

    def run_until(self, until: float) -> None:
        while True:
            while self.step():
                pass
            due = self.core.next_due()
            if due is None or due > until:
                break
            self.now = max(self.now, due)
        self.now = until
        while self.step():
            pass

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.hub.of(kind)


def added(config: dict, ts: float = T0) -> dict[str, Any]:
    fields = to_map(ScheduleAdded(schedule_id=config["schedule_id"], config=config))
    fields["ts"] = ts
    return fields


# --- cron across DST ---------------------------------------------------------------------------


def fires(expression: str, tz: str, start: str, count: int) -> list[str]:
    cron = Cron.parse(expression, tz)
    t = datetime.fromisoformat(start).replace(tzinfo=ZoneInfo(tz)).timestamp()
    out = []
    for _ in range(count):
        t = cron.next_after(t)
        out.append(iso(t, zone(tz)))
    return out


DST_CASES = [
    # spring forward: a fixed time the clock jumps over runs at the jump, once
    ("Europe/Berlin", "30 2 * * *", "2026-03-29T00:00", ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ("Europe/Berlin", "0,30 2,3 * * *", "2026-03-29T01:00", ["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:00:00+02:00"]),
    ("America/New_York", "30 2 * * *", "2026-03-08T00:00", ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    ("America/New_York", "59 2 * * 0", "2026-03-07T00:00", ["2026-03-08T03:00:00-04:00", "2026-03-15T02:59:00-04:00"]),
    # fall back: a fixed time in the repeated hour runs once, at the first of the two
    ("Europe/Berlin", "30 2 * * *", "2026-10-25T00:00", ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    ("America/New_York", "30 1 * * *", "2026-11-01T00:00", ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    # hourly and finer: by the wall clock as it really passes, no 02:00 in spring, two in autumn
    ("Europe/Berlin", "0 * * * *", "2026-03-29T00:30", ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]),
    ("Europe/Berlin", "*/15 * * * *", "2026-03-29T01:40", ["2026-03-29T01:45:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00"]),
    ("Europe/Berlin", "0 * * * *", "2026-10-25T01:30", ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]),
    ("Europe/Berlin", "*/15 * * * *", "2026-10-25T02:40", ["2026-10-25T02:45:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T02:15:00+01:00"]),
    ("America/New_York", "0 * * * *", "2026-03-08T00:30", ["2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"]),
    ("America/New_York", "*/15 * * * *", "2026-03-08T01:40", ["2026-03-08T01:45:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:15:00-04:00"]),
    ("America/New_York", "0 * * * *", "2026-11-01T00:30", ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]),
    ("America/New_York", "*/15 * * * *", "2026-11-01T01:40", ["2026-11-01T01:45:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T01:15:00-05:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("tz", "expression", "start", "expected"), DST_CASES)
def test_cron_across_daylight_saving_changes(tz, expression, start, expected):
    assert fires(expression, tz, start, len(expected)) == expected


@pytest.mark.parametrize(
    ("tz", "day"), [("Europe/Berlin", "2026-03-29"), ("America/New_York", "2026-03-08")]
)
@pytest.mark.parametrize("expression", ["30 2 * * *", "0 2 * * *", "0 * * * *", "*/15 * * * *"])
def test_spring_forward_fires_as_croniter_does(tz, day, expression):
    # croniter (and Vixie cron, cronie) run a job the clock jumps over at the jump; on a fall-back
    # day croniter runs a fixed-time job twice where cron runs it once, so only spring is compared
    from croniter import croniter

    start = datetime.fromisoformat(f"{day}T00:00").replace(tzinfo=ZoneInfo(tz))
    theirs = croniter(expression, start)
    expected = [theirs.get_next(datetime).isoformat() for _ in range(6)]
    assert fires(expression, tz, f"{day}T00:00", 6) == expected


@pytest.mark.parametrize(
    ("tz", "spring", "fall", "gap", "fold"),
    [
        ("Europe/Berlin", "2026-03-29", "2026-10-25", "02:00", "02:00"),
        ("America/New_York", "2026-03-08", "2026-11-01", "02:00", "01:00"),
    ],
)
def test_an_hourly_job_fires_once_per_real_hour_through_both_changes(tz, spring, fall, gap, fold):
    for day in (spring, fall):
        times = [
            datetime.fromisoformat(t).timestamp() for t in fires("0 * * * *", tz, f"{day}T00:00", 6)
        ]
        assert all(b - a == HOUR for a, b in itertools.pairwise(times)), day
    labels = fires("0 * * * *", tz, f"{spring}T00:00", 4)
    assert not any(f"T{gap}" in t for t in labels)  # the skipped wall hour is not a real one
    labels = fires("0 * * * *", tz, f"{fall}T00:00", 4)
    assert sum(f"T{fold}" in t for t in labels) == 2  # the repeated wall hour is two real ones


def test_plain_cron_matches_croniter_on_wall_times():
    from croniter import CroniterBadDateError, croniter
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from actors.scheduler.timetable import plain_cron

    field = st.sampled_from(["*", "*/7", "5", "1-4", "3,9", "2-20/5", "?"])
    months = st.sampled_from(["*", "2", "jan-mar", "*/4", "11,12"])
    days = st.sampled_from(["*", "1", "15-20", "*/10", "29", "31"])
    weekdays = st.sampled_from(["*", "0", "mon-fri", "6,7", "sat", "1-3"])

    hours = st.sampled_from(["*", "3", "*/6", "0-5,22"])
    starts = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1))  # noqa: DTZ001

    @settings(max_examples=300, deadline=None)
    @given(field, hours, days, months, weekdays, starts)
    def check(minute, hour, day, month, weekday, start):
        expression = f"{minute if minute != '?' else '*'} {hour} {day} {month} {weekday}"
        ours = plain_cron(expression).next_naive(start)
        try:
            theirs = croniter(expression, start).get_next(datetime)
        except CroniterBadDateError:  # a date that never comes (Feb 31)
            theirs = None
        assert ours == theirs, expression

    check()


def test_bad_expressions_zones_dates_and_cycles_are_refused_in_one_line():
    cases = [
        ({"schedule_expression": "61 * * * *"}, "cron expression '61 * * * *' is not valid"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"schedule_type": "interval", "schedule_expression": "soon"}, "is not a duration"),
        (
            {"schedule_type": "one_time", "schedule_expression": "2020-01-01T00:00"},
            "is in the past",
        ),
        ({"retry_strategy": "sometimes"}, "retry_strategy 'sometimes' is not one of"),
        ({"priority": "high"}, "priority 'high' is not a number"),
        ({"resource_requirements": {"gpus": 1}}, "unknown key 'gpus'"),
    ]
    for change, message in cases:
        config = {"schedule_id": "s", "schedule_type": "cron", "schedule_expression": "0 2 * * *",
                  "execution_config": {"input_data": "x.parquet"}, **change}  # fmt: skip
        with pytest.raises(
            ScheduleSpecError, match=message.replace("*", r"\*").replace("(", r"\(")
        ) as err:
            normalize(config, now=T0)
        assert "\n" not in str(err.value)
    graph = {"a": [], "b": ["a"], "c": ["b"]}
    with pytest.raises(ScheduleSpecError, match="dependency cycle: a -> c -> b -> a"):
        check_dependencies("a", ["c"], graph)
    with pytest.raises(ScheduleSpecError, match="dependency 'zz' is not a schedule"):
        check_dependencies("d", ["zz"], graph)
    check_dependencies("d", ["c"], graph)


# --- misfires ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "fired", "missed"),
    [("skip", 0, 72), ("run_once", 1, 71), ("catch_up", 5, 67)],
)
def test_after_a_three_day_outage_each_misfire_policy_does_what_it_says(policy, fired, missed):
    config = schedule("hourly", misfire_policy=policy, max_catch_up=5, misfire_grace_seconds=60)
    # the schedule was added at T0; the scheduler comes back 3 days and 30 minutes later
    loop = Loop(now=T0 + 72 * HOUR + 1800, log=[added(config)])
    loop.run_until(loop.now)
    assert len(loop.of("ScheduleFired")) == fired
    assert sum(m["count"] for m in loop.of("ScheduleMissed")) == missed
    for m in loop.of("ScheduleMissed"):
        assert m["reason"].startswith("misfire:")
        assert policy in m["reason"]
    if fired:  # the newest slots are the ones run
        assert loop.of("ScheduleFired")[-1]["fire_time"] == T0 + 72 * HOUR
    # and then it goes on as usual, on time
    loop.run_until(T0 + 74 * HOUR)
    assert len(loop.of("ScheduleFired")) == fired + 2


def test_a_slot_within_the_grace_time_still_fires():
    loop = Loop(now=T0 + HOUR + 30, log=[added(schedule("hourly", misfire_policy="skip"))])
    loop.run_until(loop.now)
    assert [f["fire_time"] for f in loop.of("ScheduleFired")] == [T0 + HOUR]
    assert loop.of("ScheduleMissed") == []


def test_two_schedulers_on_one_log_fire_each_slot_once():
    config = schedule("hourly")
    first, second = Loop(log=[added(config)]), Loop(log=[added(config)])
    # both decide on the same slot; the hub (one log) drops the second's duplicates
    first.run_until(T0 + HOUR)
    second.now = T0 + HOUR
    decided = second.core.decide(second.now)
    for event in decided:
        first.emit(event)
    assert len(first.of("ScheduleFired")) == 1
    assert len(first.core.state.runs) == 1


def test_a_paused_schedule_does_not_fire_and_its_slots_are_recorded_as_missed():
    loop = Loop(log=[added(schedule("hourly"))])
    loop.run_until(T0 + HOUR)
    loop.emit(SchedulePaused(schedule_id="hourly"))
    loop.run_until(T0 + 4 * HOUR + 10)
    loop.emit(ScheduleResumed(schedule_id="hourly"))
    loop.run_until(T0 + 5 * HOUR)
    assert [f["fire_time"] for f in loop.of("ScheduleFired")] == [T0 + HOUR, T0 + 5 * HOUR]
    (missed,) = loop.of("ScheduleMissed")
    assert (missed["fire_time"], missed["last_fire_time"], missed["count"]) == (
        T0 + 2 * HOUR, T0 + 4 * HOUR, 3,
    )  # fmt: skip
    assert missed["reason"] == "the schedule was paused"


# --- retries -----------------------------------------------------------------------------------


def test_retry_delays_per_strategy():
    delays = {
        s: [retry_delay_s(s, n, delay_s=60, cap_s=300) for n in range(1, 6)]
        for s in ("no_retry", "fixed_delay", "linear_backoff", "exponential_backoff")
    }
    assert delays["no_retry"] == [None] * 5
    assert delays["fixed_delay"] == [60] * 5
    assert delays["linear_backoff"] == [60, 120, 180, 240, 300]
    assert delays["exponential_backoff"] == [60, 120, 240, 300, 300]
    jittered = [retry_delay_s("exponential_backoff", n, delay_s=60, cap_s=1e9, jitter=0.5, seed="run-1") for n in range(1, 6)]  # fmt: skip
    again = [retry_delay_s("exponential_backoff", n, delay_s=60, cap_s=1e9, jitter=0.5, seed="run-1") for n in range(1, 6)]  # fmt: skip
    assert jittered == again  # reproducible from the seed
    assert all(60 * 2 ** (n - 1) * 0.5 <= d <= 60 * 2 ** (n - 1) for n, d in enumerate(jittered, 1))
    assert jittered != [retry_delay_s("exponential_backoff", n, delay_s=60, cap_s=1e9, jitter=0.5, seed="run-2") for n in range(1, 6)]  # fmt: skip


def _finish(loop: Loop, eid: str, ok: bool, retryable: bool = True) -> None:
    loop.emit(ExecutionStarted(execution_id=eid, mode="sequential"))
    if ok:
        loop.emit(ExecutionCompleted(execution_id=eid, records_processed=1, duration_s=1.0))
    else:
        loop.emit(ExecutionFailed(execution_id=eid, error="boom", retryable=retryable))


def test_a_failed_run_is_retried_with_its_delays_until_max_retries():
    config = schedule(
        "retrying", retry_strategy="linear_backoff", max_retries=2, retry_delay_minutes=1
    )
    loop = Loop(log=[added(config)])
    loop.run_until(T0 + HOUR)
    for attempt in (1, 2, 3):
        (request,) = loop.of("ExecutionRequested")[attempt - 1 : attempt]
        _finish(loop, request["execution_id"], ok=False)
        loop.run_until(loop.now + 1000)
    retries = loop.of("RetryScheduled")
    assert [(r["attempt"], r["delay_s"]) for r in retries] == [(2, 60.0), (3, 120.0)]
    assert [r["execution_id"] for r in loop.of("ExecutionRequested")] == [
        "retrying-20261102T010000Z", "retrying-20261102T010000Z.r2", "retrying-20261102T010000Z.r3",
    ]  # fmt: skip


def test_a_failure_the_stage_marks_not_retryable_is_not_retried():
    config = schedule("fatal", retry_strategy="fixed_delay", max_retries=3, retry_delay_minutes=1)
    loop = Loop(log=[added(config)])
    loop.run_until(T0 + HOUR)
    _finish(loop, loop.of("ExecutionRequested")[0]["execution_id"], ok=False, retryable=False)
    loop.run_until(T0 + 2 * HOUR - 1)
    assert loop.of("RetryScheduled") == []


def test_a_run_over_its_timeout_is_cancelled_and_counts_as_a_failure():
    config = schedule("slow", execution_timeout_minutes=10, retry_strategy="fixed_delay",
                      max_retries=1, retry_delay_minutes=1)  # fmt: skip
    loop = Loop(log=[added(config)])
    loop.run_until(T0 + HOUR)
    eid = loop.of("ExecutionRequested")[0]["execution_id"]
    loop.now = T0 + HOUR + 120  # queued at the fire, started 2 minutes later
    loop.emit(ExecutionStarted(execution_id=eid, mode="sequential"))
    loop.run_until(T0 + HOUR + 120 + 599)
    assert loop.of("CancelRequested") == []
    loop.run_until(T0 + HOUR + 120 + 600)
    (cancel,) = loop.of("CancelRequested")
    assert (cancel["reason"], cancel["timeout_s"]) == ("timeout", 600.0)
    from bus.events import ExecutionTimedOut

    loop.emit(ExecutionTimedOut(execution_id=eid, timeout_s=600.0))
    loop.run_until(loop.now + 1)
    (retry,) = loop.of("RetryScheduled")
    assert retry["reason"] == "timed out after 600 s"


# --- admission ---------------------------------------------------------------------------------


def manual(loop: Loop, sid: str, n: int) -> str:
    eid = f"{sid}-manual-{n}"
    loop.emit(ScheduleFired(schedule_id=sid, fire_time=loop.now, key=f"{sid}@m{n}",
                            execution_id=eid, manual=True))  # fmt: skip
    return eid


def test_higher_priority_goes_first_and_fifo_within_a_priority():
    log = [added(schedule(s, priority=p)) for s, p in (("low", 1), ("high", 5), ("mid", 3))]
    loop = Loop(max_concurrent=1, log=log)
    order = [manual(loop, s, i) for i, s in enumerate(["low", "high", "mid", "high", "low"])]
    loop.step()
    loop.step()
    started = []
    for _ in order:
        (request,) = [r for r in loop.of("ExecutionRequested") if r["execution_id"] not in started]
        started.append(request["execution_id"])
        _finish(loop, request["execution_id"], ok=True)
        loop.step()
        loop.step()
    assert started == [
        "high-manual-1",
        "high-manual-3",
        "mid-manual-2",
        "low-manual-0",
        "low-manual-4",
    ]


def test_resources_are_admitted_against_the_workers_capacity_and_impossible_ones_refused():
    log = [
        added(schedule("small", resource_requirements={"cpu_cores": 1.5, "memory_gb": 1})),
        added(schedule("huge", resource_requirements={"cpu_cores": 64})),
    ]
    loop = Loop(max_concurrent=5, log=log)
    loop.emit(
        WorkerStarted(
            worker="w1", host="h1", pid=1, capacity={"cpus": 2, "memory_bytes": 8 * 2**30}
        )
    )
    first, second = manual(loop, "small", 1), manual(loop, "small", 2)
    huge = manual(loop, "huge", 3)
    loop.step()
    loop.step()
    # 1.5 + 1.5 cores do not fit in 2: the second waits; 64 never fits: refused with the reason
    assert [r["execution_id"] for r in loop.of("ExecutionRequested")] == [first]
    (refused,) = [f for f in loop.of("ExecutionFailed") if f["execution_id"] == huge]
    assert refused["error"].startswith("refused: needs 64 cpu cores")
    assert not refused["retryable"]
    _finish(loop, first, ok=True)
    loop.step()
    assert [r["execution_id"] for r in loop.of("ExecutionRequested")] == [first, second]


def test_a_dependency_schedule_fires_once_when_all_upstreams_succeeded():
    log = [added(schedule("a")), added(schedule("b", expression="30 * * * *")),
           added(schedule("c", kind="dependency", expression="", dependencies=["a", "b"]))]  # fmt: skip
    loop = Loop(log=log)
    loop.run_until(T0 + HOUR)
    a_run = loop.of("ExecutionRequested")[-1]["execution_id"]
    _finish(loop, a_run, ok=True)
    loop.run_until(T0 + HOUR + 1800)
    assert not [f for f in loop.of("ScheduleFired") if f["schedule_id"] == "c"]
    b_run = loop.of("ExecutionRequested")[-1]["execution_id"]
    _finish(loop, b_run, ok=True)
    loop.step()
    loop.step()
    loop.step()
    fired = [f for f in loop.of("ScheduleFired") if f["schedule_id"] == "c"]
    assert len(fired) == 1
    assert "c" in [r["schedule_id"] for r in loop.of("ExecutionRequested")]


SCHEDULES_TOML = """
[[schedule]]
schedule_id = "nightly"
schedule_type = "cron"
schedule_expression = "0 2 * * *"
timezone = "Europe/Berlin"
retry_strategy = "exponential_backoff"
execution_config = { input_data = "in.parquet", stages = ["data_cleaning"] }

[[schedule]]
schedule_id = "report"
schedule_type = "dependency"
dependencies = ["nightly"]
resource_requirements = { cpu_cores = 1, memory_gb = 2 }
execution_config = { input_data = "/abs/in.parquet", mode = "parallel" }
"""


def test_a_schedules_file_is_read_and_checked(tmp_path):
    from actors.scheduler.specs import load_file

    path = tmp_path / "schedules.toml"
    path.write_text(SCHEDULES_TOML, encoding="utf-8")
    nightly, report = load_file(path, now=T0)
    assert nightly["execution_config"]["input_data"] == str(tmp_path / "in.parquet")
    assert (nightly["timezone"], nightly["retry_strategy"]) == (
        "Europe/Berlin",
        "exponential_backoff",
    )
    assert report["dependencies"] == ["nightly"]
    assert report["resource_requirements"] == {"cpu_cores": 1.0, "memory_gb": 2.0}
    path.write_text(SCHEDULES_TOML.replace('"0 2 * * *"', '"0 2 * *"'), encoding="utf-8")
    with pytest.raises(
        ScheduleSpecError, match=r"schedules file .*, schedule nightly: cron expression"
    ):
        load_file(path, now=T0)
    path.write_text("[[schedule]\n", encoding="utf-8")
    with pytest.raises(ScheduleSpecError, match="is not valid TOML"):
        load_file(path, now=T0)


# --- found in review ---------------------------------------------------------------------------


def reference_fires(expression: str, tz_name: str, start: float, end: float) -> list[float]:
    """Brute force: every minute of real time, and every minute of wall time, checked by hand."""
    from datetime import timedelta

    from actors.scheduler.timetable import plain_cron

    fields, tz = plain_cron(expression), zone(tz_name)
    minute, hour = expression.split()[:2]
    fixed = not (minute.startswith("*") or hour.startswith("*"))

    def matches(w: datetime) -> bool:
        return (w.minute in fields.minutes and w.hour in fields.hours
                and w.month in fields.months and fields.day_matches(w))  # fmt: skip

    out = set()
    for u in range(int(start // 60 * 60) + 60, int(end) + 1, 60):
        w = datetime.fromtimestamp(u, tz)
        if matches(w.replace(tzinfo=None)) and (not fixed or w.fold == 0):
            out.add(float(u))
        if fixed:  # wall times the clock jumped over in the last minute run now, at the jump
            skipped = datetime.fromtimestamp(u - 60, tz).replace(tzinfo=None) + timedelta(minutes=1)
            while skipped < w.replace(tzinfo=None):
                if matches(skipped):
                    out.add(float(u))
                skipped += timedelta(minutes=1)
    return sorted(out)


@pytest.mark.parametrize(
    ("expression", "tz", "day"),
    [
        ("20,40 2 * * *", "Australia/Lord_Howe", "2026-10-04"),  # a 30-minute jump forward
        ("0,45 1 * * *", "Australia/Lord_Howe", "2026-04-05"),  # a 30-minute repeat
        ("30 2,3 * * *", "Antarctica/Troll", "2026-03-29"),  # a 2-hour jump forward
        ("30 1,2 * * *", "Antarctica/Troll", "2026-10-25"),  # a 2-hour repeat
        ("*/20 * * * *", "Antarctica/Troll", "2026-03-29"),
        ("15 * * * *", "Australia/Lord_Howe", "2026-10-04"),
        ("30 2 * * *", "Europe/Berlin", "2026-03-29"),
        ("*/30 1-3 * * *", "America/New_York", "2026-11-01"),
    ],
)
def test_cron_fires_match_a_brute_force_reference_across_odd_clock_changes(expression, tz, day):
    begin = datetime.fromisoformat(f"{day}T00:00").replace(tzinfo=ZoneInfo(tz)).timestamp() - 86400
    end = begin + 3 * 86400
    cron, t, ours = Cron.parse(expression, tz), begin, []
    while (t := cron.next_after(t)) is not None and t <= end:
        ours.append(t)
    assert [iso(x, zone(tz)) for x in ours] == [
        iso(x, zone(tz)) for x in reference_fires(expression, tz, begin, end)
    ]


def test_every_slot_within_the_grace_time_fires_after_a_short_outage():
    config = schedule(
        "tick", kind="interval", expression="1s", misfire_grace_seconds=30, max_catch_up=2
    )
    loop = Loop(now=T0 + 20.5, log=[added(config)])  # down for the first 20 slots
    loop.run_until(loop.now)
    assert [f["fire_time"] - T0 for f in loop.of("ScheduleFired")] == [
        float(i) for i in range(1, 21)
    ]
    assert loop.of("ScheduleMissed") == []


def test_catch_up_fires_exactly_max_catch_up_and_records_the_rest():
    config = schedule("hourly", misfire_policy="catch_up", max_catch_up=3)
    loop = Loop(now=T0 + 10 * HOUR + 600, log=[added(config)])
    loop.run_until(loop.now)
    assert [f["fire_time"] for f in loop.of("ScheduleFired")] == [T0 + h * HOUR for h in (8, 9, 10)]
    (missed,) = loop.of("ScheduleMissed")
    assert (missed["fire_time"], missed["last_fire_time"], missed["count"]) == (
        T0 + HOUR,
        T0 + 7 * HOUR,
        7,
    )


def test_an_update_keeps_a_pause_and_a_new_expression_counts_from_the_update():
    from bus.events import ScheduleUpdated

    loop = Loop(log=[added(schedule("daily", expression="0 2 * * *"))])
    loop.emit(SchedulePaused(schedule_id="daily"))
    loop.now = T0 + 10 * HOUR
    loop.emit(
        ScheduleUpdated(schedule_id="daily", config=schedule("daily", expression="0 5 * * *"))
    )
    loop.run_until(T0 + 30 * HOUR)
    assert loop.of("ScheduleFired") == []  # still paused
    loop.emit(ScheduleResumed(schedule_id="daily"))
    loop.run_until(T0 + 30 * HOUR)
    # resumed at 06:00 the next day: the 05:00 of that day fell while paused, the 05:00 of the
    # first day was before the update took effect (10:00) and is not a slot of the new timetable
    assert [m["fire_time"] for m in loop.of("ScheduleMissed")] == [T0 + 29 * HOUR]
    loop.run_until(T0 + 53 * HOUR)
    assert [f["fire_time"] for f in loop.of("ScheduleFired")] == [T0 + 53 * HOUR]


def test_a_removed_and_re_added_schedule_starts_afresh():
    from bus.events import ScheduleRemoved

    loop = Loop(log=[added(schedule("r"))])
    loop.run_until(T0 + HOUR + 1800)
    loop.emit(ScheduleRemoved(schedule_id="r"))
    loop.run_until(T0 + 6 * HOUR + 1800)
    loop.emit(ScheduleAdded(schedule_id="r", config=schedule("r")))
    loop.run_until(T0 + 7 * HOUR)
    assert [f["fire_time"] for f in loop.of("ScheduleFired")] == [T0 + HOUR, T0 + 7 * HOUR]
    assert loop.of("ScheduleMissed") == []


def test_a_host_away_for_a_moment_does_not_make_a_request_impossible():
    log = [added(schedule("big", resource_requirements={"cpu_cores": 6}))]
    loop = Loop(max_concurrent=5, log=log)
    for host in ("h1", "h2"):
        loop.emit(
            WorkerStarted(
                worker=f"w-{host}", host=host, pid=1, capacity={"cpus": 4, "memory_bytes": 2**33}
            )
        )
    loop.now += 60  # both silent: it waits, it is not refused
    eid = manual(loop, "big", 1)
    loop.step()
    loop.step()
    assert loop.of("ExecutionFailed") == []
    assert loop.of("ExecutionRequested") == []
    loop.emit(
        WorkerStarted(worker="w-h1", host="h1", pid=2, capacity={"cpus": 4, "memory_bytes": 2**33})
    )
    loop.emit(
        WorkerStarted(worker="w-h2", host="h2", pid=2, capacity={"cpus": 4, "memory_bytes": 2**33})
    )
    loop.step()
    loop.step()
    assert [r["execution_id"] for r in loop.of("ExecutionRequested")] == [eid]


def test_garbage_from_the_bus_never_stops_the_scheduler():
    bad = dict(schedule("bad", kind="interval", expression="10s"), interval_s=0)
    worse = dict(schedule("worse"), misfire_grace_seconds="soon", execution_config=[])
    loop = Loop(log=[added(bad), added(worse), added(schedule("good"))])
    loop.emit(
        ScheduleFired(schedule_id="ghost", fire_time=T0, key="ghost@1", execution_id="ghost-1")
    )
    loop.run_until(T0 + HOUR)
    assert [f["schedule_id"] for f in loop.of("ScheduleFired")] == ["ghost", "good"]
    assert [r["execution_id"] for r in loop.of("ExecutionRequested")] == ["good-20261102T010000Z"]
    assert "interval_s 0" in loop.core.table(loop.core.state.schedules["bad"]).error


def test_the_fold_keeps_a_bounded_number_of_runs_per_schedule():
    from store.projections.schedules import KEEP_RUNS

    loop = Loop(
        now=T0, max_concurrent=1000, log=[added(schedule("busy", kind="interval", expression="1s"))]
    )
    for second in range(1, KEEP_RUNS * 2 + 1):
        loop.run_until(T0 + second)
        _finish(loop, loop.of("ExecutionRequested")[-1]["execution_id"], ok=True)
    state = loop.core.state
    assert len(state.schedules["busy"].runs) == KEEP_RUNS
    assert len(state.runs) == KEEP_RUNS
    assert len(state.keys) == KEEP_RUNS


def test_a_fire_that_never_came_back_is_sent_again_with_the_same_id():
    loop = Loop(log=[added(schedule("hourly"))])
    loop.now = T0 + HOUR
    (lost,) = [e for e in loop.core.decide(loop.now) if e.TYPE == "ScheduleFired"]  # not folded
    assert loop.core.decide(loop.now + 1) == []
    (again,) = [e for e in loop.core.decide(loop.now + 6) if e.TYPE == "ScheduleFired"]
    assert again.id == lost.id
