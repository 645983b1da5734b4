"""Slices: a task's artifact that is some row groups of the execution's input, not a file.

A task on the input whose stage hands its rows back untouched writes nothing: its artifact is
``slice:FIRST:END:PATH``, row groups ``[FIRST, END)`` of the input parquet file, hashed over
those row groups' bytes. `store.artifacts` reads, sizes and verifies either kind.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from store.errors import ArtifactError

SLICE: Final = "slice:"
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
    stat = Path(path).stat()
    key = (path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    parquet = _OPEN.get(key)
    if parquet is None:
        if len(_OPEN) >= 16:
            for old in _OPEN.values():
                old.close()
            _OPEN.clear()
        parquet = _OPEN[key] = pq.ParquetFile(path)
    return parquet


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
    parquet = parquet_file(path)
    if end > first:
        return parquet.read_row_groups(range(first, end))
    return parquet.schema_arrow.empty_table()


def read_slice_schema(artifact: str) -> pa.Schema:
    path, _, _ = parse_slice(artifact)
    return parquet_file(path).schema_arrow
