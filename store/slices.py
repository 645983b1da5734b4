"""Slices: a task's artifact that is some row groups of the execution's input, not a file.

A task on the input whose stage hands its rows back untouched writes nothing: its artifact is
``slice:FIRST:END:PATH``, row groups ``[FIRST, END)`` of the input parquet file, hashed over
those row groups' bytes. `store.artifacts` reads, sizes and verifies either kind. The input may
be an object of an S3 store (``s3://bucket/key``): its row groups are read by ranged GETs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from store.errors import ArtifactError
from store.objstore import remote

SLICE: Final = "slice:"
THREADS_MIN_ROWS: Final = 65_536
_OPEN: dict[tuple[str, int, int, int], pq.ParquetFile] = {}


def source_slice(path: str, first: int, end: int) -> str:
    """The artifact that is row groups ``[first, end)`` of the parquet file at `path`."""
    return f"{SLICE}{first}:{end}:{path}"


def is_slice(artifact: str | Path) -> bool:
    return str(artifact).startswith(SLICE)


def parse_slice(artifact: str) -> tuple[str, int, int]:
    """The parquet file's path and the ``[first, end)`` row groups of a slice."""
    first, end, path = artifact[len(SLICE) :].split(":", 2)
    return path, int(first), int(end)


def parquet_file(path: str) -> pq.ParquetFile:
    """Open a parquet file once per process while its size and mtime stay the same (many
    tasks read one input: opening it and parsing its footer cost more than a small read)."""
    store = remote(path)
    if store is not None:
        return _remote_file(path)
    stat = os.stat(path)  # noqa: PTH116 (once a task read: no pathlib object)
    # no pre-buffering: it is for stores with a high latency per request, and on a local
    # file it makes a small read cost twenty times more (measured: 0.25 ms against 11 us)
    return _opened(
        (path, stat.st_ino, stat.st_mtime_ns, stat.st_size),
        lambda: pq.ParquetFile(path, pre_buffer=False),
    )


def _opened(
    key: tuple[str, int, int, int], open_file: Callable[[], pq.ParquetFile]
) -> pq.ParquetFile:
    """The file open under ``key`` (path, inode, mtime, size), opened now if it is not;
    at most 16 are kept open."""
    parquet = _OPEN.get(key)
    if parquet is None:
        if len(_OPEN) >= 16:
            for old in _OPEN.values():
                old.close()
            _OPEN.clear()
        parquet = _OPEN[key] = open_file()
    return parquet


def object_info(path: str) -> tuple[int, int]:
    """Size and mtime (ns) of an input object; FileNotFoundError when there is none."""
    import pyarrow.fs as pafs

    store = remote(path)
    assert store is not None
    info = store.fs.get_file_info(store.key(path))
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(path)
    return int(info.size), int(info.mtime_ns or 0)


def _remote_file(path: str) -> pq.ParquetFile:
    """An input object, opened once per process while its size and mtime stay the same; its
    column chunks are fetched in few ranged GETs (pre-buffering: what it is for)."""
    store = remote(path)
    assert store is not None
    size, mtime_ns = object_info(path)
    return _opened(
        (path, 0, mtime_ns, size),
        lambda: pq.ParquetFile(store.fs.open_input_file(store.key(path)), pre_buffer=True),
    )


def read_row_groups(
    parquet: pq.ParquetFile, first: int, end: int, columns: list[str] | None = None
) -> pa.Table:
    """Row groups ``first`` up to ``end`` of an open parquet file, as one table (`columns`
    only, when given); a small read stays on the calling thread (`uses_threads`)."""
    if end <= first:
        empty = parquet.schema_arrow.empty_table()
        return empty if columns is None else empty.select(columns)
    meta = parquet.metadata
    whole = first == 0 and end == meta.num_row_groups
    rows = meta.num_rows if whole else sum(meta.row_group(g).num_rows for g in range(first, end))
    return parquet.read_row_groups(
        range(first, end), columns=columns, use_threads=uses_threads(rows)
    )


def uses_threads(rows: int) -> bool:
    """Arrow's thread pool for a read or a conversion of this many rows? Handing a small one
    to the pool costs more than doing it (measured: a one-row task's read and conversion took
    0.8 ms with threads on a busy 2-core machine, and a tenth of that without)."""
    return rows >= THREADS_MIN_ROWS


def _chunks(meta: pq.FileMetaData, first: int, end: int) -> list[tuple[int, int]]:
    """Offset and length of every column chunk of the row groups, in file order."""
    chunks = []
    for group in range(first, end):
        row_group = meta.row_group(group)
        for column in range(row_group.num_columns):
            chunk = row_group.column(column)
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset is not None:
                start = min(start, chunk.dictionary_page_offset)
            chunks.append((start, chunk.total_compressed_size))
    return chunks


def slice_hash(artifact: str) -> tuple[int, int, str]:
    """Rows, bytes and content hash of a slice (the bytes of its row groups' column chunks)."""
    path, first, end = parse_slice(artifact)
    try:
        meta = parquet_file(path).metadata
        if not 0 <= first <= end <= meta.num_row_groups:
            raise ArtifactError(
                f"slice {artifact!r}: the file has {meta.num_row_groups} row groups"
            )
        digest = hashlib.sha256()
        size = 0
        store = remote(path)
        if store is not None:
            with store.fs.open_input_file(store.key(path)) as source:
                for offset, length in _chunks(meta, first, end):
                    data = source.read_at(length, offset)
                    if len(data) != length:
                        raise ArtifactError(f"slice {artifact!r}: the file ends inside a row group")
                    digest.update(data)
                    size += length
            rows = sum(meta.row_group(g).num_rows for g in range(first, end))
            return rows, size, digest.hexdigest()
        fd = os.open(path, os.O_RDONLY)
        try:
            for offset, length in _chunks(meta, first, end):
                data = os.pread(fd, length, offset)
                if len(data) != length:
                    raise ArtifactError(f"slice {artifact!r}: the file ends inside a row group")
                digest.update(data)
                size += length
        finally:
            os.close(fd)
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"cannot read artifact {artifact!r}: {exc}") from exc
    rows = sum(meta.row_group(g).num_rows for g in range(first, end))
    return rows, size, digest.hexdigest()


def slice_bytes(artifact: str) -> int:
    """A slice's size: its row groups' column chunks."""
    path, first, end = parse_slice(artifact)
    try:
        meta = parquet_file(path).metadata
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"cannot read artifact {artifact!r}: {exc}") from exc
    return sum(length for _, length in _chunks(meta, first, end))


def read_slice(artifact: str) -> pa.Table:
    path, first, end = parse_slice(artifact)
    return read_row_groups(parquet_file(path), first, end)


def read_slice_schema(artifact: str) -> pa.Schema:
    path, _, _ = parse_slice(artifact)
    return parquet_file(path).schema_arrow
