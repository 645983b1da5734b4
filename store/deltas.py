"""Delta artifacts: a stage's output written as the columns it added, beside its input's name.

A stage such as ``feature_engineering`` hands back its input with columns added. Writing the
whole frame again would copy every input column to disk once more; a *delta* holds only the
columns the stage made, and its schema metadata names the *base* artifact (the task's input)
that holds the rest, with the base's content hash, its row count and the output's column order.
A reader puts the two back together (`combine`), so every reader sees the whole frame.

A column counts as the input's only when it is the very memory the task read (`kept_columns`):
same values is not enough to be cheap to prove, same memory is. The delta's own hash covers the
base's hash, so verifying a delta and then its base (`store.artifacts.verify`) verifies the
whole frame. The base is named relative to the delta's directory, so an execution that resumes
from this one and links both artifacts into its own directory finds its own copy of the base.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa

KEY: Final = b"porch.delta"
PANDAS: Final = b"pandas"
MAX_DEPTH: Final = 8  # a delta of a delta ... this deep is written whole instead
URL: Final = "s3://"  # a delta and its base on an object store: one bucket, relative keys


@dataclass(frozen=True, slots=True)
class Base:
    """The artifact a task read, which its output may refer to: ``path``, its ``sha256`` as its
    producer recorded it, and the output's ``columns`` that are its, untouched."""

    path: str
    sha256: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Link:
    """What a delta's metadata says: its base (relative to the delta's directory), the base's
    hash, the rows, the output's column order and how many deltas deep it is."""

    base: str
    sha256: str
    rows: int
    columns: tuple[str, ...]
    depth: int

    def base_path(self, delta: str | Path) -> str:
        text = str(delta)
        if text.startswith(URL):  # an object's key: a path of '/'-separated names, no folders
            key = text[len(URL) :]
            return URL + posixpath.normpath(posixpath.join(posixpath.dirname(key), self.base))
        return os.path.normpath(Path(delta).parent / self.base)


def guard(df: pd.DataFrame) -> pd.DataFrame:
    """A view of `df` as read, to tell its untouched columns afterwards: with copy-on-write, a
    stage that writes into `df` copies the columns first, and this view keeps the old ones."""
    return df.copy(deep=False)


def kept_columns(before: pd.DataFrame, after: pd.DataFrame) -> list[str]:
    """The columns of `after` that are `before`'s under the same name: the same memory, dtype
    and length. Empty when either frame's columns are not unique strings."""
    if not (_plain_names(before) and _plain_names(after)) or len(before) != len(after):
        return []
    kept = []
    for name in after.columns:
        if name not in before.columns:
            continue
        old, new = before[name], after[name]
        if old.dtype != new.dtype:
            continue
        where = _memory(old)
        if where is not None and where == _memory(new):
            kept.append(name)
    return kept


def _plain_names(df: pd.DataFrame) -> bool:
    names = list(df.columns)
    return all(type(n) is str for n in names) and len(set(names)) == len(names)


def _memory(values: pd.Series) -> tuple[Any, ...] | None:
    """Where a column's values live (address, shape, strides of each buffer); None when that
    cannot be told, so the column is written."""
    array = values.array
    if isinstance(array, pd.Categorical):
        return ("codes", *_ndarray_place(array.codes))
    if isinstance(array, pd.arrays.DatetimeArray | pd.arrays.TimedeltaArray):
        return ("i8", *_ndarray_place(array.asi8))
    if isinstance(array, pd.arrays.NumpyExtensionArray):
        return ("np", *_ndarray_place(array.to_numpy()))
    arrow = getattr(array, "__arrow_array__", None)
    if arrow is None:
        return None
    chunked = arrow()
    chunks = chunked.chunks if isinstance(chunked, pa.ChunkedArray) else [chunked]
    places: list[Any] = ["arrow", str(chunked.type)]
    for chunk in chunks:
        places.append((chunk.offset, len(chunk)))
        places.extend((b.address, b.size) if b is not None else None for b in chunk.buffers())
    return tuple(places)


def _ndarray_place(values: Any) -> tuple[Any, ...]:
    face = values.__array_interface__
    return (face["data"][0], face["shape"], face["strides"], face["typestr"])


def link_of(schema: pa.Schema) -> Link | None:
    """The delta's link, or None for a whole frame; raises ValueError for a bad one."""
    meta = schema.metadata or {}
    raw = meta.get(KEY)
    if raw is None:
        return None
    try:
        fields = json.loads(raw)
        link = Link(
            base=str(fields["base"]),
            sha256=str(fields["sha256"]),
            rows=int(fields["rows"]),
            columns=tuple(str(c) for c in fields["columns"]),
            depth=int(fields["depth"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"bad delta metadata: {exc}") from None
    if Path(link.base).is_absolute() or link.base.startswith("slice:"):
        raise ValueError(f"bad delta metadata: base {link.base!r} is not a relative path")
    return link


def delta_table(
    df: pd.DataFrame, base: Base, base_schema: pa.Schema, target: Path | str
) -> pa.Table | None:
    """`df` as a delta of `base` (whose schema is `base_schema`), to be written at `target`;
    None when it should be written whole (the base is too many deltas deep, or not in the
    target's bucket)."""
    below = link_of(base_schema)
    depth = 1 + (below.depth if below is not None else 0)
    if depth > MAX_DEPTH:
        return None
    relative = _relative(base.path, str(target))
    if relative is None:
        return None
    kept = set(base.columns)
    new = [c for c in df.columns if c not in kept]
    table = pa.Table.from_pandas(df[new], preserve_index=False)
    link = {
        "base": relative,
        "sha256": base.sha256,
        "rows": len(df),
        "columns": list(df.columns),
        "depth": depth,
    }
    meta = dict(table.schema.metadata or {})
    meta[PANDAS] = _merged_pandas(
        list(df.columns), (base_schema.metadata or {}).get(PANDAS), meta.get(PANDAS)
    )
    meta[KEY] = json.dumps(link).encode()
    return table.replace_schema_metadata(meta)


def _relative(base: str, target: str) -> str | None:
    """``base`` named from ``target``'s folder; None when it cannot be (one is an object, the
    other a file, or they are objects of two buckets)."""
    if base.startswith(URL) != target.startswith(URL):
        return None
    if not target.startswith(URL):
        return os.path.relpath(base, Path(target).parent)
    base_key, target_key = base[len(URL) :], target[len(URL) :]
    if base_key.split("/", 1)[0] != target_key.split("/", 1)[0]:
        return None
    return posixpath.relpath(base_key, posixpath.dirname(target_key))


def _merged_pandas(order: Sequence[str], base: bytes | None, delta: bytes | None) -> bytes:
    """pandas' metadata for the whole frame: the delta's, with each column's entry taken from
    whichever of the two holds the column."""
    mine = json.loads(delta) if delta else {"columns": []}
    theirs = json.loads(base) if base else {"columns": []}
    entries = {e.get("field_name", e.get("name")): e for e in theirs.get("columns", [])}
    entries.update({e.get("field_name", e.get("name")): e for e in mine.get("columns", [])})
    mine["columns"] = [entries[name] for name in order if name in entries]
    return json.dumps(mine).encode()


def combine(link: Link, delta: pa.Table, base: pa.Table, columns: Sequence[str]) -> pa.Table:
    """The frame's `columns` (in the output's order) from the delta and its base, with the
    delta's metadata for pandas (the whole frame's) and without the link."""
    if base.num_rows != link.rows or delta.num_rows not in (link.rows, 0):
        raise ValueError(
            f"delta of {link.rows} rows over a base of {base.num_rows} (it holds {delta.num_rows})"
        )
    arrays, fields = [], []
    for name in columns:
        source = delta if name in delta.column_names else base
        arrays.append(source.column(name))
        fields.append(source.schema.field(name))
    meta = dict(delta.schema.metadata or {})
    meta.pop(KEY, None)  # the link, and the writer's stamp: the caller's business
    pandas_meta = meta.get(PANDAS)
    if pandas_meta is not None and list(columns) != list(link.columns):
        meta[PANDAS] = _merged_pandas(columns, None, pandas_meta)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))
