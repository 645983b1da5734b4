"""``data_aggregation``: group by keys and a time bucket, with counts, sums, means, extremes, percentiles.

Global stage: it reads every row at once, and only the columns it needs (`columns`). Several
groupings can be asked for at once; the output stacks them, one row per group, with a
``GROUPING`` column naming the grouping and the key columns of other groupings left empty
(SQL's ``GROUPING SETS``). The default is the Snowflake cost view: per warehouse per day and per
user per day, the queries, failed queries, total and p95 elapsed time, bytes scanned, and
credits (cloud services as recorded, compute estimated from execution time and warehouse size).

A metric is ``"count"``, ``"AGG:COLUMN"`` with AGG one of sum, mean, min, max, median, nunique
or pNN (a percentile, e.g. p95), or ``"count_eq:COLUMN=VALUE"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from stages import coerce, progress
from stages.config import check_timezone, parse_config
from stages.errors import StageConfigError, StageInputError
from stages.spec import Partitioning, Report, Stage

NAME: Final = "data_aggregation"
BUCKETS: Final = ("hour", "day", "week", "none")
AGGS: Final = ("sum", "mean", "min", "max", "median", "nunique")
COST_COLUMN: Final = "CREDITS_COMPUTE_EST"
#: Snowflake standard warehouse credits per hour by size.
CREDITS_PER_HOUR: Final = {
    "X-SMALL": 1.0, "SMALL": 2.0, "MEDIUM": 4.0, "LARGE": 8.0, "X-LARGE": 16.0,
    "2X-LARGE": 32.0, "3X-LARGE": 64.0, "4X-LARGE": 128.0, "5X-LARGE": 256.0, "6X-LARGE": 512.0,
}  # fmt: skip
_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregationConfig:
    time_column: str = "START_TIME"
    timezone: str = "UTC"
    groupings: tuple[dict[str, Any], ...] = (
        {"name": "warehouse_day", "by": ["WAREHOUSE_NAME"], "bucket": "day"},
        {"name": "user_day", "by": ["USER_NAME"], "bucket": "day"},
    )
    metrics: dict[str, str] = field(
        default_factory=lambda: {
            "QUERIES": "count",
            "FAILED_QUERIES": "count_eq:EXECUTION_STATUS=FAIL",
            "TOTAL_ELAPSED_MS": "sum:TOTAL_ELAPSED_TIME",
            "P95_ELAPSED_MS": "p95:TOTAL_ELAPSED_TIME",
            "BYTES_SCANNED": "sum:BYTES_SCANNED",
            "CREDITS_CLOUD_SERVICES": "sum:CREDITS_USED_CLOUD_SERVICES",
            COST_COLUMN: f"sum:{COST_COLUMN}",
        }
    )
    cost_size_column: str = "WAREHOUSE_SIZE"
    cost_time_column: str = "EXECUTION_TIME"
    credits_per_hour: dict[str, float] = field(default_factory=lambda: dict(CREDITS_PER_HOUR))
    explicit: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.groupings:
            raise StageConfigError(f"{NAME}: groupings must name at least one grouping")
        seen: set[str] = set()
        for grouping in self.groupings:
            name = _grouping(grouping).name
            if name in seen:
                raise StageConfigError(f"{NAME}: grouping {name!r} is declared twice")
            seen.add(name)
        keys = {"GROUPING", "BUCKET"} | {c for g in self.groupings for c in _grouping(g).by}
        for name, text in self.metrics.items():
            _metric(name, text)
            if name in keys:
                raise StageConfigError(
                    f"{NAME}: metric name {name!r} is taken by a key column; "
                    "name metrics apart from GROUPING, BUCKET and the 'by' columns"
                )


@dataclass(frozen=True, slots=True)
class _Grouping:
    name: str
    by: tuple[str, ...]
    bucket: str


@dataclass(frozen=True, slots=True)
class _Metric:
    name: str
    agg: str
    column: str | None
    value: str | None = None
    quantile: float | None = None


def _grouping(spec: Mapping[str, Any]) -> _Grouping:
    unknown = set(spec) - {"name", "by", "bucket"}
    if unknown:
        raise StageConfigError(
            f"{NAME}: unknown grouping key {sorted(unknown)[0]!r} (allowed: bucket, by, name)"
        )
    name, by, bucket = spec.get("name"), spec.get("by", ()), spec.get("bucket", "day")
    if not isinstance(name, str) or not name:
        raise StageConfigError(f"{NAME}: every grouping needs a 'name', got {dict(spec)}")
    if not isinstance(by, list | tuple) or not all(isinstance(c, str) for c in by):
        raise StageConfigError(f"{NAME}: grouping {name!r}: 'by' must be a list of column names")
    if bucket not in BUCKETS:
        raise StageConfigError(
            f"{NAME}: grouping {name!r}: bucket {bucket!r} is not one of {', '.join(BUCKETS)}"
        )
    if len(set(by)) != len(by):
        twice = next(c for c in by if by.count(c) > 1)
        raise StageConfigError(f"{NAME}: grouping {name!r} names {twice!r} twice in 'by'")
    if {"GROUPING", "BUCKET"} & set(by):
        raise StageConfigError(
            f"{NAME}: grouping {name!r}: 'by' may not name GROUPING or BUCKET (output columns)"
        )
    if not by and bucket == "none":
        raise StageConfigError(f"{NAME}: grouping {name!r} groups by nothing")
    return _Grouping(name, tuple(by), bucket)


def _metric(name: str, text: str) -> _Metric:
    if text == "count":
        return _Metric(name, "count", None)
    agg, sep, rest = text.partition(":")
    if not sep or not rest:
        raise StageConfigError(
            f"{NAME}: metric {name!r} = {text!r}: expected 'count', 'AGG:COLUMN' or "
            "'count_eq:COLUMN=VALUE'"
        )
    if agg == "count_eq":
        column, eq, value = rest.partition("=")
        if not eq:
            raise StageConfigError(f"{NAME}: metric {name!r} = {text!r}: expected COLUMN=VALUE")
        return _Metric(name, agg, column, value)
    if match := _PERCENTILE.match(agg):
        q = float(match.group(1)) / 100
        return _Metric(name, "quantile", rest, quantile=q)
    if agg not in AGGS:
        raise StageConfigError(
            f"{NAME}: metric {name!r}: aggregation {agg!r} is not one of count, count_eq, "
            f"{', '.join(AGGS)} or pNN"
        )
    return _Metric(name, agg, rest)


def parse(values: Mapping[str, Any] | None) -> AggregationConfig:
    cfg = parse_config(AggregationConfig, NAME, values)
    check_timezone(NAME, cfg.timezone)
    return cfg


def _plan(
    cfg: AggregationConfig, columns: Sequence[str]
) -> tuple[list[_Grouping], list[_Metric], bool]:
    """The groupings and metrics that apply to data with `columns`, and whether to add cost."""
    have = set(columns)
    cost = {cfg.cost_size_column, cfg.cost_time_column} <= have
    if not cost and {"cost_size_column", "cost_time_column"} & cfg.explicit:
        missing = sorted({cfg.cost_size_column, cfg.cost_time_column} - have)
        raise StageInputError(f"{NAME}: cost column {missing[0]!r} is not in the data")
    if cost:
        have.add(COST_COLUMN)
    groupings = [_grouping(g) for g in cfg.groupings]
    metrics = [_metric(n, t) for n, t in cfg.metrics.items()]
    strict_g, strict_m = "groupings" in cfg.explicit, "metrics" in cfg.explicit
    usable_g = []
    for g in groupings:
        need = [*g.by, *([cfg.time_column] if g.bucket != "none" else [])]
        missing = [c for c in need if c not in have]
        if missing and strict_g:
            raise StageInputError(
                f"{NAME}: grouping {g.name!r} needs column {missing[0]!r}, not in the data"
            )
        if not missing:
            usable_g.append(g)
    usable_m = []
    for m in metrics:
        if m.column is not None and m.column not in have:
            if strict_m:
                raise StageInputError(
                    f"{NAME}: metric {m.name!r} needs column {m.column!r}, not in the data"
                )
            continue
        usable_m.append(m)
    if not usable_g:
        raise StageInputError(
            f"{NAME}: no grouping can run on these columns; set 'groupings' "
            f"(columns: {', '.join(map(str, columns))})"[:400]
        )
    return usable_g, usable_m, cost


def columns(cfg: AggregationConfig, available: Sequence[str]) -> list[str]:
    """The input columns this stage reads, in table order."""
    groupings, metrics, cost = _plan(cfg, available)
    need = {c for g in groupings for c in g.by}
    need |= {m.column for m in metrics if m.column}
    if any(g.bucket != "none" for g in groupings):
        need.add(cfg.time_column)
    if cost:
        need |= {cfg.cost_size_column, cfg.cost_time_column}
    return [c for c in available if c in need]


def data_aggregation(
    df: pd.DataFrame, config: Mapping[str, Any] | AggregationConfig | None = None
) -> tuple[pd.DataFrame, Report]:
    """Aggregate `df`; see the module doc. One output row per group per grouping."""
    cfg = config if isinstance(config, AggregationConfig) else parse(config)
    groupings, metrics, cost = _plan(cfg, list(df.columns))
    frame = df[columns(cfg, list(df.columns))]
    if cost:
        frame = frame.assign(**{COST_COLUMN: _compute_credits(frame, cfg)})
    keys = list(dict.fromkeys(c for g in groupings for c in g.by))
    results = []
    for grouping in progress.each(groupings, "grouping", len(frame)):
        out = _aggregate(frame, grouping, metrics, cfg)
        for key in keys:
            if key not in out.columns:
                out[key] = pd.Series(index=out.index, dtype=frame[key].dtype)
        out.insert(0, "GROUPING", grouping.name)
        results.append(out[["GROUPING", *keys, "BUCKET", *[m.name for m in metrics]]])
    result = pd.concat(results, ignore_index=True)
    return result, {
        "rows_in": len(df),
        "rows_out": len(result),
        "groupings": {g.name: int((result["GROUPING"] == g.name).sum()) for g in groupings},
        "metrics": [m.name for m in metrics],
    }


def _compute_credits(frame: pd.DataFrame, cfg: AggregationConfig) -> pd.Series:
    rates = {str(k).upper(): float(v) for k, v in cfg.credits_per_hour.items()}
    size = frame[cfg.cost_size_column]
    if isinstance(size.dtype, pd.CategoricalDtype):
        table = np.array([rates.get(str(c).upper(), np.nan) for c in size.cat.categories])
        codes = size.cat.codes.to_numpy()
        rate = np.where(codes >= 0, table[codes] if len(table) else np.nan, np.nan)
    else:
        rate = size.astype("str").str.upper().map(rates).to_numpy(dtype="float64", na_value=np.nan)
    hours = pd.to_numeric(frame[cfg.cost_time_column], errors="coerce").to_numpy("float64") / 3.6e6
    return pd.Series(hours * rate, index=frame.index)


def _bucket(frame: pd.DataFrame, cfg: AggregationConfig, bucket: str) -> pd.Series:
    times = frame[cfg.time_column]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        if not pd.api.types.is_datetime64_dtype(times.dtype):
            raise StageInputError(
                f"{NAME}: column {cfg.time_column!r} is {times.dtype}, not a timestamp; "
                "run data_cleaning first"
            )
        times = times.dt.tz_localize("UTC")
    # bucket on local wall time, so a day is a calendar day and a week starts on a Monday
    # whatever DST does in between, then find each wall-clock start's instant again
    wall = times.dt.tz_convert(cfg.timezone).dt.tz_localize(None)
    if bucket == "hour":
        start = wall.dt.floor("h")
    else:
        start = wall.dt.normalize()
        if bucket == "week":
            start = start - pd.to_timedelta(start.dt.day_of_week, unit="D")
    return _localize(start, times, cfg.timezone, latest=bucket == "hour")


def _localize(wall: pd.Series, times: pd.Series, tz: str, *, latest: bool) -> pd.Series:
    """Wall-clock bucket starts as instants in `tz`; a start that does not exist moves forward.

    A start that occurs twice (the repeated hour when clocks go back) is the earlier instant for
    a day or week, and for an hour the later one when the row's time is already past it.
    """
    if str(tz) == "UTC":
        return wall.dt.tz_localize("UTC")
    flags = np.ones(len(wall), dtype=bool)
    a = wall.dt.tz_localize(tz, ambiguous=flags, nonexistent="shift_forward").dt.as_unit("us")
    b = wall.dt.tz_localize(tz, ambiguous=~flags, nonexistent="shift_forward").dt.as_unit("us")
    # compare as int64 microseconds (NaT is the smallest int64 and stays NaT)
    ai, bi = a.array.asi8, b.array.asi8
    chosen = np.minimum(ai, bi)
    if latest:
        late = np.maximum(ai, bi)
        row = times.dt.as_unit("us").array.asi8
        chosen = np.where(late <= row, late, chosen)
    utc = pd.to_datetime(chosen.view("datetime64[us]"), utc=True)
    return pd.Series(utc, index=wall.index).dt.tz_convert(tz)


def _equals(values: pd.Series, text: str) -> pd.Series:
    """Where `values` equals `text`, compared as the column's own type (no copy as text)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = values.cat.categories
        matches = [i for i, c in enumerate(categories) if str(c) == text]
        codes = values.cat.codes.to_numpy()
        hit = np.isin(codes, matches) if matches else np.zeros(len(values), dtype=bool)
        return pd.Series(hit, index=values.index)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        try:
            return values == float(text)
        except ValueError:
            return pd.Series(False, index=values.index)
    return (values.astype("str") == text).fillna(False).astype(bool)


def _numeric_metric(groups: Any, frame: pd.DataFrame, m: _Metric) -> pd.Series:
    values = frame[m.column]
    wants_numbers = m.agg in ("sum", "mean", "median", "quantile")
    label = f"p{m.quantile * 100:g}" if m.agg == "quantile" else m.agg
    if wants_numbers and (coerce.is_text(values) or isinstance(values.dtype, pd.CategoricalDtype)):
        raise StageInputError(
            f"{NAME}: metric {m.name!r}: {label} needs a numeric column, "
            f"{m.column!r} is {values.dtype}"
        )
    try:
        if m.agg == "quantile":
            return groups[m.column].quantile(m.quantile)
        return getattr(groups[m.column], m.agg)()
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise StageInputError(
            f"{NAME}: metric {m.name!r}: {label} cannot run on {m.column!r} ({values.dtype})"
        ) from exc


def _aggregate(
    frame: pd.DataFrame, grouping: _Grouping, metrics: Sequence[_Metric], cfg: AggregationConfig
) -> pd.DataFrame:
    keys: list[Any] = [frame[c] for c in grouping.by]
    if grouping.bucket != "none":
        keys.append(_bucket(frame, cfg, grouping.bucket).rename("BUCKET"))
    groups = frame.groupby(keys, observed=True, dropna=False, sort=True)
    columns: dict[str, pd.Series] = {}
    for m in metrics:
        if m.agg == "count":
            columns[m.name] = groups.size()
        elif m.agg == "count_eq":
            hit = _equals(frame[m.column], m.value).groupby(
                keys, observed=True, dropna=False, sort=True
            )
            columns[m.name] = hit.sum().astype("int64")
        else:
            columns[m.name] = _numeric_metric(groups, frame, m)
    out = pd.DataFrame(columns).reset_index()
    if grouping.bucket == "none":
        out["BUCKET"] = pd.Series(
            pd.NaT, index=out.index, dtype=pd.DatetimeTZDtype("us", cfg.timezone)
        )
    return out


STAGE: Final = Stage(
    name=NAME,
    func=data_aggregation,
    partitioning=Partitioning.GLOBAL,
    parse=parse,
    columns=columns,
    description="group by keys and time buckets: counts, sums, means, extremes, percentiles",
)
