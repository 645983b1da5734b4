"""A small table becomes the frame `to_pandas` makes of it, by the fast path or not."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from store import smallframes
from store.artifacts import _to_pandas, to_frame

NAMES = st.text(min_size=1, max_size=6).filter(lambda n: not n.startswith("__"))
ROWS = st.integers(0, 12)


@st.composite
def frames(draw) -> pd.DataFrame:
    rows = draw(ROWS)
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    columns = {}
    for name in names:
        kind = draw(st.sampled_from(["int", "float", "bool", "str", "Int64", "object", "ts"]))
        nulls = draw(st.booleans())

        def value(elements, nulls=nulls):
            return draw(st.lists(st.one_of(elements, st.none()) if nulls else elements,
                                 min_size=rows, max_size=rows))  # fmt: skip

        if kind == "int":
            columns[name] = pd.Series(
                value(st.integers(-(2**40), 2**40)), dtype="float64" if nulls else "int64"
            )
        elif kind == "float":
            columns[name] = pd.Series(value(st.floats(allow_nan=False)), dtype="float64")
        elif kind == "bool":
            columns[name] = pd.Series(value(st.booleans()), dtype="object" if nulls else "bool")
        elif kind == "str":
            columns[name] = pd.Series(value(st.text(max_size=4)), dtype="str")
        elif kind == "Int64":
            columns[name] = pd.Series(value(st.integers(-100, 100)), dtype="Int64")
        elif kind == "object":
            columns[name] = pd.Series(value(st.text(max_size=3)), dtype="object")
        else:
            columns[name] = pd.Series(pd.to_datetime(value(st.integers(0, 2**31)), unit="s"))
    return pd.DataFrame(columns, index=pd.RangeIndex(rows))


def _tables(df: pd.DataFrame, how: str, tmp_path) -> list[pa.Table]:
    """Three fresh tables of the same frame (a conversion may free a table's buffers)."""
    if how == "pandas":
        return [pa.Table.from_pandas(df, preserve_index=False) for _ in range(3)]
    if how == "bare":  # no pandas metadata, as from a parquet file another tool wrote
        return [pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
                for _ in range(3)]  # fmt: skip
    path = tmp_path / "f.parquet"
    df.to_parquet(path, index=False, row_group_size=4)
    return [pq.read_table(path) for _ in range(3)]


@settings(max_examples=150, deadline=None)
@given(df=frames(), how=st.sampled_from(["pandas", "bare", "parquet"]))
def test_a_small_table_gives_the_frame_to_pandas_gives(df, how, tmp_path_factory):
    smallframes._judged.clear()
    first, second, reference = _tables(df, how, tmp_path_factory.mktemp("t"))
    expected = _to_pandas(reference)
    judged = to_frame(first)  # the first of its schema: both ways, compared
    again = to_frame(second)  # the fast path, if the schema earned it
    for got in (judged, again):
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        assert got.columns.dtype == expected.columns.dtype
        assert list(got.dtypes) == list(expected.dtypes)


def test_tables_of_one_schema_with_other_pandas_metadata_are_judged_apart():
    # given an Int64 column and the same arrow schema without metadata (int64 to pandas)
    smallframes._judged.clear()
    df = pd.DataFrame({"x": pd.Series([1, 2], dtype="Int64")})
    bare = pa.table({"x": pa.array([1, 2], pa.int64())})
    assert to_frame(bare.slice(0)).x.dtype == "int64"
    assert to_frame(bare.slice(0)).x.dtype == "int64"  # the fast path
    # when the table says (in its pandas metadata) the column was Int64, it is Int64 again
    assert to_frame(pa.Table.from_pandas(df, preserve_index=False)).x.dtype == "Int64"
    assert to_frame(pa.Table.from_pandas(df, preserve_index=False)).x.dtype == "Int64"


def test_a_fast_frame_is_its_own():
    # given two frames of one schema by the fast path
    smallframes._judged.clear()
    to_frame(pa.table({"x": [1, 2]}))
    a, b = to_frame(pa.table({"x": [1, 2]})), to_frame(pa.table({"x": [3, 4]}))
    # when one is changed, in its values and its columns' name, the other is not
    a.loc[0, "x"] = 9
    a.columns.name = "renamed"
    assert b.columns.name is None
    assert list(b.x) == [3, 4]
    assert list(to_frame(pa.table({"x": [5, 6]})).x) == [5, 6]
