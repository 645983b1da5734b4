"""When a schedule fires: cron in a time zone, intervals, one-time instants. Pure: time is passed in.

Every timetable answers ``next_after(t)``: the first fire instant strictly after ``t`` (epoch
seconds), or None when it never fires again. ``porch schedule preview`` and the scheduler both
ask it, so the preview is exactly what fires.

Cron across daylight-saving changes, as cron users expect (Vixie cron's rule):

- a job at a fixed time of day (neither the minute nor the hour field starts with ``*``) fires
  at the first instant the wall clock reads its time or later: once on a fall-back day (the
  first of the two 01:30s), and on a spring-forward day a wall time that does not exist runs
  at the jump (02:30 on a day that jumps from 02:00 to 03:00 runs at 03:00), as Vixie cron,
  cronie and croniter run it;
- an hourly or finer job (``*`` or ``*/N`` in the minute or hour field) fires once per real
  hour: both 01:00s of a fall-back day, and no 02:00 on a spring-forward day.

Plain expressions (numbers, ranges, steps, lists, names, ``*``, ``?``, the ``@daily`` family)
are matched here, fast enough to rebuild 10,000 schedules in well under a second; anything else
croniter accepts (``L``, ``W``, ``#``, ``H``) is handed to croniter.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from actors.errors import ActorError

ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
NAMES: Final = {
    3: {
        m: i + 1
        for i, m in enumerate(
            ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
        )
    },
    4: {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
}
BOUNDS: Final = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
FIELD_NAMES: Final = ("minute", "hour", "day of month", "month", "day of week")
SEARCH_YEARS: Final = 10  # "0 0 29 2 *" can wait 8 years (2096 -> 2104)
FOLD_WINDOW: Final = timedelta(hours=3)
MAX_COUNTED: Final = 2_000  # late cron slots walked one by one; past that, counted from a sample
EARLIEST: Final = 0.0  # 1970-01-01: instants a schedule may name
LATEST: Final = 32_503_680_000.0  # 3000-01-01
MAX_DURATION_S: Final = 3650 * 86400.0
_ITEM: Final = re.compile(r"^(\*|\?|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


class ScheduleSpecError(ActorError, ValueError):
    """A schedule expression, zone or date that cannot be used; the message is one line."""


class Timetable(Protocol):
    def next_after(self, t: float) -> float | None: ...


@functools.lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """An IANA time zone by name, or a one-line `ScheduleSpecError`."""
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleSpecError(
            f"unknown time zone {name!r}: use an IANA name like Europe/Berlin or UTC"
        ) from None


# --- durations and instants --------------------------------------------------------------------


def parse_duration_s(value: object, what: str = "interval") -> float:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ScheduleSpecError(f"{what} {value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).lower())
        if match is None:
            raise ScheduleSpecError(
                f'{what} {value!r} is not a duration: use seconds or a number with s, m, h, d or w ("90s", "15m")'
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ScheduleSpecError(f"{what} {value!r} must be a positive duration")
    if seconds > MAX_DURATION_S:
        raise ScheduleSpecError(f"{what} {value!r} is over 10 years")
    return seconds


def parse_instant(value: object, tz: ZoneInfo, what: str = "date") -> float:
    """An ISO 8601 date-time (naive ones are wall time in ``tz``) or epoch seconds."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return _in_range(float(value), value, what)
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ScheduleSpecError(
                f"{what} {value!r} is not an ISO 8601 date-time (2026-12-01T02:00:00+01:00)"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    try:
        t = moment.timestamp()
    except (OverflowError, ValueError, OSError):
        t = math.inf
    return _in_range(t, value, what)


def _in_range(t: float, value: object, what: str) -> float:
    if not (math.isfinite(t) and EARLIEST <= t <= LATEST):
        raise ScheduleSpecError(f"{what} {value!r} is outside 1970-01-01 .. 3000-01-01")
    return t


def iso(t: float, tz: ZoneInfo | None = None) -> str:
    """An instant as ISO 8601 with its offset, in ``tz`` (UTC by default)."""
    moment = datetime.fromtimestamp(t, tz or UTC)
    return moment.isoformat(timespec="milliseconds" if t != int(t) else "seconds")


# --- cron ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CronFields:
    """A plain cron expression expanded into sorted value lists."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    days_star: bool
    weekdays_star: bool

    def day_matches(self, day: datetime) -> bool:
        if self.days_star and self.weekdays_star:
            return True
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        if self.days_star:
            return dow
        if self.weekdays_star:
            return dom
        return dom or dow  # both restricted: either matches, as in every cron

    def next_naive(self, after: datetime) -> datetime | None:
        """The first matching wall time strictly after ``after`` (naive datetimes)."""
        t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        last_year = t.year + SEARCH_YEARS
        while t.year <= last_year:
            if t.month not in self.months:
                i = bisect.bisect_right(self.months, t.month)
                t = (
                    _wall(t.year, self.months[i], 1)
                    if i < len(self.months)
                    else _wall(t.year + 1, self.months[0], 1)
                )
                continue
            if not self.day_matches(t):
                t = _wall(t.year, t.month, t.day) + timedelta(days=1)
                continue
            i = bisect.bisect_left(self.hours, t.hour)
            if i == len(self.hours):
                t = _wall(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if self.hours[i] != t.hour:
                t = t.replace(hour=self.hours[i], minute=0)
            j = bisect.bisect_left(self.minutes, t.minute)
            if j == len(self.minutes):
                t = t.replace(minute=0) + timedelta(hours=1)
                continue
            return t.replace(minute=self.minutes[j])
        return None


def _wall(year: int, month: int, day: int) -> datetime:
    """Midnight of a day as a naive wall time: cron matches wall clocks, zones come after."""
    return datetime(year, month, day)  # noqa: DTZ001


def _field(text: str, index: int) -> tuple[list[int], bool] | None:
    """Values of one field, and whether it is unrestricted; None: not a plain field."""
    low, high = BOUNDS[index]
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            return None
        base, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            return None
        if base in ("*", "?"):
            start, end = low, high
        else:
            ends = [_value(v, index) for v in base.split("-")]
            if any(v is None for v in ends):
                return None
            start = ends[0]  # type: ignore[assignment]
            end = ends[-1] if len(ends) == 2 else (high if step_text else start)  # type: ignore[assignment]
            if not (low <= start <= high and low <= end <= high) or end < start:
                return None
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values.discard(7)
        values.add(0)
    full = (high - low + 1) if index != 4 else 7
    return sorted(values), len(values) == full


def _value(text: str, index: int) -> int | None:
    if text.isdigit():
        return int(text)
    return NAMES.get(index, {}).get(text)


@functools.lru_cache(maxsize=4096)
def plain_cron(expression: str) -> CronFields | None:
    parts = ALIASES.get(expression.strip().lower(), expression).lower().split()
    if len(parts) != 5:
        return None
    parsed = [_field(p, i) for i, p in enumerate(parts)]
    if any(p is None for p in parsed):
        return None
    (mins, _), (hours, _), (days, dstar), (months, _), (wdays, wstar) = parsed  # type: ignore[misc]
    return CronFields(
        tuple(mins), tuple(hours), frozenset(days), tuple(months), frozenset(wdays), dstar, wstar
    )


@dataclass(frozen=True, slots=True)
class Cron:
    expression: str
    tz: ZoneInfo
    fixed: bool  # a fixed time of day: DST gaps run it at the jump, DST folds run it once

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        text = " ".join(str(expression).split())
        normal = ALIASES.get(text.lower(), text)
        if len(normal.split()) != 5:
            raise ScheduleSpecError(
                f"cron expression {expression!r} needs 5 fields (minute hour day month weekday) or an @alias like @daily"
            )
        if plain_cron(normal) is None and not croniter.is_valid(normal):
            raise ScheduleSpecError(f"cron expression {expression!r} is not valid")
        cron = cls.of(normal, timezone)
        if cron.next_after(datetime.now(UTC).timestamp()) is None:
            raise ScheduleSpecError(
                f"cron expression {expression!r} never fires in the next {SEARCH_YEARS} years"
            )
        return cron

    @classmethod
    def of(cls, expression: str, timezone: str) -> Cron:
        """A checked expression (5 fields) in a zone."""
        minute, hour = expression.split()[:2]
        return cls(expression, zone(timezone), not (minute.startswith("*") or hour.startswith("*")))

    def _naive_after(self, after: datetime) -> datetime | None:
        fields = plain_cron(self.expression)
        if fields is not None:
            return fields.next_naive(after)
        try:
            return croniter(self.expression, after).get_next(datetime)
        except (ValueError, KeyError, OverflowError):  # croniter gives up on dates that never come
            return None

    def _instants(self, naive: datetime) -> tuple[list[float], float]:
        """The instants a wall time fires at, and the first instant the wall clock reads it or
        later (that floor never goes down as the wall time goes up)."""
        first = naive.replace(tzinfo=self.tz, fold=0).timestamp()
        second = naive.replace(tzinfo=self.tz, fold=1).timestamp()
        if first == second:
            return [first], first
        if first < second:  # in a fall-back fold: it happens twice
            return ([first] if self.fixed else [first, second]), first
        jump = self._jump(naive, second, first)  # in a spring-forward gap: it never happens
        return ([jump] if self.fixed else []), jump

    def _jump(self, naive: datetime, before_s: float, after_s: float) -> float:
        """The instant the clock jumps over ``naive``: the first one in ``(before_s, after_s]``
        whose wall time is later (zones change at whole seconds)."""
        low, high = math.floor(before_s), math.ceil(after_s)
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, self.tz).replace(tzinfo=None) > naive:
                high = middle
            else:
                low = middle
        return float(high)

    def next_after(self, t: float) -> float | None:
        here = datetime.fromtimestamp(t, self.tz)
        start = here.replace(tzinfo=None)
        window = FOLD_WINDOW.total_seconds()
        offset = here.utcoffset()
        if (
            datetime.fromtimestamp(t - window, self.tz).utcoffset() != offset
            or datetime.fromtimestamp(t + window, self.tz).utcoffset() != offset
        ):
            # clocks change near t: a wall time at or before t's may still come (again) after t
            start -= FOLD_WINDOW
        best: float | None = None
        naive = self._naive_after(start)
        while naive is not None and naive.year < 3000:
            instants, floor = self._instants(naive)
            for instant in instants:
                if instant > t and (best is None or instant < best):
                    best = instant
            if best is not None and best <= floor:
                break  # every later wall time fires at or after this one's floor
            naive = self._naive_after(naive)
        return best


# --- interval and one-time -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """Every ``every_s`` from ``anchor`` (its first fire is the anchor itself when a start was
    given, one interval after it otherwise), until ``end`` if set."""

    every_s: float
    anchor: float
    first_at_anchor: bool
    end: float | None = None

    def next_after(self, t: float) -> float | None:
        if t < self.anchor:
            n = 0 if self.first_at_anchor else 1
        else:
            n = math.floor((t - self.anchor) / self.every_s) + 1
        fire = self.anchor + n * self.every_s
        if fire <= t:  # floating-point edge
            fire += self.every_s
        if self.end is not None and fire > self.end:
            return None
        return fire


@dataclass(frozen=True, slots=True)
class Once:
    at: float

    def next_after(self, t: float) -> float | None:
        return self.at if self.at > t else None


@dataclass(frozen=True, slots=True)
class Never:
    """A dependency schedule: it fires on its upstreams' successes, never by the clock."""

    def next_after(self, t: float) -> float | None:
        return None


@dataclass(frozen=True, slots=True)
class Slots:
    """The fire instants of a span: the latest few, how many in all, the first."""

    latest: list[float]
    count: int
    first: float | None
    exact: bool = True  # False: a long cron span whose middle was counted from its rate


def slots_between(table: Timetable, after: float, until: float, limit: int) -> Slots:
    """Fire instants in ``(after, until]``: at most ``limit`` of the latest ones, the count and
    the first. An interval's count is arithmetic; a cron's is walked up to `MAX_COUNTED` slots,
    and past that the middle of the span is estimated, so a long outage stays cheap."""
    if isinstance(table, Interval):
        first = table.next_after(after)
        if first is None or first > until:
            return Slots([], 0, None)
        last_n = math.floor((until - table.anchor) / table.every_s)
        last = table.anchor + last_n * table.every_s
        if table.end is not None:
            last = min(
                last,
                table.anchor
                + math.floor((table.end - table.anchor) / table.every_s) * table.every_s,
            )
        count = round((last - first) / table.every_s) + 1
        keep = min(count, limit)
        return Slots([last - (keep - 1 - i) * table.every_s for i in range(keep)], count, first)
    first = table.next_after(after)
    if first is None or first > until:
        return Slots([], 0, None)
    found: deque[float] = deque(maxlen=max(1, limit))
    count = 0
    t: float | None = first
    while t is not None and t <= until and count < MAX_COUNTED:
        count += 1
        found.append(t)
        t = table.next_after(t)
    if t is None or t > until:
        return Slots(list(found), count, first)
    # too many to walk: take the rate of the walked part, and walk only the end of the span
    walked_to = found[-1]
    rate = count / max(walked_to - first, 1e-9)
    span = max(limit / rate * 2, 60.0)
    while True:
        start = max(walked_to, until - span)
        tail: deque[float] = deque(maxlen=max(1, limit))
        tail_count = 0
        t = table.next_after(start)
        while t is not None and t <= until:
            tail_count += 1
            tail.append(t)
            t = table.next_after(t)
        if tail_count >= limit or start == walked_to:
            break
        span *= 4
    middle = round((start - walked_to) * rate)
    return Slots(list(tail), count + middle + tail_count, first, exact=start == walked_to)
