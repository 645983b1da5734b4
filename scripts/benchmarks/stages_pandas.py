"""The baseline: the default four-stage work written as plain, direct pandas calls.

This is what a data engineer would write by hand for Snowflake query history: the same columns,
policies and outputs as porch's stage defaults (the bench checks the outputs agree), with no
partition contract, no reports and no configuration.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TIMES = ["START_TIME", "END_TIME"]
NUMBERS = ["TOTAL_ELAPSED_TIME", "COMPILATION_TIME", "EXECUTION_TIME", "QUEUED_OVERLOAD_TIME",
           "BYTES_SCANNED", "ROWS_PRODUCED", "CREDITS_USED_CLOUD_SERVICES"]  # fmt: skip
CATEGORIES = ["DATABASE_NAME", "SCHEMA_NAME", "QUERY_TYPE", "USER_NAME", "ROLE_NAME",
              "WAREHOUSE_NAME", "WAREHOUSE_SIZE", "EXECUTION_STATUS", "ERROR_CODE"]  # fmt: skip
UPPER = ["DATABASE_NAME", "SCHEMA_NAME", "QUERY_TYPE", "USER_NAME", "ROLE_NAME",
         "WAREHOUSE_NAME", "EXECUTION_STATUS"]  # fmt: skip
RATES = {"X-SMALL": 1.0, "SMALL": 2.0, "MEDIUM": 4.0, "LARGE": 8.0, "X-LARGE": 16.0}


def _to_time(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return s.dt.tz_convert("UTC").dt.as_unit("us")
    text = s.str.strip()
    out = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce").dt.as_unit("us")
    epoch = text.str.fullmatch(r"\d+").fillna(False).to_numpy(dtype=bool)
    if epoch.any():
        out[epoch] = pd.to_datetime(text[epoch].astype("int64"), unit="s", utc=True).dt.as_unit(
            "us"
        )
    return out


def clean(df: pd.DataFrame) -> pd.DataFrame:
    out = df.assign(**{c: _to_time(df[c]) for c in TIMES})
    out = out.assign(
        **{c: pd.to_numeric(out[c], errors="coerce").astype("float64") for c in NUMBERS}
    )
    text = [c for c in out.columns if out[c].dtype == "str"]
    stripped = {c: out[c].str.strip() for c in text}
    out = out.assign(**{c: s.mask(s == "") for c, s in stripped.items()})
    out = out.assign(**{c: out[c].str.upper() for c in UPPER})
    out = out.assign(**{c: out[c].mask(out[c] < 0) for c in NUMBERS})
    out["END_TIME"] = out["END_TIME"].mask(out["END_TIME"] < out["START_TIME"])
    out = out.dropna(subset=["QUERY_ID", "START_TIME"])
    out = out.drop_duplicates().drop_duplicates(subset=["QUERY_ID"]).reset_index(drop=True)
    out = out.fillna({"WAREHOUSE_NAME": "UNKNOWN", "USER_NAME": "UNKNOWN"})
    medians = out[["BYTES_SCANNED", "ROWS_PRODUCED", "TOTAL_ELAPSED_TIME"]].median()
    out = out.fillna(medians.to_dict())
    out["END_TIME_MISSING"] = out["END_TIME"].isna()
    logs = np.log1p(out["EXECUTION_TIME"].dropna().clip(lower=0))
    q1, q3 = logs.quantile([0.25, 0.75])
    hi = np.expm1(q3 + 3 * (q3 - q1))
    lo = q1 - 3 * (q3 - q1)
    lo = np.expm1(lo) if lo > 0 else -np.inf
    out["EXECUTION_TIME_OUTLIER"] = (out["EXECUTION_TIME"] < lo) | (out["EXECUTION_TIME"] > hi)
    return out.assign(
        **{
            c: out[c].astype(pd.CategoricalDtype(sorted(out[c].dropna().unique())))
            for c in CATEGORIES
        }
    )


def _label(value: object) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in str(value)).strip("_").upper()


def features(df: pd.DataFrame) -> pd.DataFrame:
    t = df["START_TIME"]
    out = df.assign(
        START_TIME_HOUR=t.dt.hour,
        START_TIME_WEEKDAY=t.dt.day_of_week,
        START_TIME_IS_WEEKEND=(t.dt.day_of_week >= 5) & t.notna(),
        START_TIME_MONTH=t.dt.month,
        START_TIME_IS_BUSINESS_HOURS=(t.dt.day_of_week < 5) & (t.dt.hour >= 9) & (t.dt.hour < 18),
        DURATION_S=(df["END_TIME"] - t).dt.total_seconds(),
        BYTES_PER_MS=df["BYTES_SCANNED"] / df["EXECUTION_TIME"].where(df["EXECUTION_TIME"] != 0),
        QUEUED_SHARE=df["QUEUED_OVERLOAD_TIME"]
        / df["TOTAL_ELAPSED_TIME"].where(df["TOTAL_ELAPSED_TIME"] != 0),
        COMPILE_SHARE=df["COMPILATION_TIME"]
        / df["TOTAL_ELAPSED_TIME"].where(df["TOTAL_ELAPSED_TIME"] != 0),
        LOG_BYTES_SCANNED=np.log1p(df["BYTES_SCANNED"].clip(lower=0)),
        LOG_EXECUTION_TIME=np.log1p(df["EXECUTION_TIME"].clip(lower=0)),
        LOG_ROWS_PRODUCED=np.log1p(df["ROWS_PRODUCED"].clip(lower=0)),
    )
    ordered = df.sort_values("START_TIME", kind="stable")
    for group in ("USER_NAME", "WAREHOUSE_NAME"):
        gap = ordered.groupby(group, observed=True)["START_TIME"].diff().dt.total_seconds()
        out[f"SECONDS_SINCE_PREVIOUS_BY_{group}"] = gap
    by_wh = ordered.sort_values("WAREHOUSE_NAME", kind="stable")
    roll = by_wh.groupby("WAREHOUSE_NAME", observed=True)["EXECUTION_TIME"].rolling(
        20, min_periods=1
    )
    out["EXECUTION_TIME_ROLLING_MEAN_20_BY_WAREHOUSE_NAME"] = roll.mean().droplevel(0)
    out["EXECUTION_TIME_ROLLING_MAX_20_BY_WAREHOUSE_NAME"] = roll.max().droplevel(0)
    for column in ("USER_NAME", "WAREHOUSE_NAME", "QUERY_TYPE"):
        share = df[column].value_counts() / len(df)
        out[f"{column}_FREQUENCY"] = df[column].map(share).astype("float64")
    for column in ("WAREHOUSE_SIZE", "QUERY_TYPE", "EXECUTION_STATUS"):
        dummies = pd.get_dummies(df[column].astype("str").where(df[column].notna()))
        dummies = dummies[sorted(dummies.columns, key=str)]
        out = out.join(dummies.rename(columns=lambda v, c=column: f"{c}_IS_{_label(v)}"))
    return out


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    rate = df["WAREHOUSE_SIZE"].astype("str").str.upper().map(RATES).astype("float64")
    frame = df.assign(
        CREDITS_COMPUTE_EST=df["EXECUTION_TIME"] / 3.6e6 * rate,
        BUCKET=df["START_TIME"].dt.floor("D"),
        FAILED=(df["EXECUTION_STATUS"].astype("str") == "FAIL"),
    )
    results = []
    for name, key in (("warehouse_day", "WAREHOUSE_NAME"), ("user_day", "USER_NAME")):
        g = frame.groupby([key, "BUCKET"], observed=True, dropna=False)
        out = g.agg(
            QUERIES=("QUERY_ID", "size"),
            FAILED_QUERIES=("FAILED", "sum"),
            TOTAL_ELAPSED_MS=("TOTAL_ELAPSED_TIME", "sum"),
            BYTES_SCANNED=("BYTES_SCANNED", "sum"),
            CREDITS_CLOUD_SERVICES=("CREDITS_USED_CLOUD_SERVICES", "sum"),
            CREDITS_COMPUTE_EST=("CREDITS_COMPUTE_EST", "sum"),
        )
        out.insert(3, "P95_ELAPSED_MS", g["TOTAL_ELAPSED_TIME"].quantile(0.95))
        out = out.reset_index()
        out.insert(0, "GROUPING", name)
        results.append(out)
    result = pd.concat(results, ignore_index=True)
    cols = ["GROUPING", "WAREHOUSE_NAME", "USER_NAME", "BUCKET", "QUERIES", "FAILED_QUERIES",
            "TOTAL_ELAPSED_MS", "P95_ELAPSED_MS", "BYTES_SCANNED", "CREDITS_CLOUD_SERVICES",
            "CREDITS_COMPUTE_EST"]  # fmt: skip
    return result[cols]


def validate(df: pd.DataFrame) -> dict[str, int]:
    """The default rules that apply to `df`'s columns: failing counts, raising on errors."""
    failing: dict[str, int] = {"has_rows": int(len(df) < 1)}
    has = set(df.columns)
    if "QUERY_ID" in has:
        failing["query_id_present"] = int(df["QUERY_ID"].isna().sum())
        failing["query_id_unique"] = int(df["QUERY_ID"].duplicated().sum())
        ok = df["QUERY_ID"].str.fullmatch(r"[0-9a-f]+(-[0-9a-f]+)*")
        failing["query_id_format"] = int((ok == False).sum())  # noqa: E712
    if "START_TIME" in has:
        failing["start_time_present"] = int(df["START_TIME"].isna().sum())
    for name, column, low in (("elapsed_not_negative", "TOTAL_ELAPSED_TIME", 0),
                              ("bytes_not_negative", "BYTES_SCANNED", 0),
                              ("queries_positive", "QUERIES", 1),
                              ("credits_not_negative", "CREDITS_COMPUTE_EST", 0)):  # fmt: skip
        if column in has:
            failing[name] = int((df[column] < low).sum())
    if "EXECUTION_STATUS" in has:
        status = df["EXECUTION_STATUS"]
        failing["status_known"] = int(
            (status.notna() & ~status.isin(["SUCCESS", "FAIL", "INCIDENT"])).sum()
        )
    if {"START_TIME", "END_TIME"} <= has:
        failing["end_not_before_start"] = int((df["END_TIME"] < df["START_TIME"]).sum())
    if {"FAILED_QUERIES", "QUERIES"} <= has:
        failing["failed_within_queries"] = int((df["FAILED_QUERIES"] > df["QUERIES"]).sum())
    errors = [k for k in ("has_rows", "query_id_present", "query_id_unique", "start_time_present",
                          "elapsed_not_negative", "bytes_not_negative", "queries_positive",
                          "credits_not_negative", "failed_within_queries") if failing.get(k)]  # fmt: skip
    if errors:
        raise ValueError(f"validation failed: {errors}")
    return failing


def chain(df: pd.DataFrame) -> pd.DataFrame:
    out = aggregate(features(clean(df)))
    validate(out)
    return out
