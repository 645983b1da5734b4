"""Writing a file so that a crash never leaves half of it: a temp file, renamed into place.

The bytes are hashed (SHA-256) on the way, by another thread where they are many, so the hash
costs no second read. A durable write fsyncs the file before the rename and the directory
after it (DESIGN section 13), pushing a big file to disk in steps while it is written; a
write that is not durable (a frame between stages, see `store.artifacts`) leaves both to the
kernel.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path
from typing import Final

import pyarrow as pa

from store.fsutil import fsync_dir, make_private_dir, sync_observer

CHUNK: Final = 8 * 1024 * 1024
SYNC_EVERY: Final = 64 * 1024 * 1024  # a bigger durable file is pushed to disk in steps this big
# a big frame's buffers are LZ4-compressed (Arrow IPC's own buffer compression, read back by
# any pyarrow): the cleaning output of 2M rows is 161 MB instead of 437, so a third of the
# bytes to copy into the page cache, hash, write back and (when durable) sync; reading it
# decompresses instead of mapping, 0.1 s more for those 2M rows
COMPRESSED: Final = pa.ipc.IpcWriteOptions(compression="lz4")
_made_dirs: set[Path] = set()


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def finish(tmp: Path, path: Path) -> tuple[int, str]:
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
    _synced(path, size)
    fsync_dir(path.parent)
    return size, digest.hexdigest()


class _StreamSink:
    """A file for pyarrow to write a big artifact into: each buffer is written to `fd`, hashed
    by one thread and, every `SYNC_EVERY` bytes, pushed to disk by another (fdatasync), so
    serializing, hashing and the disk's writeback overlap and the final fsync finds little
    left. pyarrow calls it through `pa.PythonFile`."""

    def __init__(self, fd: int, *, durable: bool) -> None:
        self.fd = fd
        self.durable = durable
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
        if durable:
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
        if self.durable and self.position - self._synced >= SYNC_EVERY:
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
        """Stop the threads, fsync what is left (when durable); the content hash."""
        self._hash_queue.put(None)
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._hasher.join()
        if self.durable:
            self._syncer.join()
            if self._sync_error is not None:
                raise self._sync_error
            os.fsync(self.fd)
        return self.digest.hexdigest()


def write_stream(
    tmp: Path, target: Path, table: pa.Table, *, durable: bool, plain: bool = False
) -> tuple[int, str]:
    """Write `table` as an Arrow IPC file to `tmp` through a `_StreamSink`, rename it to
    `target`, fsync the directory (when durable); LZ4-compressed unless ``plain``."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    sink = _StreamSink(fd, durable=durable)
    try:
        try:
            with (
                pa.PythonFile(sink, mode="w") as file,
                pa.ipc.new_file(file, table.schema, options=None if plain else COMPRESSED) as w,
            ):
                w.write_table(table, max_chunksize=1_000_000)
        finally:
            sha = sink.finish()  # the threads stop whatever happened
    finally:
        os.close(fd)
    tmp.replace(target)
    if durable:
        _synced(target, sink.position)
        fsync_dir(target.parent)
    return sink.position, sha


def make_dir(directory: Path) -> None:
    """`make_private_dir`, once per directory and process (it costs two system calls)."""
    if directory not in _made_dirs:
        make_private_dir(directory)
        _made_dirs.add(directory)


def write_small(
    tmp: Path, target: Path, data: memoryview | bytes, *, durable: bool = True
) -> tuple[int, str]:
    """Write bytes held in memory to `tmp`, fsync, rename to `target`, fsync the directory
    (the syncs when durable); the hash is taken from memory, not by reading the file back."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except FileNotFoundError:  # the directory was removed since (dropped checkpoints)
        _made_dirs.discard(target.parent)
        make_dir(target.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(target)
    if durable:
        _synced(target, len(data))
        fsync_dir(target.parent)
    return len(data), hashlib.sha256(data).hexdigest()


def _synced(path: Path, size: int) -> None:
    """Tell the process's sync observer (a crash test's journal) the file is on disk whole."""
    observer = sync_observer()
    if observer is not None:
        observer.synced_size(path, size)
