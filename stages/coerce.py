"""Value-by-value coercions used by cleaning: column names, UTC timestamps, numbers, strings.

Every function here is row-local: a value's result depends on that value alone, never on its
neighbours (no format inferred from the first row), so a partition gives what the whole does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stages.errors import StageInputError

TIME_UNIT: Final = "us"
TIME_DTYPE: Final = pd.DatetimeTZDtype(unit=TIME_UNIT, tz="UTC")
Case = Literal["upper", "lower", "keep"]

_NOT_WORD = re.compile(r"[^0-9A-Za-z]+")
_DIGITS = r"^[+-]?\d+(\.\d+)?$"
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
# epoch magnitudes: below 1e11 seconds (year 5138), below 1e14 ms, below 1e17 us, else ns
_EPOCH_LIMITS: Final = ((1e11, 1_000_000_000), (1e14, 1_000_000), (1e17, 1_000), (np.inf, 1))


def normal_name(name: object, case: Case) -> str:
    """``" Start Time "`` -> ``START_TIME`` (upper), ``start_time`` (lower); keep leaves it."""
    text = str(name)
    if case == "keep":
        return text
    text = _NOT_WORD.sub("_", text.strip()).strip("_") or "COLUMN"
    return text.upper() if case == "upper" else text.lower()


def normal_names(columns: Iterable[object], case: Case) -> list[str]:
    names = [normal_name(c, case) for c in columns]
    seen: dict[str, object] = {}
    for original, name in zip(columns, names, strict=True):
        if name in seen:
            raise StageInputError(
                f"columns {seen[name]!r} and {original!r} both normalise to {name!r}; "
                "rename one or set column_case = 'keep'"
            )
        seen[name] = original
    return names


def to_utc(values: pd.Series) -> tuple[pd.Series, int]:
    """Coerce to UTC timestamps; returns the series and how many present values did not parse.

    Accepted: ISO 8601 text (with ``T`` or a space, any offset, naive taken as UTC), Snowflake's
    export text (``2026-10-27 03:19:39.224 +0000``), epoch numbers or digit strings in s, ms, us
    or ns (by magnitude), and datetime values, naive (taken as UTC) or aware.
    """
    present = values.notna()
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        out = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        out = values.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
        values.dtype
    ):
        out = _from_epoch(values.astype("float64"))
    elif pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        out = _from_text(values)
    else:
        out = _from_objects(values)
    out = _as_time(out)
    return out, int((present & out.isna()).sum())


def _as_time(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.as_unit(TIME_UNIT)
    return pd.Series(pd.to_datetime(values, utc=True), index=values.index).dt.as_unit(TIME_UNIT)


def _from_epoch(numbers: pd.Series) -> pd.Series:
    ns = np.full(len(numbers), np.nan)
    raw = numbers.to_numpy(dtype="float64", na_value=np.nan)
    magnitude = np.abs(raw)
    lower = 0.0
    for limit, factor in _EPOCH_LIMITS:
        band = (magnitude >= lower) & (magnitude < limit)
        ns[band] = raw[band] * factor
        lower = limit
    ok = np.isfinite(ns) & (np.abs(ns) < 9.2e18)
    as_int = np.where(ok, ns, 0).astype(np.int64)
    out = pd.Series(pd.to_datetime(as_int, utc=True, unit="ns"), index=numbers.index)
    return out.where(ok)


def _from_text(text: pd.Series) -> pd.Series:
    stripped = text.str.strip()
    digits = stripped.str.match(_DIGITS, na=False).to_numpy(dtype=bool)
    out = pd.to_datetime(stripped, format="ISO8601", utc=True, errors="coerce").dt.as_unit(
        TIME_UNIT
    )
    if digits.any():
        epoch = pd.to_numeric(stripped[digits], errors="coerce")
        out[digits] = _from_epoch(epoch).dt.as_unit(TIME_UNIT)
    return out


def _from_objects(values: pd.Series) -> pd.Series:
    out = pd.Series(pd.NaT, index=values.index, dtype=TIME_DTYPE)
    kinds = values.map(_kind)
    for kind, convert in (("text", _from_text), ("number", _from_epoch)):
        mask = (kinds == kind).to_numpy()
        if mask.any():
            part = values[mask]
            part = part.astype("str") if kind == "text" else part.astype("float64")
            out[mask] = convert(part).dt.as_unit(TIME_UNIT)
    mask = (kinds == "time").to_numpy()
    if mask.any():
        out[mask] = [_one_time(v) for v in values[mask]]
    return out


def _kind(value: object) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "other"
    if isinstance(value, int | float | np.integer | np.floating):
        return "number"
    if isinstance(value, datetime | date | np.datetime64):
        return "time"
    return "other"


def _one_time(value: object) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def to_number(values: pd.Series) -> tuple[pd.Series, int]:
    """Coerce to float64; returns the series and how many present values were not numbers.

    Raises `StageInputError` for a time, duration or categorical column: none holds numbers.
    """
    dtype = values.dtype
    timelike = pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(
        dtype
    )
    if timelike or isinstance(dtype, pd.CategoricalDtype):
        raise StageInputError(
            f"column {values.name!r} is {dtype}, which does not convert to numbers "
            "(allowed: numbers, booleans, text)"
        )
    present = values.notna()
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        out = values.astype("float64")
    elif values.dtype != object:
        out = _text_to_number(values)
    else:
        text = values.map(_text_or_number)
        out = pd.to_numeric(text, errors="coerce").astype("float64")
    return out, int((present & out.isna()).sum())


def _text_to_number(values: pd.Series) -> pd.Series:
    """Decimal or scientific notation, surrounding blanks allowed; anything else is missing."""
    text = pc.utf8_trim_whitespace(pa.array(values, type=pa.large_string(), from_pandas=True))
    ok = pc.match_substring_regex(text, _NUMBER)
    numbers = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.large_string())), pa.float64())
    return pd.Series(numbers.to_numpy(zero_copy_only=False), index=values.index, dtype="float64")


def _text_or_number(value: object) -> object:
    if value is None or isinstance(value, int | float | np.integer | np.floating):
        return value
    return str(value).strip()


def is_text(values: pd.Series) -> bool:
    return values.dtype == object or (
        pd.api.types.is_string_dtype(values.dtype)
        and not isinstance(values.dtype, pd.CategoricalDtype)
    )


def trim(values: pd.Series) -> tuple[pd.Series, int, int]:
    """Strip whitespace; blank strings become missing. Returns series, trimmed, blanked."""
    if values.dtype == object:
        values = values.map(lambda v: v if v is None or isinstance(v, str) else str(v))
        values = values.astype("str")
    stripped = values.str.strip()
    present = values.notna()
    trimmed = int((present & (stripped != values)).sum())
    blank = present & (stripped == "")
    blanks = int(blank.sum())
    if blanks:
        stripped = stripped.mask(blank)
    if not trimmed and not blanks:
        return values, 0, 0  # keep the original buffers: no second copy of the text
    return stripped, trimmed, blanks


def recase(values: pd.Series, case: Case) -> tuple[pd.Series, int]:
    if case == "keep":
        return values, 0
    changed = values.str.upper() if case == "upper" else values.str.lower()
    count = int((values.notna() & (changed != values)).sum())
    return (changed if count else values), count
