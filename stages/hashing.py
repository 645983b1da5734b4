"""64-bit hashes of values and rows that do not depend on how the table is partitioned.

A value hashes the same in every partition and whatever else its column holds, so hashes from
separate partitions can be compared in a reduce (duplicates, unique keys, groups).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd

from stages import coerce

MIX: Final = np.uint64(0x100000001B3)
NULL_HASH: Final = np.uint64(0x9E3779B97F4A7C15)
_CHUNK: Final = 262_144


def rows(df: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """64-bit row hashes over `columns`; a value hashes the same in every partition."""
    acc = np.zeros(len(df), dtype=np.uint64)
    for name in columns:
        acc = (acc * MIX) ^ column(df[name])
    return acc


def column(values: pd.Series) -> np.ndarray:
    if isinstance(values.dtype, pd.CategoricalDtype) or not coerce.is_text(values):
        return pd.util.hash_pandas_object(values, index=False).to_numpy()
    # factorising first pays off only for repetitive text; the hashes are equal either way
    probe = values.iloc[:2000]
    categorize = probe.nunique() < len(probe) // 4
    parts = [
        pd.util.hash_pandas_object(
            values.iloc[a : a + _CHUNK], index=False, categorize=categorize
        ).to_numpy()
        for a in range(0, len(values), _CHUNK)
    ]
    hashed = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    # the two ways hash a missing value differently: give it one hash
    hashed[values.isna().to_numpy()] = NULL_HASH
    return hashed
