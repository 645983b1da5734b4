"""``feature_engineering``: time features, durations, ratios, logs, per-group history, encodings.

Global-stats stage. `map` adds the row-local features (time parts, durations, ratios, log
transforms) and returns, for the features that need the whole table, the group keys, times and
values (per-group history) and value counts (frequency and one-hot encodings). Each `map`
also orders its own rows by time, so `reduce`, the one task of the step that runs alone,
merges those orders instead of sorting the whole table. `reduce` orders each group by time
across every partition (ties keep table order) and computes the per-group features, and fixes
the category sets. `apply` attaches them. Feature names are upper case and
start with the column they come from, e.g. ``START_TIME_HOUR``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from stages import hashing, progress
from stages.config import check_timezone, parse_config
from stages.errors import StageConfigError, StageInputError
from stages.partition import joined, run_whole_by_parts
from stages.spec import Partitioning, Report, Stage

NAME: Final = "feature_engineering"
TIME_PARTS: Final = ("hour", "weekday", "is_weekend", "month", "is_business_hours")
ROLLING_STATS: Final = ("mean", "max", "min", "sum", "std")
_NAT: Final = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureConfig:
    time_column: str = "START_TIME"
    timezone: str = "UTC"
    time_features: tuple[Literal[TIME_PARTS], ...] = TIME_PARTS  # type: ignore[valid-type]
    business_hours: tuple[int, int] = (9, 18)
    durations: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {"DURATION_S": ("START_TIME", "END_TIME")}
    )
    ratios: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {
            "BYTES_PER_MS": ("BYTES_SCANNED", "EXECUTION_TIME"),
            "QUEUED_SHARE": ("QUEUED_OVERLOAD_TIME", "TOTAL_ELAPSED_TIME"),
            "COMPILE_SHARE": ("COMPILATION_TIME", "TOTAL_ELAPSED_TIME"),
        }
    )
    log_columns: tuple[str, ...] = ("BYTES_SCANNED", "EXECUTION_TIME", "ROWS_PRODUCED")
    since_previous: tuple[str, ...] = ("USER_NAME", "WAREHOUSE_NAME")
    rolling: tuple[dict[str, Any], ...] = (
        {
            "group": "WAREHOUSE_NAME",
            "column": "EXECUTION_TIME",
            "window": 20,
            "stats": ["mean", "max"],
        },
    )
    frequency: tuple[str, ...] = ("USER_NAME", "WAREHOUSE_NAME", "QUERY_TYPE")
    one_hot: tuple[str, ...] = ("WAREHOUSE_SIZE", "QUERY_TYPE", "EXECUTION_STATUS")
    max_categories: int = 20
    explicit: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        start, end = self.business_hours
        if not 0 <= start < end <= 24:
            raise StageConfigError(
                f"{NAME}: business_hours must be [start, end) with 0 <= start < end <= 24, "
                f"got {list(self.business_hours)}"
            )
        if self.max_categories < 1:
            raise StageConfigError(
                f"{NAME}: max_categories must be >= 1, got {self.max_categories}"
            )
        for spec in self.rolling:
            _rolling_spec(spec)


@dataclass(frozen=True, slots=True)
class _Rolling:
    group: str
    column: str
    window: int
    stats: tuple[str, ...]

    def name(self, stat: str) -> str:
        return f"{self.column}_ROLLING_{stat.upper()}_{self.window}_BY_{self.group}"


def _rolling_spec(spec: Mapping[str, Any]) -> _Rolling:
    allowed = {"group", "column", "window", "stats"}
    unknown = set(spec) - allowed
    if unknown:
        raise StageConfigError(
            f"{NAME}: unknown rolling key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )
    if not isinstance(spec.get("group"), str) or not isinstance(spec.get("column"), str):
        raise StageConfigError(
            f"{NAME}: rolling needs 'group' and 'column' names, got {dict(spec)}"
        )
    window = spec.get("window", 10)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise StageConfigError(f"{NAME}: rolling window must be an integer >= 1, got {window!r}")
    stats = tuple(spec.get("stats", ("mean",)))
    for stat in stats:
        if stat not in ROLLING_STATS:
            raise StageConfigError(
                f"{NAME}: rolling stat {stat!r} is not one of {', '.join(ROLLING_STATS)}"
            )
    return _Rolling(spec["group"], spec["column"], window, stats)


def parse(values: Mapping[str, Any] | None) -> FeatureConfig:
    cfg = parse_config(FeatureConfig, NAME, values)
    check_timezone(NAME, cfg.timezone)
    return cfg


def _need(cfg: FeatureConfig, key: str, df: pd.DataFrame, columns: Sequence[str]) -> bool:
    """True when every column is there; a missing one is an error only if the user set `key`."""
    missing = [c for c in columns if c not in df.columns]
    if missing and key in cfg.explicit:
        raise StageInputError(
            f"{NAME}: column {missing[0]!r} named in {key!r} is not in the data "
            f"(columns: {', '.join(map(str, df.columns))})"[:400]
        )
    return not missing


def _time(df: pd.DataFrame, column: str) -> pd.Series:
    values = df[column]
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(values.dtype):
            return values.dt.tz_localize("UTC")
        raise StageInputError(
            f"{NAME}: column {column!r} is {values.dtype}, not a timestamp; run data_cleaning "
            "first or list it in its 'timestamps'"
        )
    return values


def _number(df: pd.DataFrame, column: str) -> pd.Series:
    values = df[column]
    if not pd.api.types.is_numeric_dtype(values.dtype):
        raise StageInputError(f"{NAME}: column {column!r} is {values.dtype}, not numeric")
    return values.astype("float64")


# ---- map


def map_partition(df: pd.DataFrame, cfg: FeatureConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    added: dict[str, Any] = {}
    progress.report(0.0, f"time features, {len(df)} rows")
    if cfg.time_features and _need(cfg, "time_column", df, [cfg.time_column]):
        local = _time(df, cfg.time_column).dt.tz_convert(cfg.timezone)
        added.update(_time_parts(local, cfg))
    progress.report(0.3, f"durations, ratios and logs, {len(df)} rows")
    for name, (start, end) in cfg.durations.items():
        if _need(cfg, "durations", df, [start, end]):
            delta = _time(df, end) - _time(df, start)
            added[name] = delta.dt.total_seconds()
    for name, (top, bottom) in cfg.ratios.items():
        if _need(cfg, "ratios", df, [top, bottom]):
            denominator = _number(df, bottom)
            added[name] = _number(df, top) / denominator.where(denominator != 0)
    for column in cfg.log_columns:
        if _need(cfg, "log_columns", df, [column]):
            added[f"LOG_{column}"] = np.log1p(_number(df, column).clip(lower=0))
    out = df.assign(**added) if added else df

    # per-group history, one entry per since_previous group or rolling spec (by its position)
    partial: dict[str, Any] = {"rows": len(df), "history": [], "counts": {}, "added": list(added)}
    progress.report(0.6, f"group histories, {len(df)} rows")
    if _need(cfg, "time_column", df, [cfg.time_column]) and (cfg.since_previous or cfg.rolling):
        times = _time(df, cfg.time_column).dt.as_unit("us").astype("int64")
        times = times.to_numpy(dtype=np.int64)
        # this partition's rows by time, ties in table order: the reduce merges these runs
        partial["by_time"] = np.argsort(times, kind="stable")
        partial["time"] = times  # once: every history entry is over the same times
        for group in cfg.since_previous:
            if _need(cfg, "since_previous", df, [group]):
                partial["history"].append({"since": group, "key": _group_key(df, group)})
        for index, spec in enumerate(map(_rolling_spec, cfg.rolling)):
            if _need(cfg, "rolling", df, [spec.group, spec.column]):
                partial["history"].append(
                    {
                        "rolling": index,
                        "key": _group_key(df, spec.group),
                        "value": _number(df, spec.column).to_numpy(
                            dtype="float64", na_value=np.nan
                        ),
                    }
                )
    progress.report(0.85, f"category counts, {len(df)} rows")
    for column in dict.fromkeys((*cfg.frequency, *cfg.one_hot)):
        if _need(cfg, "frequency" if column in cfg.frequency else "one_hot", df, [column]):
            counts = df[column].value_counts(dropna=True, sort=False)
            partial["counts"][column] = {
                "values": [_plain(v) for v in counts.index],
                "counts": counts.to_numpy(dtype=np.int64),
            }
    return out, partial


def _time_parts(local: pd.Series, cfg: FeatureConfig) -> dict[str, pd.Series]:
    prefix = cfg.time_column
    present = local.notna()
    hour = local.dt.hour
    weekday = local.dt.day_of_week
    parts: dict[str, pd.Series] = {}
    for part in cfg.time_features:
        if part == "hour":
            parts[f"{prefix}_HOUR"] = hour
        elif part == "weekday":
            parts[f"{prefix}_WEEKDAY"] = weekday
        elif part == "month":
            parts[f"{prefix}_MONTH"] = local.dt.month
        elif part == "is_weekend":
            parts[f"{prefix}_IS_WEEKEND"] = (weekday >= 5) & present
        elif part == "is_business_hours":
            start, end = cfg.business_hours
            parts[f"{prefix}_IS_BUSINESS_HOURS"] = (
                (weekday < 5) & (hour >= start) & (hour < end) & present
            )
    return parts


def _group_key(df: pd.DataFrame, column: str) -> np.ndarray:
    """A 64-bit hash of the group value (same value, same hash in every partition); 0 if null."""
    values = df[column]
    return np.where(values.isna().to_numpy(), np.uint64(0), hashing.column(values))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# ---- reduce


def reduce(partials: Sequence[dict[str, Any]], cfg: FeatureConfig) -> dict[str, Any]:
    sizes = [int(p["rows"]) for p in partials]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    per_row: dict[str, list[np.ndarray]] = {}
    specs = [_rolling_spec(s) for s in cfg.rolling]
    orders: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # by group column
    history = partials[0]["history"] if partials else []
    if history:  # every entry is over the same times: one sort by time serves every group
        # (a partial of an older map holds the times in each entry)
        time = joined([p["time"] if "time" in p else p["history"][0]["time"] for p in partials])
        by_time = _by_time(time, partials, bounds)
    for index, entry in enumerate(history):
        group = entry["since"] if "since" in entry else specs[int(entry["rolling"])].group
        if group not in orders:
            key = joined([p["history"][index]["key"] for p in partials])
            orders[group] = _group_order(key, time, by_time)
        order, first = orders[group]
        if "since" in entry:
            result = np.full(len(time), np.nan)
            ordered = time[order]
            gap = np.empty(len(order))
            gap[1:] = (ordered[1:] - ordered[:-1]) / 1e6
            gap[first] = np.nan
            result[order] = gap
            per_row[_since_name(entry["since"])] = _split(result, bounds)
            continue
        spec = specs[int(entry["rolling"])]
        value = joined([p["history"][index]["value"] for p in partials])[order]
        group_id = np.cumsum(first)
        roll = pd.Series(value).groupby(group_id, sort=False).rolling(spec.window, min_periods=1)
        for stat in spec.stats:
            result = np.full(len(time), np.nan)
            result[order] = getattr(roll, stat)().to_numpy()
            per_row[spec.name(stat)] = _split(result, bounds)
    counts: dict[str, dict[Any, int]] = {}
    for column in partials[0]["counts"] if partials else []:
        total: dict[Any, int] = {}
        for p in partials:
            entry = p["counts"][column]
            for value, n in zip(entry["values"], entry["counts"].tolist(), strict=True):
                total[value] = total.get(value, 0) + n
        counts[column] = total
    categories = {}
    for column in cfg.one_hot:
        if column in counts:
            ranked = sorted(counts[column], key=lambda v: (-counts[column][v], str(v)))
            categories[column] = sorted(ranked[: cfg.max_categories], key=str)
            _check_labels(column, categories[column], len(counts[column]) > cfg.max_categories)
    return {
        "per_row": per_row,
        # values and counts as parallel lists: values need not be text (map keys must be)
        "counts": {
            c: {"values": list(counts[c]), "counts": list(counts[c].values())}
            for c in cfg.frequency
            if c in counts
        },
        "categories": categories,
        "other": {c: len(counts[c]) > cfg.max_categories for c in categories},
        "rows": int(bounds[-1]),
        "added": list(partials[0]["added"]) if partials else [],
    }


def _by_time(
    time: np.ndarray, partials: Sequence[dict[str, Any]], bounds: np.ndarray
) -> np.ndarray:
    """The table's rows ordered by time, then table order: the partitions' own orders (each
    a stable sort of its rows), end to end, merged by a stable sort. Those are sorted runs,
    which numpy's stable sort (timsort) merges in linear time: a tenth of sorting the whole
    table, whose sorts the maps share out. A partial without one (a map of an older porch)
    is sorted here."""
    if not all("by_time" in p for p in partials):
        return np.argsort(time, kind="stable")
    runs = joined([p["by_time"] + start for p, start in zip(partials, bounds[:-1], strict=True)])
    return runs[np.argsort(time[runs], kind="stable")]


def _group_order(
    key: np.ndarray, time: np.ndarray, by_time: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The rows with a group and a time, ordered by group, then time, then table order (the
    order of the groups themselves is any); and where each group starts in that order.

    `by_time` is the table's rows ordered by time, then table order (a stable sort); a stable
    sort of it by group number keeps that order within each group. With fewer than 65,536
    groups the numbers are 16-bit, which numpy sorts by radix, in linear time: a tenth of the
    time sort they share, where a sort on both keys cost about twice it for each group column."""
    valid = (time != _NAT) & (key != 0)
    rows = by_time[valid[by_time]]
    if not len(rows):
        return rows, np.zeros(0, dtype=bool)
    codes, groups = pd.factorize(key[rows])
    if len(groups) <= np.iinfo(np.uint16).max:
        codes = codes.astype(np.uint16)
    within = np.argsort(codes, kind="stable")
    sorted_codes = codes[within]
    first = np.ones(len(within), dtype=bool)
    first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    return rows[within], first


def _check_labels(column: str, categories: Sequence[Any], other: bool) -> None:
    """Refuse two one-hot values that would make the same column (``x-1`` and ``x_1``)."""
    seen: dict[str, Any] = {}
    for value in categories:
        label = _label(value)
        if label in seen:
            raise StageConfigError(
                f"{NAME}: one-hot values {seen[label]!r} and {value!r} of {column!r} both make "
                f"column {column + '_IS_' + label!r}; map them apart before feature_engineering"
            )
        seen[label] = value
    if other and "OTHER" in seen:
        raise StageConfigError(
            f"{NAME}: one-hot value {seen['OTHER']!r} of {column!r} makes column "
            f"{column + '_IS_OTHER'!r}, which holds the values beyond max_categories"
        )


def _since_name(group: str) -> str:
    return f"SECONDS_SINCE_PREVIOUS_BY_{group}"


def _split(values: np.ndarray, bounds: np.ndarray) -> list[np.ndarray]:
    return [values[a:b] for a, b in itertools.pairwise(bounds)]


# ---- apply


def apply(
    df: pd.DataFrame, cfg: FeatureConfig, stats: dict[str, Any], index: int
) -> tuple[pd.DataFrame, Report]:
    added: dict[str, Any] = {}
    for group in cfg.since_previous:
        if _since_name(group) in stats["per_row"]:
            added[_since_name(group)] = stats["per_row"][_since_name(group)][index]
    for spec in map(_rolling_spec, cfg.rolling):
        for stat in spec.stats:
            if spec.name(stat) in stats["per_row"]:
                added[spec.name(stat)] = stats["per_row"][spec.name(stat)][index]
    total = stats["rows"]
    for column, entry in stats["counts"].items():
        counts = pd.Series(entry["counts"], index=entry["values"], dtype="float64")
        freq = counts / total if total else pd.Series(dtype="float64")
        added[f"{column}_FREQUENCY"] = (
            _codes_map(df[column], freq).astype("float64") if len(freq) else np.nan
        )
    for column, categories in stats["categories"].items():
        values = df[column]
        for category in categories:
            added[f"{column}_IS_{_label(category)}"] = (values == category).to_numpy(
                dtype=bool, na_value=False
            )
        if stats["other"][column]:
            added[f"{column}_IS_OTHER"] = (values.notna() & ~values.isin(categories)).to_numpy()
    out = df.assign(**added) if added else df
    return out, {"rows": len(out), "features_added": [*stats["added"], *added]}


def _codes_map(values: pd.Series, mapping: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.CategoricalDtype):
        table = mapping.reindex(values.cat.categories).to_numpy(dtype="float64")
        codes = values.cat.codes.to_numpy()
        return pd.Series(np.where(codes >= 0, table[codes], np.nan), index=values.index)
    return values.map(mapping)


def _label(value: Any) -> str:
    text = "".join(ch if ch.isalnum() else "_" for ch in str(value)).strip("_")
    return text.upper() or "BLANK"


def report(stats: dict[str, Any], parts: Sequence[Report], cfg: FeatureConfig) -> Report:
    return {
        "rows": sum(p["rows"] for p in parts),
        "features_added": parts[0]["features_added"] if parts else [],
    }


def feature_engineering(
    df: pd.DataFrame, config: Mapping[str, Any] | FeatureConfig | None = None
) -> tuple[pd.DataFrame, Report]:
    """Add features to `df`; see the module doc. The report lists the features added."""
    cfg = config if isinstance(config, FeatureConfig) else parse(config)
    return run_whole_by_parts(STAGE, df, cfg)


STAGE: Final = Stage(
    name=NAME,
    func=feature_engineering,
    partitioning=Partitioning.GLOBAL_STATS,
    parse=parse,
    map=map_partition,
    reduce=reduce,
    apply=apply,
    report=report,
    description="time parts, durations, ratios, logs, per-group history, frequency and one-hot",
)
