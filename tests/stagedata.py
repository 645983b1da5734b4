"""Small realistic frames for stage tests: generated query history, raw and cleaned."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stages.cleaning import data_cleaning
from stages.sample import SCHEMA, generate


@cache
def raw_pool(rows: int = 80, seed: int = 7) -> pd.DataFrame:
    frame = pd.concat(list(generate(rows, seed=seed)), ignore_index=True)
    # a few rows that share a QUERY_ID with another row but differ in content: key duplicates
    frame.loc[rows - 3 :, "QUERY_ID"] = frame.loc[:2, "QUERY_ID"].to_numpy()
    frame.loc[rows - 3 :, "EXECUTION_TIME"] = frame.loc[rows - 3 :, "EXECUTION_TIME"] + 1
    return frame


@cache
def clean_pool(rows: int = 80, seed: int = 7) -> pd.DataFrame:
    frame, _ = data_cleaning(raw_pool(rows, seed))
    return frame


def pick(pool: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    """Rows of `pool` by position, repeats allowed (exact duplicates anywhere in the table)."""
    return pool.iloc[[r % len(pool) for r in rows]].reset_index(drop=True)


def write_sample(path: Path, rows: int, seed: int, row_group_size: int) -> Path:
    """``rows`` of generated query history as a parquet file of ``row_group_size`` row groups
    (the parts a parallel run splits it into)."""
    frame = pd.concat(list(generate(rows, seed=seed)), ignore_index=True)
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path
