"""``data_validation``: declarative rules with severities; a failed ``error`` rule fails the stage.

Rules: ``columns`` (present, with a dtype family), ``not_null``, ``unique``, ``range``,
``allowed``, ``regex`` (RE2 via pyarrow: linear time, so a rule cannot hang the worker),
``row_count``, ``freshness`` and ``expression`` (see `stages.expr`). The report lists every rule
with its failing count and up to `examples` example rows (their row number in the input and the
values involved). Rows pass through unchanged.

Global-stats stage: `map` counts failures of row-local rules per partition and returns the key
hashes (unique), the row count and the newest time (freshness); `reduce` adds them up across
the table in order. Default rules fit Snowflake query history and the cost view built from it;
a default rule whose columns are absent is skipped, a rule the user writes is not.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stages import hashing, progress
from stages.config import parse_config
from stages.errors import StageConfigError, StageInputError, StageRuleError
from stages.expr import Expression
from stages.partition import joined, run_whole_by_parts
from stages.spec import Partitioning, Report, Stage

NAME: Final = "data_validation"
KINDS: Final = (
    "columns", "not_null", "unique", "range", "allowed", "regex", "row_count", "freshness",
    "expression",
)  # fmt: skip
SEVERITIES: Final = ("error", "warning", "info")
DTYPES: Final = ("string", "integer", "float", "number", "datetime", "bool", "category", "any")
SIZES: Final = ["X-Small", "Small", "Medium", "Large", "X-Large", "2X-Large", "3X-Large",
                "4X-Large", "5X-Large", "6X-Large"]  # fmt: skip
_PARAMS: Final[dict[str, tuple[set[str], set[str]]]] = {
    # kind: (required, optional)
    "columns": ({"columns"}, set()),
    "not_null": ({"column"}, set()),
    "unique": ({"columns"}, set()),
    "range": ({"column"}, {"min", "max"}),
    "allowed": ({"column", "values"}, set()),
    "regex": ({"column", "pattern"}, set()),
    "row_count": (set(), {"min", "max"}),
    "freshness": ({"column", "max_age"}, set()),
    "expression": ({"expr"}, set()),
}
DEFAULT_RULES: Final = (
    {"name": "has_rows", "rule": "row_count", "min": 1},
    {"name": "query_id_present", "rule": "not_null", "column": "QUERY_ID"},
    {"name": "query_id_unique", "rule": "unique", "columns": ["QUERY_ID"]},
    {"name": "start_time_present", "rule": "not_null", "column": "START_TIME"},
    {"name": "elapsed_not_negative", "rule": "range", "column": "TOTAL_ELAPSED_TIME", "min": 0},
    {"name": "bytes_not_negative", "rule": "range", "column": "BYTES_SCANNED", "min": 0},
    {"name": "status_known", "rule": "allowed", "column": "EXECUTION_STATUS",
     "values": ["SUCCESS", "FAIL", "INCIDENT"], "severity": "warning"},
    {"name": "warehouse_size_known", "rule": "allowed", "column": "WAREHOUSE_SIZE",
     "values": SIZES, "severity": "warning"},
    {"name": "query_id_format", "rule": "regex", "column": "QUERY_ID",
     "pattern": "[0-9a-f]+(-[0-9a-f]+)*", "severity": "warning"},
    {"name": "end_not_before_start", "rule": "expression",
     "expr": "isnull(END_TIME) or END_TIME >= START_TIME", "severity": "warning"},
    {"name": "failed_within_queries", "rule": "expression", "expr": "FAILED_QUERIES <= QUERIES"},
    {"name": "queries_positive", "rule": "range", "column": "QUERIES", "min": 1},
    {"name": "credits_not_negative", "rule": "range", "column": "CREDITS_COMPUTE_EST", "min": 0},
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationConfig:
    rules: tuple[dict[str, Any], ...] = DEFAULT_RULES
    examples: int = 3
    now: str | None = None
    explicit: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not 0 <= self.examples <= 100:
            raise StageConfigError(f"{NAME}: examples must be 0..100, got {self.examples}")
        names = [rule(spec, i).name for i, spec in enumerate(self.rules)]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise StageConfigError(f"{NAME}: rule name {sorted(dupes)[0]!r} is used twice")
        if self.now is not None:
            _now(self.now)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: str
    severity: str
    params: dict[str, Any]
    expression: Expression | None = None

    @property
    def columns(self) -> list[str]:
        if self.expression is not None:
            return self.expression.columns
        if "column" in self.params:
            return [self.params["column"]]
        cols = self.params.get("columns", [])
        return list(cols)


def rule(spec: Mapping[str, Any], index: int) -> Rule:
    """Check one rule table and return it; every problem is one line naming the rule."""
    if not isinstance(spec, Mapping):
        raise StageConfigError(f"{NAME}: rule #{index + 1} must be a table, got {spec!r}")
    kind = spec.get("rule")
    label = spec.get("name", f"#{index + 1}")
    if kind not in KINDS:
        raise StageConfigError(
            f"{NAME}: rule {label!r}: 'rule' must be one of {', '.join(KINDS)}, got {kind!r}"
        )
    name = str(spec.get("name") or f"{kind}_{index + 1}")
    severity = spec.get("severity", "error")
    if severity not in SEVERITIES:
        raise StageConfigError(
            f"{NAME}: rule {name!r}: severity {severity!r} is not one of {', '.join(SEVERITIES)}"
        )
    required, optional = _PARAMS[kind]
    params = {k: v for k, v in spec.items() if k not in ("name", "rule", "severity")}
    unknown = set(params) - required - optional
    if unknown:
        allowed = ", ".join(sorted(required | optional | {"name", "rule", "severity"}))
        raise StageConfigError(
            f"{NAME}: rule {name!r}: unknown key {sorted(unknown)[0]!r} (allowed: {allowed})"
        )
    absent = required - set(params)
    if absent:
        raise StageConfigError(f"{NAME}: rule {name!r} ({kind}) needs {sorted(absent)[0]!r}")
    _check_params(name, kind, params)
    expression = Expression(params["expr"]) if kind == "expression" else None
    return Rule(name, kind, severity, params, expression)


def _check_params(name: str, kind: str, params: dict[str, Any]) -> None:
    def fail(what: str) -> StageConfigError:
        return StageConfigError(f"{NAME}: rule {name!r} ({kind}): {what}")

    if "column" in params and not isinstance(params["column"], str):
        raise fail(f"'column' must be a column name, got {params['column']!r}")
    if kind == "columns":
        cols = params["columns"]
        if isinstance(cols, list | tuple):
            cols = dict.fromkeys(cols, "any")
        if not isinstance(cols, Mapping) or not all(v in DTYPES for v in cols.values()):
            raise fail(f"'columns' must map names to one of {', '.join(DTYPES)}")
        params["columns"] = dict(cols)
    if kind == "unique" and (
        not isinstance(params["columns"], list | tuple)
        or not params["columns"]
        or not all(isinstance(c, str) for c in params["columns"])
    ):
        raise fail("'columns' must be a non-empty list of column names")
    if kind in ("range", "row_count"):
        if "min" not in params and "max" not in params:
            raise fail("needs 'min' or 'max'")
        for bound in ("min", "max"):
            value = params.get(bound)
            if kind == "row_count" and not (
                value is None or (isinstance(value, int) and not isinstance(value, bool))
            ):
                raise fail(f"'{bound}' must be a whole number of rows, got {value!r}")
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float | str)
            ):
                raise fail(f"'{bound}' must be a number or an ISO time, got {value!r}")
    if kind == "allowed" and not isinstance(params["values"], list | tuple):
        raise fail("'values' must be a list")
    if kind == "regex":
        pattern = params["pattern"]
        if not isinstance(pattern, str):
            raise fail("'pattern' must be text")
        try:
            pc.match_substring_regex(pa.array([""], pa.string()), f"^(?:{pattern})$")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise fail(f"pattern {pattern!r} is not valid RE2: {exc}") from exc
    if kind == "freshness":
        try:
            age = _duration(params["max_age"])
        except (ValueError, TypeError) as exc:
            raise fail(
                f"max_age {params['max_age']!r} is not a duration like '36h' or '2d'"
            ) from exc
        if age <= pd.Timedelta(0):
            raise fail(f"max_age must be positive, got {params['max_age']!r}")


def _duration(text: Any) -> pd.Timedelta:
    """``36h``, ``2d``, ``1 day``, ``PT30M``: what pandas reads, with ``d`` for days."""
    return pd.Timedelta(re.sub(r"(?<=\d)\s*d\b", "D", str(text)))


def _now(text: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        raise StageConfigError(f"{NAME}: now {text!r} is not an ISO time") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def parse(values: Mapping[str, Any] | None) -> ValidationConfig:
    return parse_config(ValidationConfig, NAME, values)


def _rules(cfg: ValidationConfig) -> list[Rule]:
    return [rule(spec, i) for i, spec in enumerate(cfg.rules)]


def _applies(r: Rule, cfg: ValidationConfig, columns: Sequence[str]) -> bool:
    """A default rule applies only where its columns exist; a user's rule always does."""
    if "rules" in cfg.explicit or r.kind == "columns":
        return True
    have = set(columns)
    return all(c in have for c in r.columns)


# ---- map: row-local failures and the facts for the global rules


def map_partition(df: pd.DataFrame, cfg: ValidationConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    partial: dict[str, Any] = {"rows": len(df), "rules": {}}
    columns = list(map(str, df.columns))
    for r in progress.each(_rules(cfg), "rule", len(df)):
        if not _applies(r, cfg, columns):
            continue
        missing = [c for c in r.columns if c not in df.columns]
        if missing and r.kind != "columns":
            partial["rules"][r.name] = {"missing": missing[0]}
            continue
        partial["rules"][r.name] = _map_rule(r, df, cfg)
    return df, partial


def _map_rule(r: Rule, df: pd.DataFrame, cfg: ValidationConfig) -> dict[str, Any]:
    if r.kind == "columns":
        problems = []
        for column, family in r.params["columns"].items():
            if column not in df.columns:
                problems.append({"column": column, "problem": "missing"})
            elif not _is_family(df[column], family):
                problems.append(
                    {"column": column, "problem": f"is {df[column].dtype}, expected {family}"}
                )
        return {"problems": problems}
    if r.kind == "unique":
        return {"key": hashing.rows(df, r.params["columns"])}
    if r.kind == "row_count":
        return {}
    if r.kind == "freshness":
        times = _times(df[r.params["column"]])
        newest = times.max()
        return {"newest": None if pd.isna(newest) else newest.isoformat()}
    try:
        bad = _failing(r, df)
    except StageInputError as exc:
        return {"failing": len(df), "examples": [], "error": str(exc)}
    where = np.flatnonzero(bad)
    return {
        "failing": len(where),
        "examples": [
            {"row": int(i), "values": {c: _plain(df[c].iloc[i]) for c in r.columns}}
            for i in where[: cfg.examples]
        ],
    }


def _failing(r: Rule, df: pd.DataFrame) -> np.ndarray:
    if r.kind == "not_null":
        return df[r.params["column"]].isna().to_numpy()
    if r.kind == "expression":
        assert r.expression is not None
        return ~r.expression.evaluate(df)
    values = df[r.params["column"]]
    present = values.notna().to_numpy()
    if r.kind == "range":
        bad = np.zeros(len(df), dtype=bool)
        for bound, op in (("min", np.less), ("max", np.greater)):
            limit = r.params.get(bound)
            if limit is None:
                continue
            if isinstance(limit, str) or isinstance(values.dtype, pd.DatetimeTZDtype):
                limit = _now(str(limit)) if isinstance(limit, str) else limit
            try:
                bad |= np.asarray(op(values, limit), dtype=bool) & present
            except TypeError as exc:
                raise StageConfigError(
                    f"{NAME}: rule {r.name!r}: cannot compare {values.dtype} with {limit!r}"
                ) from exc
        return bad
    if r.kind == "allowed":
        return present & ~values.isin(list(r.params["values"])).to_numpy()
    text = pa.array(values.astype("str"), type=pa.large_string(), from_pandas=True)
    matched = pc.match_substring_regex(text, f"^(?:{r.params['pattern']})$")
    return present & ~matched.to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _is_family(values: pd.Series, family: str) -> bool:
    dtype = values.dtype
    api = pd.api.types
    checks = {
        "string": lambda: api.is_string_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype),
        "integer": lambda: api.is_integer_dtype(dtype) and not api.is_bool_dtype(dtype),
        "float": lambda: api.is_float_dtype(dtype),
        "number": lambda: api.is_numeric_dtype(dtype) and not api.is_bool_dtype(dtype),
        "datetime": lambda: api.is_datetime64_any_dtype(dtype),
        "bool": lambda: api.is_bool_dtype(dtype),
        "category": lambda: isinstance(dtype, pd.CategoricalDtype),
        "any": lambda: True,
    }
    return bool(checks[family]())


def _times(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")


def _plain(value: Any) -> Any:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, int | float | str | bool):
        return value
    return str(value)


# ---- reduce: the verdict of every rule over the whole table


def reduce(partials: Sequence[dict[str, Any]], cfg: ValidationConfig) -> dict[str, Any]:
    sizes = [int(p["rows"]) for p in partials]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    total = int(offsets[-1])
    results: list[dict[str, Any]] = []
    pending: dict[str, list[np.ndarray]] = {}
    for r in _rules(cfg):
        entries = [p["rules"].get(r.name) for p in partials]
        if not partials or entries[0] is None:
            results.append(_result(r, skipped="columns not in the data"))
            continue
        if "missing" in entries[0]:
            results.append(
                _result(r, failing=1, detail=f"column {entries[0]['missing']!r} is missing")
            )
            continue
        if r.kind == "columns":
            problems = entries[0]["problems"]
            results.append(_result(r, failing=len(problems), examples=problems[: cfg.examples]))
        elif r.kind == "unique":
            dup = pd.Series(joined([e["key"] for e in entries])).duplicated(keep="first")
            where = np.flatnonzero(dup.to_numpy())
            results.append(_result(r, failing=len(where)))
            chosen = where[: cfg.examples]
            pending[r.name] = [
                chosen[(chosen >= a) & (chosen < b)] - a for a, b in itertools.pairwise(offsets)
            ]
        elif r.kind == "row_count":
            low, high = r.params.get("min"), r.params.get("max")
            bad = (low is not None and total < low) or (high is not None and total > high)
            results.append(_result(r, failing=int(bad), detail=f"{total} rows"))
        elif r.kind == "freshness":
            stamps = [pd.Timestamp(e["newest"]) for e in entries if e["newest"] is not None]
            newest = max(stamps) if stamps else None
            now = _now(cfg.now) if cfg.now else pd.Timestamp(datetime.now(UTC))
            age = None if newest is None else now - newest
            bad = age is None or age > _duration(r.params["max_age"])
            detail = "no times" if newest is None else f"newest {newest.isoformat()}, age {age}"
            results.append(_result(r, failing=int(bad), detail=detail))
        else:
            examples = [
                {**ex, "row": int(ex["row"] + offsets[i])}
                for i, e in enumerate(entries)
                for ex in e["examples"]
            ][: cfg.examples]
            failing = sum(int(e["failing"]) for e in entries)
            # a rule that cannot run on one partition cannot run on the table: fail every row,
            # whichever partition hit it, as the whole-table call does
            error = next((e["error"] for e in entries if "error" in e), None)
            if error is not None:
                failing, examples = total, []
            results.append(_result(r, failing=failing, examples=examples, detail=error))
    return {"rows": total, "results": results, "pending": pending, "offsets": offsets}


def _result(
    r: Rule,
    *,
    failing: int = 0,
    examples: list[Any] | None = None,
    detail: str | None = None,
    skipped: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rule": r.name,
        "kind": r.kind,
        "severity": r.severity,
        "passed": failing == 0,
        "failing": failing,
        "examples": examples or [],
    }
    if detail:
        out["detail"] = detail
    if skipped:
        out["skipped"] = skipped
    return out


# ---- apply: rows pass through; the partition names its example duplicates


def apply(
    df: pd.DataFrame, cfg: ValidationConfig, stats: dict[str, Any], index: int
) -> tuple[pd.DataFrame, Report]:
    examples: dict[str, list[dict[str, Any]]] = {}
    offset = int(stats["offsets"][index])
    for r in _rules(cfg):
        rows = stats["pending"].get(r.name)
        if rows is None:
            continue
        examples[r.name] = [
            {
                "row": int(i + offset),
                "values": {c: _plain(df[c].iloc[int(i)]) for c in r.params["columns"]},
            }
            for i in rows[index]
        ]
    return df, {"examples": examples}


def report(stats: dict[str, Any], parts: Sequence[Report], cfg: ValidationConfig) -> Report:
    results = [dict(r) for r in stats["results"]]
    for result in results:
        found = [ex for p in parts for ex in p["examples"].get(result["rule"], [])]
        if found:
            result["examples"] = found[: cfg.examples]
    failed = [r for r in results if not r["passed"] and r["severity"] == "error"]
    out = {
        "rows": stats["rows"],
        "passed": not failed,
        "errors": len(failed),
        "warnings": sum(1 for r in results if not r["passed"] and r["severity"] == "warning"),
        "rules": results,
    }
    if failed:
        names = ", ".join(f"{r['rule']} ({r['failing']} failing)" for r in failed)
        raise StageRuleError(f"{NAME}: rule failed: {names}", out)
    return out


def data_validation(
    df: pd.DataFrame, config: Mapping[str, Any] | ValidationConfig | None = None
) -> tuple[pd.DataFrame, Report]:
    """Check `df` against the rules; raises `StageRuleError` when an ``error`` rule fails."""
    cfg = config if isinstance(config, ValidationConfig) else parse(config)
    return run_whole_by_parts(STAGE, df, cfg)


STAGE: Final = Stage(
    name=NAME,
    func=data_validation,
    partitioning=Partitioning.GLOBAL_STATS,
    parse=parse,
    map=map_partition,
    reduce=reduce,
    apply=apply,
    report=report,
    description="declarative rules with severities; a failed error rule fails the stage",
)
