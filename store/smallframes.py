"""A small table as a pandas frame, without pyarrow's per-table setup.

`pyarrow.Table.to_pandas` spends about 200 µs on any table, however small, rebuilding the
columns' index from the schema's pandas metadata (pandas 3 builds a string-typed index each
time). A no-op task or a small partition pays that once per task. Here a table of at most
`SMALL_ROWS` rows of plain columns (numbers, booleans, strings) is converted column by column
with the columns' index of its schema kept from the first table of that schema: the first is
converted both ways, and its schema takes this path only if the two frames are the same
(values, dtypes, index and columns' index). Column by column, pyarrow converts each column
as it does within a table, so later tables of that schema give what `to_pandas` gives.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import pandas as pd
import pyarrow as pa

SMALL_ROWS: Final = 4096
SCHEMAS_KEPT: Final = 64
# by schema and its metadata (schemas compare equal whatever their metadata says); None: the
# schema's tables take the slow path
_judged: OrderedDict[tuple[pa.Schema, bytes], pd.Index | None] = OrderedDict()


def _plain(kind: pa.DataType) -> bool:
    types = pa.types
    return (
        types.is_integer(kind)
        or types.is_floating(kind)
        or types.is_boolean(kind)
        or types.is_string(kind)
        or types.is_large_string(kind)
    )


def _array(column: pa.ChunkedArray) -> object:
    kind = column.type
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if column.null_count == 0 and column.num_chunks and not text:
        return column.to_numpy()  # numbers and booleans: as to_pandas has them, no copy
    return column.to_pandas().array  # nulls (ints become floats) and strings: its own way


def _build(table: pa.Table, columns: pd.Index) -> pd.DataFrame:
    arrays = [_array(column) for column in table.columns]
    return pd.DataFrame._from_arrays(  # the constructor pyarrow's own path ends in
        arrays, columns=columns.copy(), index=pd.RangeIndex(table.num_rows), verify_integrity=False
    )


def _same(fast: pd.DataFrame, slow: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(fast, slow, check_exact=True, check_flags=True)
    except AssertionError:
        return False
    return fast.columns.dtype == slow.columns.dtype and list(fast.dtypes) == list(slow.dtypes)


def small_frame(table: pa.Table, slow_path: Callable[[pa.Table], pd.DataFrame]) -> pd.DataFrame:
    """The table as ``slow_path(table)`` gives it, faster when it is small and plain."""
    if table.num_rows > SMALL_ROWS or table.num_columns == 0:
        return slow_path(table)
    schema = table.schema
    key = (schema, repr(sorted((schema.metadata or {}).items())).encode())
    if key in _judged:
        _judged.move_to_end(key)
        columns = _judged[key]
        return slow_path(table) if columns is None else _build(table, columns)
    fast = None
    if all(_plain(field.type) for field in schema):
        fast = _build(table, pd.Index(table.column_names))  # first: the slow path may free
    frame = slow_path(table)
    same = fast is not None and isinstance(frame.index, pd.RangeIndex) and _same(fast, frame)
    _judged[key] = frame.columns.copy() if same else None
    if len(_judged) > SCHEMAS_KEPT:
        _judged.popitem(last=False)
    return frame
