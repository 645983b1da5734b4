"""The writer of the append-only event log: one process that appends records and makes them durable.

Durability follows an fsync policy: ``always`` syncs after every record, ``batch`` once per
appended batch (group commit), ``never`` leaves it to the kernel. A torn tail (a record cut short
or damaged with nothing whole after it) is cut off when the writer opens; damage with whole
records after it is refused as corruption, never cut off silently. A full disk is a state, not
a failure: the batch that did not fit is cut off and refused, and the writer takes the next one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Final

from store import pidlock
from store.errors import CorruptRecordError, LogDiskFullError, LogFsyncError, LogLockedError
from store.fsutil import (
    DISK_FULL_ERRNOS,
    FILE_MODE,
    SyncObserver,
    disk_free_bytes,
    disk_full_reason,
    fsync_dir,
    make_private_dir,
    sync_observer,
)
from store.segment import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    append_record,
    list_segments,
    scan,
    segment_first_seq,
    segment_name,
    valid_record_after,
)

# a start scans the last segment whole (its torn tail): 16 MiB keeps that near 50 ms
DEFAULT_SEGMENT_BYTES: Final = 16 << 20
LOCK_NAME: Final = "LOCK"
LOCK_WAIT_S: Final = 1.0


class FsyncPolicy(StrEnum):
    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


def lock_holder(directory: Path) -> int | None:
    """The pid of the process writing the log in ``directory``, or None when none is."""
    return pidlock.holder(directory / LOCK_NAME)


class EventLog:
    """The single writer of a log directory; holds an exclusive lock on it while open.

    ``append`` returns once the records are written and synced under the policy, so a caller
    may publish or acknowledge them right after. A batch is all or nothing: on a full disk it
    is cut off whole and `LogDiskFullError` raised, with the log still open. ``on_sync`` hears
    of every sync (the process's `sync_observer` when not given).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy | str = FsyncPolicy.BATCH,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        on_sync: SyncObserver | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = FsyncPolicy(fsync)
        if segment_bytes < HEADER_SIZE + 1:
            raise ValueError(f"segment_bytes {segment_bytes} is too small")
        self.segment_bytes = segment_bytes
        self._on_sync = on_sync if on_sync is not None else sync_observer()
        make_private_dir(self.directory, observer=self._on_sync)
        self._lock_fd = self._lock()
        self._fd = -1
        self.truncated_bytes = 0
        self.truncated_whole_record = False
        try:
            self._head = self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    @property
    def head(self) -> int:
        """The seq of the last record written (0 for an empty log)."""
        return self._head

    def _lock(self) -> int:
        # A probe (`lock_holder`) holds a shared lock for an instant: retry for a moment
        # before deciding another writer has the log.
        fd, holder = pidlock.hold(self.directory / LOCK_NAME, wait_s=LOCK_WAIT_S)
        if fd is None:
            raise LogLockedError(
                f"log {self.directory} is already open for writing by pid {holder}"
            )
        return fd

    def _recover(self) -> int:
        segments = list_segments(self.directory)
        if not segments:
            self._open_segment(1)
            return 0
        last = segments[-1]
        first_seq = segment_first_seq(last)
        data = last.read_bytes()
        result = scan(data, first_seq)
        if result.problem:
            found = valid_record_after(data, result.end, result.last_seq)
            if found is not None:
                raise CorruptRecordError(
                    str(last),
                    result.end,
                    f"{result.problem}, with whole records after it at offset {found};"
                    " run `porch log verify` to inspect it",
                )
            self.truncated_bytes = len(data) - result.end
            self.truncated_whole_record = not result.incomplete
            fd = os.open(last, os.O_WRONLY)
            try:
                os.ftruncate(fd, result.end)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._fd = os.open(last, os.O_WRONLY | os.O_APPEND)
        self._path = last
        self._size = result.end
        # what a killed hub wrote may sit in the page cache only: make the tail it serves durable
        self._sync()
        return result.last_seq

    def _open_segment(self, first_seq: int) -> None:
        path = self.directory / segment_name(first_seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        self._path = path
        self._size = 0
        fsync_dir(self.directory, observer=self._on_sync)

    def _roll(self) -> None:
        """Start the segment of seq ``head + 1``; on failure the current one stays in use (an
        empty new file left behind is a valid last segment, and the next roll reuses it)."""
        self._sync()
        path = self.directory / segment_name(self._head + 1)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            fsync_dir(self.directory, observer=self._on_sync)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd = fd
        self._path = path
        self._size = 0

    def _sync(self) -> None:
        if self.fsync is FsyncPolicy.NEVER:
            return
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise LogFsyncError(exc.errno, f"fsync of the log failed: {exc.strerror}") from exc
        if self._on_sync is not None:
            self._on_sync.synced_size(self._path, self._size)

    def append(self, payloads: Sequence[bytes]) -> int:
        """Append a batch; returns the seq given to its first record.

        When the filesystem is full (ENOSPC or EDQUOT at a write, a sync or the creation of a
        segment) the segment is cut back to where the batch began, the head is unchanged and
        `LogDiskFullError` is raised: nothing of the batch counts, even records already synced
        under ``always``, and the log stays open for the next append. A sync that fails is
        taken as "nothing of the batch is durable" (a filesystem may run out of space only
        when it writes back). Any other failed write or sync leaves the log closed: what
        reached the disk is only known by reopening it, which recovers a consistent tail.
        """
        if self._fd < 0:
            raise ValueError("the log is closed")
        for payload in payloads:
            if len(payload) > MAX_PAYLOAD:
                raise ValueError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD} limit")
        path, size, head = self._path, self._size, self._head
        try:
            return self._append(payloads)
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                self._abandon()
                raise
            self._cut_back(path, size, head)
            raise LogDiskFullError(
                disk_full_reason(self.directory),
                code=exc.errno,
                free_bytes=disk_free_bytes(self.directory),
            ) from exc
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _cut_back(self, path: Path, size: int, head: int) -> None:
        """Cut the segment in use back to the last whole record before a refused batch (to
        nothing when the batch began it) and reopen it, so no partial record stays behind."""
        keep = size if self._path == path else 0
        try:
            os.ftruncate(self._fd, keep)
            os.close(self._fd)
            self._fd = -1
            # a fresh descriptor: the failed one may still carry the write-back error
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
            self._size = keep
            self._head = head
            try:
                self._sync()
            except OSError as exc:
                # Not worth stopping for: the next successful sync writes the new length. Until
                # then a power cut may bring back whole records of the refused batch, as if the
                # writer had crashed before acknowledging them.
                if exc.errno not in DISK_FULL_ERRNOS:
                    raise
        except BaseException:
            self._abandon()
            raise

    def _append(self, payloads: Sequence[bytes]) -> int:
        if self._size >= self.segment_bytes:
            self._roll()
        first = self._head + 1
        seq = self._head
        buf = bytearray()
        always = self.fsync is FsyncPolicy.ALWAYS
        for payload in payloads:
            seq += 1
            append_record(buf, seq, payload)
            if always:
                self._write(buf)
                self._sync()
                buf.clear()
                self._head = seq
        self._write(buf)
        if not always:
            self._sync()
        self._head = seq
        return first

    def _write(self, buf: bytearray) -> None:
        view = memoryview(buf)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(buf)

    def close(self) -> None:
        if self._fd >= 0:
            self._sync()
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
