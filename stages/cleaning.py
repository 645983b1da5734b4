"""``data_cleaning``: names, types, strings, duplicates, missing values, impossible values, outliers.

Global-stats stage. `map` does every row-local step on a partition (names, type coercion,
trimming, case, impossible values, rows missing a required column) and returns the facts the
rest needs: row and key hashes (for duplicates), the values behind medians and outlier bounds,
the category sets. `reduce` decides, over the whole table in order, which rows are duplicates
(the first occurrence stays) and computes fill values and bounds from the rows that stay.
`apply` drops the duplicates, fills, handles outliers and turns categoricals into one category
dtype shared by every partition.

Defaults fit Snowflake ``QUERY_HISTORY`` as exported. A default column role applies only where
the column exists; a column the user names in the config must exist.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from stages import coerce, hashing, progress
from stages.config import parse_config
from stages.errors import StageConfigError, StageInputError
from stages.partition import joined, run_whole_by_parts
from stages.spec import Partitioning, Report, Stage, sum_reports

NAME: Final = "data_cleaning"
MISSING_POLICIES: Final = ("drop", "median", "mean", "mode", "constant", "flag", "keep")

Policy = Literal["drop", "median", "mean", "mode", "constant", "flag", "keep"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CleaningConfig:
    column_case: coerce.Case = "upper"
    timestamps: tuple[str, ...] = ("START_TIME", "END_TIME")
    numerics: tuple[str, ...] = (
        "TOTAL_ELAPSED_TIME", "COMPILATION_TIME", "EXECUTION_TIME", "QUEUED_OVERLOAD_TIME",
        "BYTES_SCANNED", "ROWS_PRODUCED", "CREDITS_USED_CLOUD_SERVICES",
    )  # fmt: skip
    categoricals: tuple[str, ...] = (
        "DATABASE_NAME", "SCHEMA_NAME", "QUERY_TYPE", "USER_NAME", "ROLE_NAME",
        "WAREHOUSE_NAME", "WAREHOUSE_SIZE", "EXECUTION_STATUS", "ERROR_CODE",
    )  # fmt: skip
    case_columns: tuple[str, ...] = (
        "DATABASE_NAME", "SCHEMA_NAME", "QUERY_TYPE", "USER_NAME", "ROLE_NAME",
        "WAREHOUSE_NAME", "EXECUTION_STATUS",
    )  # fmt: skip
    category_case: coerce.Case = "upper"
    trim_strings: bool = True
    drop_exact_duplicates: bool = True
    key: tuple[str, ...] = ("QUERY_ID",)
    missing: dict[str, Policy] = field(
        default_factory=lambda: {
            "QUERY_ID": "drop",
            "START_TIME": "drop",
            "WAREHOUSE_NAME": "constant",
            "USER_NAME": "constant",
            "BYTES_SCANNED": "median",
            "ROWS_PRODUCED": "median",
            "TOTAL_ELAPSED_TIME": "median",
            "END_TIME": "flag",
        }
    )
    fill_values: dict[str, str | int | float | bool] = field(
        default_factory=lambda: {"WAREHOUSE_NAME": "UNKNOWN", "USER_NAME": "UNKNOWN"}
    )
    non_negative: tuple[str, ...] = (
        "TOTAL_ELAPSED_TIME", "COMPILATION_TIME", "EXECUTION_TIME", "QUEUED_OVERLOAD_TIME",
        "BYTES_SCANNED", "ROWS_PRODUCED", "CREDITS_USED_CLOUD_SERVICES",
    )  # fmt: skip
    ordered_times: tuple[tuple[str, str], ...] = (("START_TIME", "END_TIME"),)
    impossible: Literal["null", "clip", "drop", "flag"] = "null"
    outliers: tuple[str, ...] = ("EXECUTION_TIME",)
    outlier_method: Literal["iqr", "zscore"] = "iqr"
    outlier_threshold: float = 3.0
    outlier_scale: Literal["linear", "log"] = "log"
    outlier_action: Literal["clip", "flag", "drop"] = "flag"
    explicit: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for column, policy in self.missing.items():
            if policy == "constant" and column not in self.fill_values:
                raise StageConfigError(
                    f"{NAME}: missing policy 'constant' for {column!r} needs fill_values[{column!r}]"
                )
        if self.outlier_threshold <= 0:
            raise StageConfigError(
                f"{NAME}: outlier_threshold must be > 0, got {self.outlier_threshold}"
            )


def parse(values: Mapping[str, Any] | None) -> CleaningConfig:
    cfg = parse_config(CleaningConfig, NAME, values)
    if cfg.column_case == "keep":
        return cfg
    # column names in the config follow the data's normalisation
    case = cfg.column_case

    def names(cols: Sequence[str]) -> tuple[str, ...]:
        return tuple(coerce.normal_name(c, case) for c in cols)

    return CleaningConfig(
        column_case=case,
        timestamps=names(cfg.timestamps),
        numerics=names(cfg.numerics),
        categoricals=names(cfg.categoricals),
        case_columns=names(cfg.case_columns),
        category_case=cfg.category_case,
        trim_strings=cfg.trim_strings,
        drop_exact_duplicates=cfg.drop_exact_duplicates,
        key=names(cfg.key),
        missing={coerce.normal_name(k, case): v for k, v in cfg.missing.items()},
        fill_values={coerce.normal_name(k, case): v for k, v in cfg.fill_values.items()},
        non_negative=names(cfg.non_negative),
        ordered_times=tuple(tuple(names(pair)) for pair in cfg.ordered_times),  # type: ignore[misc]
        impossible=cfg.impossible,
        outliers=names(cfg.outliers),
        outlier_method=cfg.outlier_method,
        outlier_threshold=cfg.outlier_threshold,
        outlier_scale=cfg.outlier_scale,
        outlier_action=cfg.outlier_action,
        explicit=cfg.explicit,
    )


def _present(
    cfg: CleaningConfig, key: str, columns: Sequence[str], wanted: Sequence[str]
) -> list[str]:
    """Columns of a role that the data has; a missing one is an error only if the user named it."""
    have = set(columns)
    missing = [c for c in wanted if c not in have]
    if missing and key in cfg.explicit:
        raise StageInputError(
            f"{NAME}: column {missing[0]!r} named in {key!r} is not in the data "
            f"(columns: {', '.join(columns)})"[:400]
        )
    return [c for c in wanted if c in have]


class _Counts:
    """Per-column action counts; zero counts are left out so partitions merge to the whole."""

    def __init__(self) -> None:
        self.columns: dict[str, dict[str, int]] = {}

    def add(self, column: str, action: str, count: int) -> None:
        if count:
            entry = self.columns.setdefault(column, {})
            entry[action] = entry.get(action, 0) + int(count)


# ---- map: everything row-local, and the partial for the global pass


def map_partition(df: pd.DataFrame, cfg: CleaningConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    counts = _Counts()
    rows_in = len(df)
    names = coerce.normal_names(df.columns, cfg.column_case)
    out = df.set_axis(names, axis=1).reset_index(drop=True)
    renamed = sum(1 for a, b in zip(df.columns, names, strict=True) if str(a) != b)

    timestamps = _present(cfg, "timestamps", names, cfg.timestamps)
    numerics = [c for c in _present(cfg, "numerics", names, cfg.numerics) if c not in timestamps]
    categoricals = _present(cfg, "categoricals", names, cfg.categoricals)
    case_columns = _present(cfg, "case_columns", names, cfg.case_columns)
    key = _present(cfg, "key", names, cfg.key)
    if key and len(key) != len(cfg.key):
        key = []  # a partial default key would merge rows that differ
    missing = {
        c: p
        for c, p in cfg.missing.items()
        if c in _present(cfg, "missing", names, list(cfg.missing))
    }

    columns: dict[str, pd.Series] = {}
    with progress.part(0.0, 0.3, "timestamps and numbers"):
        for column in progress.each([*timestamps, *numerics], "column", rows_in):
            convert = coerce.to_utc if column in timestamps else coerce.to_number
            columns[column], bad = convert(out[column])
            counts.add(column, "unparseable", bad)
    text = [c for c in names if c not in columns and coerce.is_text(out[c])]
    with progress.part(0.3, 0.7, "text"):
        for column in progress.each(text, "column", rows_in):
            values = out[column]
            if cfg.trim_strings:
                values, trimmed, blanks = coerce.trim(values)
                counts.add(column, "trimmed", trimmed)
                counts.add(column, "blank_to_null", blanks)
            if column in case_columns:
                values, recased = coerce.recase(values, cfg.category_case)
                counts.add(column, "case_normalised", recased)
            columns[column] = values
    if columns:
        out = out.assign(**columns)
    progress.report(0.7, f"impossible values and duplicates, {rows_in} rows")

    keep = np.ones(len(out), dtype=bool)
    out, keep = _impossible(out, cfg, names, numerics, timestamps, counts, keep)
    for column, policy in missing.items():
        if policy == "drop":
            absent = out[column].isna().to_numpy() & keep
            counts.add(column, "dropped_missing", int(absent.sum()))
            keep &= ~absent
    # categoricals become codes now (local categories), so the rest copies bytes, not text
    typed = {c: out[c].astype("category") for c in categoricals}
    if typed:
        out = out.assign(**typed)

    partial: dict[str, Any] = {
        "rows_in": rows_in,
        "rows": len(out),
        "alive": keep,
        "renamed": renamed,
        "counts": counts.columns,
    }
    key_hash = hashing.rows(out, key) if key else None
    if key_hash is not None:
        partial["key_hash"] = key_hash
    if cfg.drop_exact_duplicates:
        rest = [c for c in out.columns if c not in key]
        partial["row_hash"] = _combine(key_hash, hashing.rows(out, rest), len(out))
    values: dict[str, np.ndarray] = {}
    modes: dict[str, dict[str, Any]] = {}
    for column, policy in missing.items():
        if policy in ("median", "mean"):
            values[column] = _numbers(out[column], column, policy)
        elif policy == "mode":
            codes, uniques = pd.factorize(out[column], use_na_sentinel=True)
            modes[column] = {"codes": codes.astype(np.int64), "uniques": _mode_values(uniques)}
    for column in _present(cfg, "outliers", names, cfg.outliers):
        values.setdefault(column, _numbers(out[column], column, "outlier"))
    partial["values"] = values
    partial["modes"] = modes
    partial["categories"] = {c: _used_categories(out[c], keep) for c in categoricals}
    return out, partial


def _used_categories(values: pd.Series, keep: np.ndarray) -> list[Any]:
    codes = values.cat.codes.to_numpy()
    used = np.unique(codes[keep & (codes >= 0)])
    return sorted(_plain(values.cat.categories[used]), key=str)


def _impossible(
    out: pd.DataFrame,
    cfg: CleaningConfig,
    names: Sequence[str],
    numerics: Sequence[str],
    timestamps: Sequence[str],
    counts: _Counts,
    keep: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray]:
    changes: dict[str, pd.Series] = {}
    for column in _present(cfg, "non_negative", names, cfg.non_negative):
        values = out[column]
        if column not in numerics:
            values, _ = coerce.to_number(values)
        bad = (values < 0).to_numpy()
        changes.update(_act(column, values, bad, cfg, counts, keep, lower=0.0))
    for start, end in cfg.ordered_times:
        if start not in names or end not in names:
            _present(cfg, "ordered_times", names, [start, end])
            continue
        if start not in timestamps or end not in timestamps:
            raise StageConfigError(
                f"{NAME}: ordered_times ({start!r}, {end!r}) must both be in 'timestamps'"
            )
        begin = changes.get(start, out[start])
        values = changes.get(end, out[end])
        bad = (values < begin).to_numpy()
        changes.update(_act(end, values, bad, cfg, counts, keep, lower=begin))
    if changes:
        out = out.assign(**changes)
    return out, keep


def _act(
    column: str,
    values: pd.Series,
    bad: np.ndarray,
    cfg: CleaningConfig,
    counts: _Counts,
    keep: np.ndarray,
    *,
    lower: float | pd.Series,
) -> dict[str, pd.Series]:
    n_bad = int((bad & keep).sum())
    counts.add(column, "impossible", n_bad)
    if cfg.impossible == "flag":
        return {
            f"{column}_INVALID" if cfg.column_case != "lower" else f"{column}_invalid": pd.Series(
                bad, index=values.index
            )
        }
    if not n_bad:
        return {}
    if cfg.impossible == "drop":
        keep &= ~bad
        return {}
    if cfg.impossible == "null":
        return {column: values.mask(bad)}
    if isinstance(lower, pd.Series):
        return {column: values.mask(bad, lower)}
    return {column: values.clip(lower=lower)}


def _numbers(values: pd.Series, column: str, purpose: str) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        raise StageInputError(
            f"{NAME}: column {column!r} is {values.dtype}, but {purpose} needs numbers; "
            "list it in 'numerics'"
        )
    return values.to_numpy(dtype="float64", na_value=np.nan)


def _mode_values(uniques: Any) -> list[Any]:
    """Candidate mode values as plain data; times and durations travel as ISO text."""
    dtype = uniques.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return [v.isoformat() for v in uniques]
    return _plain(uniques)


def _combine(a: np.ndarray | None, b: np.ndarray, n: int) -> np.ndarray:
    if a is None:
        return b
    return (a * hashing.MIX) ^ b if n else b


def _plain(values: Any) -> list[Any]:
    return [v.item() if isinstance(v, np.generic) else v for v in list(values)]


# ---- reduce: duplicates over the whole table, fill values, bounds, category sets


def reduce(partials: Sequence[dict[str, Any]], cfg: CleaningConfig) -> dict[str, Any]:
    sizes = [int(p["rows"]) for p in partials]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    total = int(offsets[-1])
    alive = joined([p["alive"] for p in partials]) if partials else np.zeros(0, bool)
    exact = np.zeros(total, dtype=bool)
    remaining = np.flatnonzero(alive)
    if all("row_hash" in p for p in partials) and cfg.drop_exact_duplicates:
        rows = joined([p["row_hash"] for p in partials])
        exact[remaining[_duplicated(rows[remaining])]] = True
    by_key = np.zeros(total, dtype=bool)
    if all("key_hash" in p for p in partials):
        keys = joined([p["key_hash"] for p in partials])
        remaining = np.flatnonzero(alive & ~exact)
        by_key[remaining[_duplicated(keys[remaining])]] = True
    drop = ~alive | exact | by_key
    keep = ~drop

    fills: dict[str, Any] = {}
    bounds: dict[str, list[float]] = {}
    columns = partials[0]["values"].keys() if partials else []
    for column in columns:
        values = joined([p["values"][column] for p in partials])[keep]
        values = values[~np.isnan(values)]
        policy = cfg.missing.get(column)
        if policy == "median" and len(values):
            fills[column] = float(np.median(values))
        elif policy == "mean" and len(values):
            fills[column] = float(np.sort(values).mean())
        if column in cfg.outliers:
            bounds[column] = _bounds(values, cfg)
    for column in partials[0]["modes"] if partials else []:
        fills[column] = _mode(partials, column, keep, offsets)
    for column, value in cfg.fill_values.items():
        if cfg.missing.get(column) == "constant":
            fills[column] = value
    categories: dict[str, list[Any]] = {}
    for column in partials[0]["categories"] if partials else []:
        union: set[Any] = set()
        for p in partials:
            union.update(p["categories"][column])
        if cfg.missing.get(column) in ("constant", "mode") and fills.get(column) is not None:
            union.add(fills[column])
        categories[column] = sorted(union, key=str)
    return {
        "drop": [np.flatnonzero(drop[a:b]) for a, b in itertools.pairwise(offsets)],
        "exact_duplicates": int(exact.sum()),
        "key_duplicates": int(by_key.sum()),
        "fills": fills,
        "bounds": bounds,
        "categories": categories,
        "rows_in": sum(int(p["rows_in"]) for p in partials),
        "rows_out": int(keep.sum()),
        "renamed": int(partials[0]["renamed"]) if partials else 0,
        "counts": sum_reports([p["counts"] for p in partials]),
    }


def _duplicated(values: np.ndarray) -> np.ndarray:
    if not len(values):
        return np.zeros(0, dtype=bool)
    return pd.Series(values).duplicated(keep="first").to_numpy()


def _bounds(values: np.ndarray, cfg: CleaningConfig) -> list[float]:
    if not len(values):
        return [-np.inf, np.inf]
    scaled = np.log1p(np.clip(values, 0, None)) if cfg.outlier_scale == "log" else values
    k = cfg.outlier_threshold
    if cfg.outlier_method == "iqr":
        q1, q3 = np.quantile(scaled, [0.25, 0.75])
        lo, hi = q1 - k * (q3 - q1), q3 + k * (q3 - q1)
    else:
        ordered = np.sort(scaled)
        mean, std = ordered.mean(), ordered.std()
        lo, hi = mean - k * std, mean + k * std
    if cfg.outlier_scale == "log":
        return [float(np.expm1(lo)) if lo > 0 else -np.inf, float(np.expm1(hi))]
    return [float(lo), float(hi)]


def _mode(
    partials: Sequence[dict[str, Any]], column: str, keep: np.ndarray, offsets: np.ndarray
) -> Any:
    counts: dict[Any, int] = {}
    for p, start in zip(partials, offsets, strict=False):
        codes = p["modes"][column]["codes"]
        uniques = p["modes"][column]["uniques"]
        kept = codes[keep[start : start + len(codes)] & (codes >= 0)]
        for code, n in zip(*np.unique(kept, return_counts=True), strict=True):
            value = uniques[int(code)]
            counts[value] = counts.get(value, 0) + int(n)
    if not counts:
        return None
    return min(counts, key=lambda v: (-counts[v], str(v)))


# ---- apply: drop duplicates, fill, outliers, categories


def apply(
    df: pd.DataFrame, cfg: CleaningConfig, stats: dict[str, Any], index: int
) -> tuple[pd.DataFrame, Report]:
    counts = _Counts()
    drop = stats["drop"][index]
    out = df
    if len(drop):
        mask = np.ones(len(df), dtype=bool)
        mask[drop] = False
        out = df[mask].reset_index(drop=True)
    typed = {
        c: out[c].cat.set_categories(cats)
        for c, cats in stats["categories"].items()
        if c in out.columns
    }
    if typed:
        out = out.assign(**typed)
    changes: dict[str, pd.Series] = {}
    for column, policy in cfg.missing.items():
        if column not in out.columns or policy in ("drop", "keep"):
            continue
        absent = out[column].isna()
        n_absent = int(absent.sum())
        if policy == "flag":
            changes[_suffix(column, "MISSING", cfg)] = absent
            counts.add(column, "flagged_missing", n_absent)
        elif stats["fills"].get(column) is not None:
            current = out[column]
            values, fill = _fillable(current, stats["fills"][column])
            if n_absent:
                values = values.fillna(fill)
                counts.add(column, f"filled_{policy}", n_absent)
            if values is not current:
                changes[column] = values
    if changes:
        out = out.assign(**changes)
    out, counts = _outliers(out, cfg, stats, counts)
    return out, {"rows_out": len(out), "columns": counts.columns}


def _fillable(values: pd.Series, fill: Any) -> tuple[pd.Series, Any]:
    """The column ready to take `fill`, and `fill` in the column's type.

    A categorical gains the fill as a category in every partition (so all share one dtype),
    and a time or duration fill arrives as ISO text.
    """
    dtype = values.dtype
    try:
        if isinstance(dtype, pd.DatetimeTZDtype):
            stamp = pd.Timestamp(fill)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
            return values, stamp.tz_convert(dtype.tz)
        if pd.api.types.is_datetime64_dtype(dtype):
            return values, pd.Timestamp(fill)
        if pd.api.types.is_timedelta64_dtype(dtype):
            return values, pd.Timedelta(fill)
    except (ValueError, TypeError) as exc:
        raise StageInputError(
            f"{NAME}: fill value {fill!r} for column {values.name!r} is not a {dtype} value"
        ) from exc
    if isinstance(dtype, pd.CategoricalDtype) and fill not in values.cat.categories:
        values = values.cat.add_categories([fill])
    return values, fill


def _outliers(
    out: pd.DataFrame, cfg: CleaningConfig, stats: dict[str, Any], counts: _Counts
) -> tuple[pd.DataFrame, _Counts]:
    flags: dict[str, pd.Series] = {}
    keep = np.ones(len(out), dtype=bool)
    for column, (lo, hi) in stats["bounds"].items():
        values = out[column]
        bad = ((values < lo) | (values > hi)).to_numpy()
        counts.add(column, "outliers", int(bad.sum()))
        if cfg.outlier_action == "flag":
            flags[_suffix(column, "OUTLIER", cfg)] = pd.Series(bad, index=out.index)
        elif cfg.outlier_action == "clip" and bad.any():
            flags[column] = values.clip(lower=lo if np.isfinite(lo) else None, upper=hi)
        elif cfg.outlier_action == "drop":
            keep &= ~bad
    if flags:
        out = out.assign(**flags)
    if not keep.all():
        out = out[keep].reset_index(drop=True)
    return out, counts


def _suffix(column: str, what: str, cfg: CleaningConfig) -> str:
    return f"{column}_{what.lower() if cfg.column_case == 'lower' else what}"


def report(stats: dict[str, Any], parts: Sequence[Report], cfg: CleaningConfig) -> Report:
    merged = sum_reports(parts)
    columns = sum_reports([stats["counts"], merged.get("columns", {})])
    return {
        "rows_in": stats["rows_in"],
        "rows_out": merged.get("rows_out", 0),
        "renamed_columns": stats["renamed"],
        "exact_duplicates_removed": stats["exact_duplicates"],
        "key_duplicates_removed": stats["key_duplicates"],
        "fill_values": {c: v for c, v in stats["fills"].items() if v is not None},
        "outlier_bounds": stats["bounds"],
        "columns": dict(sorted(columns.items())),
    }


def data_cleaning(
    df: pd.DataFrame, config: Mapping[str, Any] | CleaningConfig | None = None
) -> tuple[pd.DataFrame, Report]:
    """Clean `df`; see the module doc. Returns the cleaned frame and counts of every action."""
    cfg = config if isinstance(config, CleaningConfig) else parse(config)
    return run_whole_by_parts(STAGE, df, cfg)


STAGE: Final = Stage(
    name=NAME,
    func=data_cleaning,
    partitioning=Partitioning.GLOBAL_STATS,
    parse=parse,
    map=map_partition,
    reduce=reduce,
    apply=apply,
    report=report,
    description="normalise names and types, trim, de-duplicate, fill, handle impossible values and outliers",
)
