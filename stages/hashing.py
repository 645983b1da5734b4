"""64-bit hashes of values and rows that do not depend on how the table is partitioned.

A value hashes the same in every partition and whatever else its column holds, so hashes from
separate partitions can be compared in a reduce (duplicates, unique keys, groups). In an object
column each value is hashed with its type, so ``1``, ``1.0``, ``True`` and ``"1"`` differ.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from stages.errors import StageInputError

MIX: Final = np.uint64(0x100000001B3)
NULL_HASH: Final = np.uint64(0x9E3779B97F4A7C15)
_CHUNK: Final = 262_144
_TAGGED: Final = np.uint64(0xC2B2AE3D27D4EB4F)  # sets a tagged value apart from the same text


def rows(df: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """64-bit row hashes over `columns`; a value hashes the same in every partition."""
    acc = np.zeros(len(df), dtype=np.uint64)
    for name in columns:
        acc = (acc * MIX) ^ column(df[name])
    return acc


def column(values: pd.Series) -> np.ndarray:
    """One hash per value; a missing value hashes to `NULL_HASH` in a text or object column.

    Raises `StageInputError` naming the column when a cell cannot be hashed (a dict, a list).
    """
    if values.dtype == object:
        return _objects(values)
    if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_string_dtype(
        values.dtype
    ):
        return pd.util.hash_pandas_object(values, index=False).to_numpy()
    return _text(values, values.isna().to_numpy())


def _objects(values: pd.Series) -> np.ndarray:
    missing = values.isna().to_numpy()
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return _text(values, missing)
    # mixed kinds: text hashes as in a string column, anything else as its tagged text
    cells = values.to_numpy()
    text = np.fromiter((isinstance(v, str) for v in cells), dtype=bool, count=len(cells))
    canon = [v if t else _canonical(v, values.name) for v, t in zip(cells, text, strict=True)]
    hashed = _text(pd.Series(canon, dtype=object), missing)
    hashed[~text & ~missing] ^= _TAGGED
    return hashed


def _text(values: pd.Series, missing: np.ndarray) -> np.ndarray:
    # factorising first pays off only for repetitive text; the hashes of present values are
    # equal either way
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
    hashed[missing] = NULL_HASH
    return hashed


def _canonical(value: Any, name: Any) -> str:
    """A non-text value as text tagged with its kind: equal only for equal values of one kind."""
    if isinstance(value, bool | np.bool_):
        return "b" + str(bool(value))
    if isinstance(value, int | np.integer):
        return "i" + str(int(value))
    if isinstance(value, float | np.floating):
        return "f" + repr(float(value) + 0.0)  # -0.0 and 0.0 are one value
    if isinstance(value, bytes):
        return "y" + value.hex()
    if isinstance(value, dt.datetime | np.datetime64):
        stamp = pd.Timestamp(value)  # one instant in two zones is one value
        return "t" + (stamp if stamp.tzinfo is None else stamp.tz_convert("UTC")).isoformat()
    if isinstance(value, dt.date):
        return "d" + value.isoformat()
    if isinstance(value, dt.timedelta | np.timedelta64):
        return "e" + str(pd.Timedelta(value).value)
    if isinstance(value, decimal.Decimal):
        return "n" + str(value)
    if value is None or value is pd.NA or value is pd.NaT:
        return ""  # replaced by NULL_HASH
    try:
        hash(value)
    except TypeError:
        raise StageInputError(
            f"column {name!r} holds a {type(value).__name__} value, which cannot be compared; "
            "allowed: text, numbers, booleans, times and other hashable values"
        ) from None
    return f"o{type(value).__module__}.{type(value).__qualname__}:{value!r}"
