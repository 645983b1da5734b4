"""Realistic, dirty Snowflake ``ACCOUNT_USAGE.QUERY_HISTORY`` data for demos, tests and benchmarks.

The shape is what a user exports: upper-case columns, start times as strings in the formats
exports mix (some unparseable), end times as UTC timestamps, rows produced as text. Load has a
daily and a weekly rhythm, runtimes are heavy-tailed (log-normal), warehouses differ in size and
load. Dirt is injected at the rates in `DIRT_RATES`, so a cleaning stage's report can be checked
against them. Output depends only on ``rows`` and ``seed``: rows are made in fixed blocks of
`BLOCK_ROWS`, each from its own seeded generator, and written one parquet row group per block.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stages.errors import StageConfigError

BLOCK_ROWS: Final = 100_000
DEFAULT_START: Final = datetime(2026, 10, 1, tzinfo=UTC)
DEFAULT_DAYS: Final = 28

COLUMNS: Final = (
    "QUERY_ID", "QUERY_TEXT", "DATABASE_NAME", "SCHEMA_NAME", "QUERY_TYPE", "SESSION_ID",
    "USER_NAME", "ROLE_NAME", "WAREHOUSE_NAME", "WAREHOUSE_SIZE", "EXECUTION_STATUS",
    "ERROR_CODE", "ERROR_MESSAGE", "START_TIME", "END_TIME", "TOTAL_ELAPSED_TIME",
    "COMPILATION_TIME", "EXECUTION_TIME", "QUEUED_OVERLOAD_TIME", "BYTES_SCANNED",
    "ROWS_PRODUCED", "CREDITS_USED_CLOUD_SERVICES",
)  # fmt: skip

#: Share of rows given each kind of dirt (each drawn independently).
DIRT_RATES: Final[dict[str, float]] = {
    "null_warehouse_name": 0.01,
    "null_user_name": 0.005,
    "null_bytes_scanned": 0.01,
    "exact_duplicate": 0.005,
    "duplicate_query_id": 0.003,
    "unparseable_start_time": 0.002,
    "epoch_start_time": 0.01,
    "iso_start_time": 0.05,
    "rows_produced_not_a_number": 0.002,
    "negative_elapsed_time": 0.002,
    "negative_bytes_scanned": 0.001,
    "end_before_start": 0.001,
    "execution_time_outlier": 0.001,
    "messy_warehouse_name": 0.01,
}

# name, size, credits per hour, share of queries
WAREHOUSES: Final = (
    ("COMPUTE_WH", "X-Small", 1, 0.30),
    ("ETL_WH", "Large", 8, 0.20),
    ("BI_WH", "Medium", 4, 0.25),
    ("DS_WH", "X-Large", 16, 0.10),
    ("ADHOC_WH", "Small", 2, 0.15),
)
QUERY_TYPES: Final = (
    ("SELECT", 0.62), ("INSERT", 0.09), ("MERGE", 0.05), ("CREATE_TABLE_AS_SELECT", 0.04),
    ("UPDATE", 0.04), ("DELETE", 0.02), ("COPY", 0.05), ("SHOW", 0.05), ("DESCRIBE", 0.04),
)  # fmt: skip
DATABASES: Final = ("ANALYTICS", "RAW", "MARTS", "SANDBOX")
SCHEMAS: Final = ("PUBLIC", "STAGING", "CORE", "FINANCE", "MARKETING")
ROLES: Final = ("SYSADMIN", "ANALYST", "TRANSFORMER", "LOADER", "DATA_SCIENTIST")
ERRORS: Final = (
    ("000604", "SQL execution was cancelled by the client."),
    ("000630", "Statement reached its statement or warehouse timeout of 3,600 second(s)."),
    ("002003", "SQL compilation error: Object does not exist or not authorized."),
    ("100038", "Numeric value is not recognized"),
    ("090105", "Cannot perform SELECT. This session does not have a current database."),
)
TEXTS: Final = {
    "SELECT": "SELECT * FROM {db}.{schema}.EVENTS WHERE EVENT_DATE >= DATEADD(day, -7, CURRENT_DATE())",
    "INSERT": "INSERT INTO {db}.{schema}.DAILY_AGG SELECT * FROM {db}.{schema}.STG_DAILY",
    "MERGE": "MERGE INTO {db}.{schema}.CUSTOMERS t USING {db}.STAGING.CUSTOMERS s ON t.ID = s.ID",
    "CREATE_TABLE_AS_SELECT": "CREATE OR REPLACE TABLE {db}.{schema}.TMP AS SELECT * FROM {db}.{schema}.ORDERS",
    "UPDATE": "UPDATE {db}.{schema}.ORDERS SET STATUS = 'CLOSED' WHERE CLOSED_AT IS NOT NULL",
    "DELETE": "DELETE FROM {db}.{schema}.EVENTS WHERE EVENT_DATE < '2025-01-01'",
    "COPY": "COPY INTO {db}.RAW.EVENTS FROM @{db}.RAW.S3_STAGE FILE_FORMAT = (TYPE = PARQUET)",
    "SHOW": "SHOW TABLES IN SCHEMA {db}.{schema}",
    "DESCRIBE": "DESCRIBE TABLE {db}.{schema}.ORDERS",
}
# How much each hour of the day and each weekday weighs in the load (Mon=0).
HOUR_WEIGHTS: Final = np.array(
    [3, 2, 6, 5, 3, 2, 3, 5, 9, 12, 13, 12, 10, 12, 13, 12, 11, 9, 6, 5, 4, 4, 3, 3], dtype=float
)
DAY_WEIGHTS: Final = np.array([1.0, 1.05, 1.05, 1.0, 0.9, 0.3, 0.25])


def generate(
    rows: int,
    *,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    days: int = DEFAULT_DAYS,
) -> Iterator[pd.DataFrame]:
    """Yield the sample in blocks of at most `BLOCK_ROWS` rows; never all of it at once."""
    if rows < 0:
        raise StageConfigError(f"sample: rows must be >= 0, got {rows}")
    if days < 1:
        raise StageConfigError(f"sample: days must be >= 1, got {days}")
    if start.tzinfo is None:
        raise StageConfigError("sample: start must be timezone-aware")
    made = 0
    block = 0
    while made < rows:
        size = min(BLOCK_ROWS, rows - made)
        yield _block(size, np.random.default_rng([seed, block]), start, days, made)
        made += size
        block += 1


def write_sample(
    path: str | Path,
    rows: int,
    *,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    days: int = DEFAULT_DAYS,
) -> Path:
    """Write the sample as parquet, one row group per block, through a temp file and rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    writer: pq.ParquetWriter | None = None
    try:
        for frame in generate(rows, seed=seed, start=start, days=days):
            table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, SCHEMA, compression="snappy")
            writer.write_table(table, row_group_size=BLOCK_ROWS)
        if writer is None:
            pq.write_table(SCHEMA.empty_table(), tmp)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(target)
    return target


SCHEMA: Final = pa.schema(
    [
        ("QUERY_ID", pa.string()), ("QUERY_TEXT", pa.string()), ("DATABASE_NAME", pa.string()),
        ("SCHEMA_NAME", pa.string()), ("QUERY_TYPE", pa.string()), ("SESSION_ID", pa.int64()),
        ("USER_NAME", pa.string()), ("ROLE_NAME", pa.string()), ("WAREHOUSE_NAME", pa.string()),
        ("WAREHOUSE_SIZE", pa.string()), ("EXECUTION_STATUS", pa.string()),
        ("ERROR_CODE", pa.string()), ("ERROR_MESSAGE", pa.string()), ("START_TIME", pa.string()),
        ("END_TIME", pa.timestamp("us", tz="UTC")), ("TOTAL_ELAPSED_TIME", pa.int64()),
        ("COMPILATION_TIME", pa.int64()), ("EXECUTION_TIME", pa.int64()),
        ("QUEUED_OVERLOAD_TIME", pa.int64()), ("BYTES_SCANNED", pa.float64()),
        ("ROWS_PRODUCED", pa.string()), ("CREDITS_USED_CLOUD_SERVICES", pa.float64()),
    ]
)  # fmt: skip


def _choice(
    rng: np.random.Generator, options: tuple, weights: np.ndarray | None, size: int
) -> np.ndarray:
    return np.asarray(options, dtype=object)[rng.choice(len(options), size=size, p=weights)]


def _start_times(rng: np.random.Generator, size: int, start: datetime, days: int) -> np.ndarray:
    """Start times in ns since the epoch, with daily and weekly seasonality."""
    day_index = np.arange(days)
    weekday = (start.weekday() + day_index) % 7
    day_p = DAY_WEIGHTS[weekday] / DAY_WEIGHTS[weekday].sum()
    day = rng.choice(days, size=size, p=day_p)
    hour = rng.choice(24, size=size, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    within = rng.integers(0, 3_600_000_000_000, size=size)
    base = int(pd.Timestamp(start).value)
    return base + day * 86_400_000_000_000 + hour * 3_600_000_000_000 + within


def _block(
    size: int, rng: np.random.Generator, start: datetime, days: int, offset: int
) -> pd.DataFrame:
    wh_share = np.array([w[3] for w in WAREHOUSES])
    wh = rng.choice(len(WAREHOUSES), size=size, p=wh_share / wh_share.sum())
    wh_names = np.array([w[0] for w in WAREHOUSES], dtype=object)[wh]
    wh_sizes = np.array([w[1] for w in WAREHOUSES], dtype=object)[wh]
    wh_credits = np.array([w[2] for w in WAREHOUSES], dtype=float)[wh]
    qt_share = np.array([q[1] for q in QUERY_TYPES])
    qtype = _choice(rng, tuple(q[0] for q in QUERY_TYPES), qt_share / qt_share.sum(), size)
    db = _choice(rng, DATABASES, None, size)
    schema = _choice(rng, SCHEMAS, None, size)
    users = rng.integers(1, 60, size=size)
    user = np.char.add("USER_", users.astype(str)).astype(object)
    role = np.asarray(ROLES, dtype=object)[users % len(ROLES)]
    # heavy tails: log-normal runtimes; bigger warehouses take bigger jobs
    execution_ms = np.round(
        rng.lognormal(mean=6.5 + np.log1p(wh_credits) * 0.4, sigma=1.6, size=size)
    )
    compilation_ms = np.round(rng.lognormal(mean=4.5, sigma=0.7, size=size))
    busy = (wh == 1) | (wh == 2)
    queued_ms = np.where(busy & (rng.random(size) < 0.08), np.round(rng.exponential(4000, size)), 0)
    failed = rng.random(size) < 0.03
    error = rng.integers(0, len(ERRORS), size=size)
    total_ms = (execution_ms + compilation_ms + queued_ms).astype(np.int64)
    start_ns = _start_times(rng, size, start, days)
    end_ns = start_ns + total_ms * 1_000_000
    bytes_scanned = np.round(rng.lognormal(mean=17, sigma=2.5, size=size) * (wh_credits / 4 + 0.5))
    bytes_scanned = np.where(np.isin(qtype, ["SHOW", "DESCRIBE"]), 0.0, bytes_scanned)
    rows_produced = np.round(rng.lognormal(mean=6, sigma=2.5, size=size)).astype(np.int64)
    rows_produced = np.where(failed, 0, rows_produced)
    credits_cs = np.round(compilation_ms / 3_600_000 * 4.4 + rng.random(size) * 1e-5, 9)

    start_text = _export_time_text(start_ns)
    frame = pd.DataFrame(
        {
            "QUERY_ID": [
                f"01b{offset + i:012x}-0000-{(offset + i) * 7919 % 65536:04x}" for i in range(size)
            ],
            "QUERY_TEXT": _query_texts(qtype, db, schema),
            "DATABASE_NAME": db,
            "SCHEMA_NAME": schema,
            "QUERY_TYPE": qtype,
            "SESSION_ID": (users * 1_000_003 + rng.integers(0, 40, size=size)).astype(np.int64),
            "USER_NAME": user,
            "ROLE_NAME": role,
            "WAREHOUSE_NAME": wh_names,
            "WAREHOUSE_SIZE": wh_sizes,
            "EXECUTION_STATUS": np.where(failed, "FAIL", "SUCCESS").astype(object),
            "ERROR_CODE": np.where(
                failed, np.asarray([e[0] for e in ERRORS], dtype=object)[error], None
            ),
            "ERROR_MESSAGE": np.where(
                failed, np.asarray([e[1] for e in ERRORS], dtype=object)[error], None
            ),
            "START_TIME": start_text,
            "END_TIME": pd.to_datetime(end_ns, utc=True).as_unit("us"),
            "TOTAL_ELAPSED_TIME": total_ms,
            "COMPILATION_TIME": compilation_ms.astype(np.int64),
            "EXECUTION_TIME": execution_ms.astype(np.int64),
            "QUEUED_OVERLOAD_TIME": queued_ms.astype(np.int64),
            "BYTES_SCANNED": bytes_scanned,
            "ROWS_PRODUCED": rows_produced.astype(str).astype(object),
            "CREDITS_USED_CLOUD_SERVICES": credits_cs,
        }
    )
    return _add_dirt(frame, rng, start_ns)


def _export_time_text(ns: np.ndarray) -> np.ndarray:
    """Times as Snowflake exports write them: ``2026-10-27 03:19:39.224082 +0000``."""
    iso = np.datetime_as_string(ns.astype("datetime64[ns]"), unit="us")
    return np.char.add(np.char.replace(iso, "T", " "), " +0000").astype(object)


def _query_texts(qtype: np.ndarray, db: np.ndarray, schema: np.ndarray) -> np.ndarray:
    """Query texts, formatted once per distinct (type, database, schema) and then indexed."""
    key = pd.Series(qtype, dtype=object) + "|" + db + "|" + schema
    codes, uniques = pd.factorize(key)
    texts = [TEXTS[q].format(db=d, schema=s) for q, d, s in (u.split("|") for u in uniques)]
    return np.asarray(texts, dtype=object)[codes]


def _mask(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    return rng.random(size) < DIRT_RATES[kind]


def _add_dirt(frame: pd.DataFrame, rng: np.random.Generator, start_ns: np.ndarray) -> pd.DataFrame:
    size = len(frame)
    frame.loc[_mask(rng, size, "null_warehouse_name"), "WAREHOUSE_NAME"] = None
    frame.loc[_mask(rng, size, "null_user_name"), "USER_NAME"] = None
    frame.loc[_mask(rng, size, "null_bytes_scanned"), "BYTES_SCANNED"] = np.nan
    messy = _mask(rng, size, "messy_warehouse_name") & frame["WAREHOUSE_NAME"].notna().to_numpy()
    frame.loc[messy, "WAREHOUSE_NAME"] = "  " + frame.loc[messy, "WAREHOUSE_NAME"].str.lower() + " "
    iso = _mask(rng, size, "iso_start_time")
    iso_text = np.datetime_as_string(start_ns[iso].astype("datetime64[ns]"), unit="us")
    frame.loc[iso, "START_TIME"] = np.char.add(iso_text, "Z").astype(object)
    epoch = _mask(rng, size, "epoch_start_time") & ~iso
    frame.loc[epoch, "START_TIME"] = (start_ns[epoch] // 1_000_000_000).astype(str)
    bad = _mask(rng, size, "unparseable_start_time")
    frame.loc[bad, "START_TIME"] = rng.choice(
        ["not a date", "2026-13-45 99:00:00", "", "N/A"], size=int(bad.sum())
    )
    frame.loc[_mask(rng, size, "rows_produced_not_a_number"), "ROWS_PRODUCED"] = "N/A"
    neg = _mask(rng, size, "negative_elapsed_time")
    frame.loc[neg, "TOTAL_ELAPSED_TIME"] = -frame.loc[neg, "TOTAL_ELAPSED_TIME"]
    neg_bytes = _mask(rng, size, "negative_bytes_scanned")
    frame.loc[neg_bytes, "BYTES_SCANNED"] = -frame.loc[neg_bytes, "BYTES_SCANNED"].abs() - 1
    backwards = _mask(rng, size, "end_before_start")
    frame.loc[backwards, "END_TIME"] = pd.to_datetime(
        start_ns[backwards] - 60_000_000_000, utc=True
    ).as_unit("us")
    outlier = _mask(rng, size, "execution_time_outlier")
    frame.loc[outlier, "EXECUTION_TIME"] = frame.loc[outlier, "EXECUTION_TIME"] * 1000
    # duplicates replace other rows, so the block keeps its size
    dup_id = np.flatnonzero(_mask(rng, size, "duplicate_query_id"))
    if len(dup_id) and size > 1:
        source = rng.integers(0, size, size=len(dup_id))
        frame.loc[dup_id, "QUERY_ID"] = frame["QUERY_ID"].to_numpy()[source]
    exact = np.flatnonzero(_mask(rng, size, "exact_duplicate"))
    if len(exact) and size > 1:
        source = rng.integers(0, size, size=len(exact))
        frame.iloc[exact] = frame.iloc[source].to_numpy()
    return frame
