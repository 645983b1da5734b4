"""A schedule's configuration, checked at the door and normalised into plain data.

`ScheduleSpec` declares every setting once, with its default. `normalize` turns what a user
gives (a `ScheduleConfig`, a dict from Python or a TOML file, CLI flags) into the plain dict
stored in ``ScheduleAdded.config``, or raises `ScheduleSpecError` with one line naming what is
wrong; `ScheduleSpec.of` reads a stored config back, typed. `timetable` turns a stored config
into its `Timetable`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Final

from actors.scheduler.timetable import (
    Cron,
    Interval,
    Never,
    Once,
    ScheduleSpecError,
    Timetable,
    iso,
    parse_duration_s,
    parse_instant,
    zone,
)

SCHEDULE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")
TYPES: Final = ("cron", "interval", "one_time", "dependency")
STRATEGIES: Final = ("no_retry", "fixed_delay", "linear_backoff", "exponential_backoff")
MISFIRE: Final = ("skip", "run_once", "catch_up")
MODES: Final = ("sequential", "parallel", "hybrid")
RESOURCES: Final = ("cpu_cores", "memory_gb", "max_concurrent_jobs")
DEFAULT_STAGES: Final = [
    "data_cleaning",
    "feature_engineering",
    "data_aggregation",
    "data_validation",
]
EXECUTION_KEYS: Final = (
    "input_data", "stages", "pipeline", "steps", "mode", "config", "config_overrides",
    "save_checkpoints", "partitions", "max_attempts",
)  # fmt: skip
KEYS: Final = (
    "schedule_id", "name", "description", "schedule_type", "schedule_expression", "enabled",
    "timezone", "execution_timeout_minutes", "retry_strategy", "max_retries",
    "retry_delay_minutes", "max_retry_delay_minutes", "retry_jitter", "priority",
    "execution_config", "dependencies", "misfire_policy", "misfire_grace_seconds",
    "max_catch_up", "jitter_seconds", "resource_requirements", "start_date", "end_date",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleSpec:
    """A schedule's settings as stored (normalised), with the default of each declared here
    only. ``interval_s`` and ``fire_at`` are derived from the expression of an interval or
    one-time schedule; instants are seconds since the epoch."""

    schedule_id: str
    schedule_type: str
    name: str = ""
    description: str = ""
    schedule_expression: str = ""
    timezone: str = "UTC"
    enabled: bool = True
    dependencies: list[str] = field(default_factory=list)
    start_date: float | None = None
    end_date: float | None = None
    interval_s: float | None = None
    fire_at: float | None = None
    execution_timeout_minutes: float | None = None
    retry_strategy: str = "no_retry"
    max_retries: int = 3
    retry_delay_minutes: float = 5.0
    max_retry_delay_minutes: float = 60.0
    retry_jitter: float = 0.0
    priority: int = 0
    misfire_policy: str = "run_once"
    misfire_grace_seconds: float = 60.0
    max_catch_up: int = 10
    jitter_seconds: float = 0.0
    resource_requirements: dict[str, float] = field(default_factory=dict)
    execution_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> ScheduleSpec:
        """A stored (normalised) config, typed; a setting it lacks takes its default."""
        return cls(**{k: v for k, v in config.items() if k in _SPEC_NAMES})


_SPEC_NAMES: Final = frozenset(f.name for f in fields(ScheduleSpec))
DEFAULTS: Final[dict[str, Any]] = {
    f.name: f.default for f in fields(ScheduleSpec) if f.default is not dataclasses.MISSING
}


def _enum_text(value: Any) -> str:
    text = value.value if isinstance(value, Enum) else str(value)
    return text.strip().lower()


def _number(
    config: Mapping[str, Any], key: str, default: float, *, low: float, high: float
) -> float:
    value = config.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(str(value))
        except ValueError:
            raise ScheduleSpecError(f"{key} {value!r} is not a number") from None
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ScheduleSpecError(f"{key} must be between {low:g} and {high:g}, got {value:g}")
    return value


def _int(config: Mapping[str, Any], key: str, default: int, *, low: int, high: int) -> int:
    value = _number(config, key, default, low=low, high=high)
    if value != int(value):
        raise ScheduleSpecError(f"{key} must be a whole number, got {value:g}")
    return int(value)


def _choice(config: Mapping[str, Any], key: str, default: str, allowed: tuple[str, ...]) -> str:
    text = _enum_text(config.get(key) or default)
    if text not in allowed:
        raise ScheduleSpecError(f"{key} {text!r} is not one of {', '.join(allowed)}")
    return text


def _execution(raw: Any, base_dir: Path | None) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ScheduleSpecError("execution_config must be a table of input_data, stages, mode, ...")
    unknown = sorted(set(raw) - set(EXECUTION_KEYS))
    if unknown:
        raise ScheduleSpecError(
            f"execution_config: unknown key {unknown[0]!r}; known: {', '.join(EXECUTION_KEYS)}"
        )
    out: dict[str, Any] = {}
    data = raw.get("input_data")
    if not data or not isinstance(data, str | Path):
        raise ScheduleSpecError("execution_config needs input_data: the parquet file to run on")
    path = Path(data).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    out["input_data"] = str(path.resolve())
    steps = raw.get("steps")
    if raw.get("pipeline") and not steps:
        from stages.errors import StageError
        from stages.pipeline import load

        pipeline_path = Path(raw["pipeline"]).expanduser()
        if not pipeline_path.is_absolute() and base_dir is not None:
            pipeline_path = base_dir / pipeline_path
        try:
            steps = load(pipeline_path).to_dict()["steps"]
        except (StageError, OSError) as exc:
            raise ScheduleSpecError(f"execution_config pipeline: {exc}") from None
        out["pipeline"] = str(pipeline_path.resolve())
    if steps:
        if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
            raise ScheduleSpecError("execution_config steps must be a list of step tables")
        out["steps"] = [dict(s) for s in steps]
        out["stages"] = []
    else:
        stages = raw.get("stages") or DEFAULT_STAGES
        if isinstance(stages, str):
            stages = [s for s in stages.split(",") if s.strip()]
        if not isinstance(stages, list | tuple):
            raise ScheduleSpecError("execution_config stages must be a list of stage names")
        out["stages"] = [_enum_text(s) if isinstance(s, Enum) else str(s).strip() for s in stages]
    out["mode"] = _choice(raw, "mode", "sequential", MODES)
    overrides = raw.get("config", raw.get("config_overrides")) or {}
    if not isinstance(overrides, Mapping) or not all(
        isinstance(v, Mapping) for v in overrides.values()
    ):
        raise ScheduleSpecError("execution_config config must map stage names to config tables")
    out["config"] = {
        str(_enum_text(k) if isinstance(k, Enum) else k): dict(v) for k, v in overrides.items()
    }
    out["save_checkpoints"] = bool(raw.get("save_checkpoints", True))
    out["partitions"] = _int(raw, "partitions", 0, low=0, high=8192)
    out["max_attempts"] = _int(raw, "max_attempts", 2, low=1, high=100)
    return out


def normalize(
    config: Mapping[str, Any], *, now: float | None = None, base_dir: Path | None = None
) -> dict[str, Any]:
    """Check a schedule config and return it as plain data. ``now``: refuse a one-time date in
    the past (the door checks it; a stored config is never refused for the time passing)."""
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise ScheduleSpecError(
            f"unknown schedule setting {unknown[0]!r}; known: {', '.join(KEYS)}"
        )
    sid = str(config.get("schedule_id") or "")
    if not SCHEDULE_ID.match(sid):
        raise ScheduleSpecError(
            f"schedule_id {sid!r} must be 1-60 letters, digits, '_', '.' or '-', not starting with a symbol"
        )
    out: dict[str, Any] = {"schedule_id": sid}
    out["name"] = str(config.get("name") or sid)
    out["description"] = str(config.get("description") or "")
    kind = _choice(config, "schedule_type", "", TYPES) if config.get("schedule_type") else ""
    if not kind:
        raise ScheduleSpecError(f"schedule_type is required: one of {', '.join(TYPES)}")
    out["schedule_type"] = kind
    out["timezone"] = str(config.get("timezone") or DEFAULTS["timezone"])
    tz = zone(out["timezone"])
    expression = config.get("schedule_expression")
    out["schedule_expression"] = "" if expression is None else str(expression).strip()
    deps = config.get("dependencies") or []
    if isinstance(deps, str):
        deps = [d for d in deps.split(",") if d.strip()]
    if not isinstance(deps, list | tuple):
        raise ScheduleSpecError("dependencies must be a list of schedule ids")
    out["dependencies"] = sorted({str(d).strip() for d in deps})
    if kind == "dependency":
        if not out["dependencies"] and out["schedule_expression"]:
            out["dependencies"] = sorted(
                {d.strip() for d in out["schedule_expression"].split(",") if d.strip()}
            )
        if not out["dependencies"]:
            raise ScheduleSpecError(
                "a dependency schedule needs dependencies: the upstream schedule ids"
            )
        if sid in out["dependencies"]:
            raise ScheduleSpecError(f"dependency cycle: {sid} -> {sid}")
    elif out["dependencies"]:
        raise ScheduleSpecError("dependencies belong to schedule_type dependency")
    elif not out["schedule_expression"]:
        raise ScheduleSpecError(f"schedule_expression is required for a {kind} schedule")
    for key in ("start_date", "end_date"):
        value = config.get(key)
        out[key] = None if value in (None, "") else parse_instant(value, tz, key)
    if out["start_date"] and out["end_date"] and out["end_date"] <= out["start_date"]:
        raise ScheduleSpecError("end_date must be after start_date")
    if kind == "cron":
        out["schedule_expression"] = Cron.parse(
            out["schedule_expression"], out["timezone"]
        ).expression
    elif kind == "interval":
        every = parse_duration_s(out["schedule_expression"])
        if every < 1:
            raise ScheduleSpecError(f"interval {out['schedule_expression']!r} is under 1 s")
        out["interval_s"] = every
    elif kind == "one_time":
        at = parse_instant(out["schedule_expression"], tz, "schedule_expression")
        if now is not None and at <= now:
            raise ScheduleSpecError(
                f"one-time date {iso(at, tz)} is in the past (now {iso(round(now), tz)})"
            )
        out["fire_at"] = at
    out["enabled"] = bool(config.get("enabled", DEFAULTS["enabled"]))
    timeout = config.get("execution_timeout_minutes")
    out["execution_timeout_minutes"] = (
        None
        if timeout in (None, 0)
        else _number(config, "execution_timeout_minutes", 0, low=0.001, high=525_600)
    )
    out["retry_strategy"] = _choice(
        config, "retry_strategy", DEFAULTS["retry_strategy"], STRATEGIES
    )
    out["max_retries"] = _int(config, "max_retries", DEFAULTS["max_retries"], low=0, high=100)
    out["retry_delay_minutes"] = _number(
        config, "retry_delay_minutes", DEFAULTS["retry_delay_minutes"], low=0, high=10_080
    )
    out["max_retry_delay_minutes"] = _number(
        config, "max_retry_delay_minutes", DEFAULTS["max_retry_delay_minutes"], low=0, high=10_080
    )
    out["retry_jitter"] = _number(config, "retry_jitter", DEFAULTS["retry_jitter"], low=0, high=1)
    out["priority"] = _int(config, "priority", DEFAULTS["priority"], low=-1_000_000, high=1_000_000)
    out["misfire_policy"] = _choice(config, "misfire_policy", DEFAULTS["misfire_policy"], MISFIRE)
    out["misfire_grace_seconds"] = _number(
        config, "misfire_grace_seconds", DEFAULTS["misfire_grace_seconds"], low=0, high=31_536_000
    )
    out["max_catch_up"] = _int(config, "max_catch_up", DEFAULTS["max_catch_up"], low=1, high=10_000)
    out["jitter_seconds"] = _number(
        config, "jitter_seconds", DEFAULTS["jitter_seconds"], low=0, high=86_400
    )
    if kind == "interval" and out["jitter_seconds"] >= out["interval_s"]:
        raise ScheduleSpecError(
            f"jitter_seconds {out['jitter_seconds']:g} must be under the interval ({out['interval_s']:g} s)"
        )
    out["resource_requirements"] = _resources(config.get("resource_requirements"))
    out["execution_config"] = _execution(config.get("execution_config"), base_dir)
    return out


def _resources(raw: Any) -> dict[str, float]:
    if raw in (None, {}):
        return {}
    if not isinstance(raw, Mapping):
        raise ScheduleSpecError(
            "resource_requirements must be a table of cpu_cores, memory_gb, max_concurrent_jobs"
        )
    unknown = sorted(set(raw) - set(RESOURCES))
    if unknown:
        raise ScheduleSpecError(
            f"resource_requirements: unknown key {unknown[0]!r}; known: {', '.join(RESOURCES)}"
        )
    out: dict[str, float] = {}
    if raw.get("cpu_cores") is not None:
        out["cpu_cores"] = _number(raw, "cpu_cores", 0, low=0.001, high=100_000)
    if raw.get("memory_gb") is not None:
        out["memory_gb"] = _number(raw, "memory_gb", 0, low=0.001, high=1_000_000)
    if raw.get("max_concurrent_jobs") is not None:
        out["max_concurrent_jobs"] = _int(raw, "max_concurrent_jobs", 1, low=1, high=100_000)
    return out


def timetable(config: Mapping[str, Any], added_ts: float) -> Timetable:
    """The timetable of a normalised config; an interval without a start counts from its adding."""
    kind = config["schedule_type"]
    for key in ("interval_s", "fire_at", "start_date", "end_date"):
        value = config.get(key)
        if value is not None and not (
            isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 32_503_680_000
        ):
            raise ScheduleSpecError(f"stored schedule config: {key} {value!r}")
    if kind == "interval" and not config.get("interval_s", 0) >= 1:
        raise ScheduleSpecError(f"stored schedule config: interval_s {config.get('interval_s')!r}")
    if kind == "cron":
        return bounded(Cron.of(config["schedule_expression"], config["timezone"]), config)
    if kind == "interval":
        start = config.get("start_date")
        return Interval(
            float(config["interval_s"]),
            float(start) if start else added_ts,
            first_at_anchor=bool(start),
            end=config.get("end_date"),
        )
    if kind == "one_time":
        return bounded(Once(float(config["fire_at"])), config)
    return Never()


def bounded(table: Timetable, config: Mapping[str, Any]) -> Timetable:
    """Cron and one-time tables honour start_date and end_date too."""
    start, end = config.get("start_date"), config.get("end_date")
    if not (start or end) or isinstance(table, Interval):
        return table
    return _Bounded(table, start, end)


class _Bounded:
    __slots__ = ("end", "start", "table")

    def __init__(self, table: Timetable, start: float | None, end: float | None) -> None:
        self.table, self.start, self.end = table, start, end

    def next_after(self, t: float) -> float | None:
        if self.start is not None and t < self.start:
            t = self.start - 1e-6
        fire = self.table.next_after(t)
        if fire is None or (self.end is not None and fire > self.end):
            return None
        return fire


def load_file(
    path: Path, *, now: float | None, known: set[str] = frozenset()
) -> list[dict[str, Any]]:  # type: ignore[assignment]
    """The ``[[schedule]]`` tables of a TOML file, each checked; a one-time date in the past is
    refused only for a schedule not yet ``known`` (one already added has fired or will)."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScheduleSpecError(f"cannot read schedules file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScheduleSpecError(f"schedules file {path} is not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"schedule"})
    if extra:
        raise ScheduleSpecError(
            f"schedules file {path}: unknown table {extra[0]!r}; use [[schedule]]"
        )
    entries = data.get("schedule", [])
    if not isinstance(entries, list):
        raise ScheduleSpecError(f"schedules file {path}: use [[schedule]] tables")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries, 1):
        if not isinstance(entry, Mapping):
            raise ScheduleSpecError(
                f"schedules file {path}: entry {index} is not a [[schedule]] table"
            )
        sid = str(entry.get("schedule_id", f"#{index}"))
        try:
            config = normalize(entry, now=None if sid in known else now, base_dir=Path(path).parent)
        except ScheduleSpecError as exc:
            raise ScheduleSpecError(f"schedules file {path}, schedule {sid}: {exc}") from None
        if sid in seen:
            raise ScheduleSpecError(f"schedules file {path}: schedule {sid} appears twice")
        seen.add(sid)
        out.append(config)
    return out


def check_dependencies(sid: str, deps: list[str], graph: Mapping[str, list[str]]) -> None:
    """Refuse an unknown upstream or a cycle: ``graph`` maps each schedule id to its upstreams."""
    for dep in deps:
        if dep not in graph:
            raise ScheduleSpecError(f"dependency {dep!r} is not a schedule")
    merged = {**graph, sid: deps}
    path: list[str] = []

    def visit(node: str, seen: set[str]) -> None:
        if node in path:
            cycle = [*path[path.index(node) :], node]
            raise ScheduleSpecError(f"dependency cycle: {' -> '.join(cycle)}")
        if node in seen:
            return
        seen.add(node)
        path.append(node)
        for up in merged.get(node, []):
            visit(up, seen)
        path.pop()

    visit(sid, set())


_NUMBERS: Final = {
    "misfire_grace_seconds": (0, 31_536_000), "jitter_seconds": (0, 86_400),
    "retry_delay_minutes": (0, 10_080), "max_retry_delay_minutes": (0, 10_080),
    "retry_jitter": (0, 1),
}  # fmt: skip
_INTS: Final = {
    "max_catch_up": (1, 10_000),
    "max_retries": (0, 100),
    "priority": (-1_000_000, 1_000_000),
}


def check_stored(config: Any) -> None:
    """Check a config read back from the log (any program can publish one) before the scheduler
    uses it: the types and ranges `normalize` guarantees, without touching files."""

    def fail(what: str) -> None:
        raise ScheduleSpecError(f"stored schedule config: {what}")

    def number(value: Any, low: float, high: float) -> bool:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and low <= value <= high
        )

    if not isinstance(config, Mapping):
        fail("not a table")
    kind = config.get("schedule_type")
    if kind not in TYPES:
        fail(f"schedule_type {kind!r}")
    if not isinstance(config.get("schedule_expression", ""), str):
        fail("schedule_expression is not text")
    zone(str(config.get("timezone", "UTC")))
    if kind == "interval" and not number(config.get("interval_s"), 1, 3650 * 86400):
        fail(f"interval_s {config.get('interval_s')!r}")
    if kind == "one_time" and not number(config.get("fire_at"), 0, 32_503_680_000):
        fail(f"fire_at {config.get('fire_at')!r}")
    for key in ("start_date", "end_date"):
        if config.get(key) is not None and not number(config[key], 0, 32_503_680_000):
            fail(f"{key} {config[key]!r}")
    for key, (low, high) in _NUMBERS.items():
        if key in config and not number(config[key], low, high):
            fail(f"{key} {config[key]!r}")
    for key, (low, high) in _INTS.items():
        if key in config and not (
            number(config[key], low, high) and config[key] == int(config[key])
        ):
            fail(f"{key} {config[key]!r}")
    timeout = config.get("execution_timeout_minutes")
    if timeout is not None and not number(timeout, 0.001, 525_600):
        fail(f"execution_timeout_minutes {timeout!r}")
    if config.get("retry_strategy", "no_retry") not in STRATEGIES:
        fail(f"retry_strategy {config.get('retry_strategy')!r}")
    if config.get("misfire_policy", "run_once") not in MISFIRE:
        fail(f"misfire_policy {config.get('misfire_policy')!r}")
    deps = config.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        fail("dependencies is not a list of schedule ids")
    resources = config.get("resource_requirements", {})
    if not isinstance(resources, Mapping) or not all(
        k in RESOURCES and number(v, 0, 1e9) for k, v in resources.items()
    ):
        fail("resource_requirements")
    execution = config.get("execution_config")
    if not isinstance(execution, Mapping) or not isinstance(execution.get("input_data"), str):
        fail("execution_config has no input_data")
    stages = execution.get("stages", [])
    if not isinstance(stages, list) or not all(isinstance(x, str) for x in stages):
        fail("execution_config stages")
    steps = execution.get("steps", [])
    if not isinstance(steps, list) or not all(isinstance(x, Mapping) for x in steps):
        fail("execution_config steps")
    if not isinstance(execution.get("config", {}), Mapping):
        fail("execution_config config")
    for key, (low, high) in (("partitions", (0, 8192)), ("max_attempts", (1, 100))):
        if key in execution and not (
            number(execution[key], low, high) and execution[key] == int(execution[key])
        ):
            fail(f"execution_config {key} {execution[key]!r}")
