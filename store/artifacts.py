"""Artifacts: a stage task's outputs on disk, written so that a crash never leaves half a file.

Every write goes to a temp file in the target's directory, is fsynced, renamed into place, and
the directory is fsynced (DESIGN section 13), so a path that exists holds a whole artifact.
Frames between stages are Arrow IPC files, uncompressed and memory-mapped on read; final
outputs are parquet. Each write returns the file's size and SHA-256, which `StageCompleted`
records and `verify` checks before an artifact is reused.

A task on the execution's input whose stage hands its rows back untouched writes nothing: its
artifact is a *slice*, ``slice:FIRST:END:PATH``, row groups ``[FIRST, END)`` of the input
parquet file, hashed over those row groups' bytes. Every reader here takes either kind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store.errors import StoreError
from store.fsutil import fsync_dir, make_private_dir

CHUNK: Final = 8 * 1024 * 1024
SLICE: Final = "slice:"
SMALL: Final = 32 * 1024 * 1024  # frames up to this size are serialized and hashed in memory
SYNC_EVERY: Final = 64 * 1024 * 1024  # a bigger frame is pushed to disk in steps this big
_made_dirs: set[Path] = set()


class ArtifactError(StoreError, OSError):
    """An artifact that cannot be written, read or trusted."""


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    path: str
    rows: int
    bytes: int
    sha256: str


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _finish(tmp: Path, path: Path) -> tuple[int, str]:
    """fsync `tmp` and hash it (at once: both leave the GIL), rename it to `path`, fsync the
    directory."""
    digest = hashlib.sha256()

    def hash_file() -> None:
        with tmp.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)

    hasher = threading.Thread(target=hash_file, name="artifact-hash")
    hasher.start()
    try:
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
    finally:
        hasher.join()
    size = tmp.stat().st_size
    tmp.replace(path)
    fsync_dir(path.parent)
    return size, digest.hexdigest()


class _StreamSink:
    """A file for pyarrow to write a big artifact into: each buffer is written to `fd`, hashed
    by one thread and, every `SYNC_EVERY` bytes, pushed to disk by another (fdatasync), so
    serializing, hashing and the disk's writeback overlap and the final fsync finds little
    left. pyarrow calls it through `pa.PythonFile`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False
        self.position = 0
        self.digest = hashlib.sha256()
        self._hash_queue: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._synced = 0
        self._sync_error: OSError | None = None
        self._wake = threading.Condition()
        self._stopping = False
        self._hasher = threading.Thread(target=self._hash_loop, name="artifact-hash")
        self._syncer = threading.Thread(target=self._sync_loop, name="artifact-sync")
        self._hasher.start()
        self._syncer.start()

    def _hash_loop(self) -> None:
        while (view := self._hash_queue.get()) is not None:
            self.digest.update(view)

    def _sync_loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and self.position - self._synced < SYNC_EVERY:
                    self._wake.wait()
                if self._stopping:
                    return
                target = self.position
            try:
                os.fdatasync(self.fd)
            except OSError as exc:
                self._sync_error = exc
                return
            self._synced = target

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        self._hash_queue.put(view)  # the view keeps pyarrow's buffer alive until hashed
        while view:
            view = view[os.write(self.fd, view) :]
        self.position += size
        if self.position - self._synced >= SYNC_EVERY:
            with self._wake:
                self._wake.notify()
        return size

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def finish(self) -> str:
        """Stop the threads, fsync what is left; the content hash."""
        self._hash_queue.put(None)
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._hasher.join()
        self._syncer.join()
        if self._sync_error is not None:
            raise self._sync_error
        os.fsync(self.fd)
        return self.digest.hexdigest()


def _write_stream(tmp: Path, target: Path, table: pa.Table) -> tuple[int, str]:
    """Write `table` as an Arrow IPC file to `tmp` through a `_StreamSink`, rename it to
    `target`, fsync the directory."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    sink = _StreamSink(fd)
    try:
        try:
            with pa.PythonFile(sink, mode="w") as file, pa.ipc.new_file(file, table.schema) as w:
                w.write_table(table, max_chunksize=1_000_000)
        finally:
            sha = sink.finish()  # the threads stop whatever happened
    finally:
        os.close(fd)
    tmp.replace(target)
    fsync_dir(target.parent)
    return sink.position, sha


def _make_dir(directory: Path) -> None:
    """`make_private_dir`, once per directory and process (it costs two system calls)."""
    if directory not in _made_dirs:
        make_private_dir(directory)
        _made_dirs.add(directory)


def _write_small(tmp: Path, target: Path, data: memoryview | bytes) -> tuple[int, str]:
    """Write bytes held in memory to `tmp`, fsync, rename to `target`, fsync the directory;
    the hash is taken from memory, not by reading the file back."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except FileNotFoundError:  # the directory was removed since (dropped checkpoints)
        _made_dirs.discard(target.parent)
        _make_dir(target.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(target)
    fsync_dir(target.parent)
    return len(data), hashlib.sha256(data).hexdigest()


def write_frame(path: str | Path, df: pd.DataFrame) -> ArtifactInfo:
    """Write `df` as an Arrow IPC file (no index), atomically."""
    target = Path(path)
    _make_dir(target.parent)
    tmp = _tmp(target)
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
        if table.nbytes <= SMALL:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=1_000_000)
            size, sha = _write_small(tmp, target, memoryview(sink.getvalue()))
        else:
            size, sha = _write_stream(tmp, target, table)
    except (OSError, pa.ArrowException) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ArtifactError(f"cannot write artifact {str(target)!r}: {exc}") from exc
    return ArtifactInfo(str(target), len(df), size, sha)


def write_bytes(path: str | Path, data: bytes) -> ArtifactInfo:
    """Write opaque bytes (partials, stats) atomically."""
    target = Path(path)
    _make_dir(target.parent)
    tmp = _tmp(target)
    try:
        size, sha = _write_small(tmp, target, data)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ArtifactError(f"cannot write artifact {str(target)!r}: {exc}") from exc
    return ArtifactInfo(str(target), 0, size, sha)


def source_slice(path: str, first: int, end: int) -> str:
    """The artifact that is row groups ``[first, end)`` of the parquet file at `path`."""
    return f"{SLICE}{first}:{end}:{path}"


def is_slice(artifact: str | Path) -> bool:
    return str(artifact).startswith(SLICE)


def _parse_slice(artifact: str) -> tuple[str, int, int]:
    first, end, path = artifact[len(SLICE) :].split(":", 2)
    return path, int(first), int(end)


_OPEN: dict[tuple[str, int, int, int], pq.ParquetFile] = {}
THREADS_MIN_ROWS: Final = 65_536


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
        # no pre-buffering: it is for stores with a high latency per request, and on a local
        # file it makes a small read cost twenty times more (measured: 0.25 ms against 11 us)
        parquet = _OPEN[key] = pq.ParquetFile(path, pre_buffer=False)
    return parquet


def read_row_groups(parquet: pq.ParquetFile, first: int, end: int) -> pa.Table:
    """Row groups ``first`` up to ``end`` of an open parquet file, as one table; a small read
    stays on the calling thread (`uses_threads`)."""
    if end <= first:
        return parquet.schema_arrow.empty_table()
    meta = parquet.metadata
    whole = first == 0 and end == meta.num_row_groups
    rows = meta.num_rows if whole else sum(meta.row_group(g).num_rows for g in range(first, end))
    return parquet.read_row_groups(range(first, end), use_threads=uses_threads(rows))


def to_frame(table: pa.Table) -> pd.DataFrame:
    """A table as a frame, its buffers freed as they are converted."""
    return table.to_pandas(
        split_blocks=True, self_destruct=True, use_threads=uses_threads(table.num_rows)
    )


def uses_threads(rows: int) -> bool:
    """Arrow's thread pool for a read or a conversion of this many rows? Handing a small one
    to the pool costs more than doing it (measured: a one-row task's read and conversion took
    0.8 ms with threads on a busy 2-core machine, and a tenth of that without)."""
    return rows >= THREADS_MIN_ROWS


def _slice_chunks(meta: pq.FileMetaData, first: int, end: int) -> list[tuple[int, int]]:
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


def slice_info(artifact: str) -> ArtifactInfo:
    """Rows, bytes and content hash of a slice (the bytes of its row groups' column chunks)."""
    path, first, end = _parse_slice(artifact)
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
            for offset, length in _slice_chunks(meta, first, end):
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
    return ArtifactInfo(artifact, rows, size, digest.hexdigest())


def artifact_bytes(artifact: str) -> int:
    """An artifact's size in bytes (of a slice: its row groups' column chunks, not hashed)."""
    if not is_slice(artifact):
        return Path(artifact).stat().st_size
    path, first, end = _parse_slice(artifact)
    try:
        meta = parquet_file(path).metadata
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"cannot read artifact {artifact!r}: {exc}") from exc
    return sum(length for _, length in _slice_chunks(meta, first, end))


def _read_table(artifact: str | Path) -> pa.Table:
    text = str(artifact)
    if is_slice(text):
        path, first, end = _parse_slice(text)
        return read_row_groups(parquet_file(path), first, end)
    with pa.memory_map(text, "r") as source:
        return pa.ipc.open_file(source).read_all()


def read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact {str(path)!r}: {exc.strerror}") from exc


def read_frames(paths: Sequence[str | Path], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The Arrow IPC files end to end, as one frame (memory-mapped; `columns` to read fewer)."""
    tables = []
    for path in paths:
        try:
            table = _read_table(path)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise ArtifactError(f"cannot read artifact {str(path)!r}: {exc}") from exc
        if columns is not None:
            table = table.select([c for c in columns if c in table.column_names])
        tables.append(table)
    if not tables:
        raise ArtifactError("no artifacts to read")
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return to_frame(table)


def write_parquet(path: str | Path, parts: Sequence[str | Path]) -> ArtifactInfo:
    """Stream Arrow IPC parts, in order, into one parquet file (one part in memory at a time)."""
    target = Path(path)
    make_private_dir(target.parent)
    tmp = _tmp(target)
    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for part in parts:
            table = _read_table(part)
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), table.schema, compression="snappy")
            elif not table.schema.equals(writer.schema, check_metadata=False):
                # slices of the input beside frames a stage wrote: same columns, and types
                # (string widths, time units) that cast
                table = table.cast(writer.schema)
            writer.write_table(table, row_group_size=1_000_000)
            rows += table.num_rows
        if writer is not None:
            writer.close()
            writer = None
        size, sha = _finish(tmp, target)
    except (OSError, pa.ArrowException, ValueError) as exc:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ArtifactError(f"cannot write output {str(target)!r}: {exc}") from exc
    return ArtifactInfo(str(target), rows, size, sha)


def file_sha256(path: str | Path) -> str:
    """The content hash of an artifact (of a slice: its row groups' bytes)."""
    if is_slice(path):
        return slice_info(str(path)).sha256
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | Path, sha256: str) -> bool:
    """True when the file exists and its content hashes to `sha256`."""
    try:
        return file_sha256(path) == sha256
    except OSError:
        return False


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Put `source`'s content at `target` (a hard link when the file system allows)."""
    src, dst = Path(source), Path(target)
    make_private_dir(dst.parent)
    tmp = _tmp(dst)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        try:
            os.link(src, tmp)
        except OSError:
            with src.open("rb") as fin, tmp.open("wb") as fout:
                while chunk := fin.read(CHUNK):
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
        tmp.replace(dst)
        fsync_dir(dst.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ArtifactError(f"cannot reuse artifact {str(src)!r}: {exc.strerror}") from exc


def disk_bytes(paths: Sequence[str | Path]) -> int:
    """Bytes of the files under these directories (or of these files); what is missing is 0.

    A file hard-linked from another execution (a reused artifact) counts here too, though its
    space is freed only with its last link."""
    total = 0
    for path in paths:
        top = Path(path)
        if top.is_file():
            with contextlib.suppress(OSError):
                total += top.stat().st_size
            continue
        for folder, _, files in os.walk(top):
            for name in files:
                with contextlib.suppress(OSError):
                    total += (Path(folder) / name).lstat().st_size
    return total


def remove_paths(paths: Sequence[str | Path], *, inside: str | Path) -> list[str]:
    """Delete these directories (or files), each of which must lie inside ``inside``, then
    ``inside`` itself if that left it empty. What is gone already is skipped, so doing it again
    is harmless. Returns the paths that existed; raises `ArtifactError` for a path outside."""
    root = Path(inside).resolve()
    targets = []
    for path in paths:
        target = Path(path)
        if root not in target.resolve().parents:
            raise ArtifactError(f"refusing to remove {str(path)!r}: not inside {str(inside)!r}")
        targets.append(target)
    existed = []
    for target in targets:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists() or target.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        else:
            continue
        existed.append(str(target))
    with contextlib.suppress(OSError):
        root.rmdir()  # only when nothing else is left in it
    return existed
