"""Small realistic frames for stage tests: generated query history, raw and cleaned."""

from __future__ import annotations

from functools import cache

import pandas as pd

from stages.cleaning import data_cleaning
from stages.sample import generate


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
