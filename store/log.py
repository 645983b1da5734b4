"""The append-only event log: one writer that makes records durable, readers that stream them.

Durability follows an fsync policy: ``always`` syncs after every record, ``batch`` once per
appended batch (group commit), ``never`` leaves it to the kernel. A torn tail (a record cut short
or damaged with nothing whole after it) is cut off when the writer opens; damage with whole
records after it is refused as corruption, never cut off silently. A full disk is a state, not
a failure: the batch that did not fit is cut off and refused, and the writer takes the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import time
import zlib
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import msgpack

from store import powercut
from store.errors import (
    CorruptRecordError,
    LogDiskFullError,
    LogFsyncError,
    LogLockedError,
    StoreError,
)
from store.segment import (
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    SEQ_BYTES,
    list_segments,
    scan,
    segment_first_seq,
    segment_name,
    valid_record_after,
)

# a start scans the last segment whole (its torn tail): 16 MiB keeps that near 50 ms
DEFAULT_SEGMENT_BYTES: Final = 16 << 20
INDEX_EVERY: Final = 1024
INDEX_MASK: Final = INDEX_EVERY - 1
LOCK_WAIT_S: Final = 1.0
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class FsyncPolicy(StrEnum):
    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


def fsync_dir(directory: Path) -> None:
    listed = powercut.listing(directory)  # before the sync: a later rename may not be in it
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    powercut.synced_dir(directory, listed)


def disk_free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``directory``; -1 when
    it cannot be asked."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


def format_bytes(count: int) -> str:
    """``count`` bytes for a person: "512 bytes", "40.9 KB", "3.2 MB" (powers of 1000)."""
    size, unit = float(count), "bytes"
    for bigger in ("KB", "MB", "GB", "TB"):
        if size < 1000:
            break
        size, unit = size / 1000, bigger
    return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"


def disk_full_reason(directory: Path) -> str:
    """The one line a refused append carries: what is full, how much is left, what to do."""
    free = disk_free_bytes(directory)
    left = format_bytes(free) if free >= 0 else "no space"
    return (
        f"disk full: {left} free on {directory}; free space on that filesystem (old checkpoints"
        " and artifacts, other files) and appends resume by themselves"
    )


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) readable by the owner only, durably: the parent of
    each directory it creates is synced, or a power cut could lose the new entry."""
    if directory.is_dir():
        with contextlib.suppress(PermissionError):
            directory.chmod(DIR_MODE)
        return
    missing = []
    at = directory
    while not at.exists() and at.parent != at:
        missing.append(at)
        at = at.parent
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        directory.chmod(DIR_MODE)
    for made in reversed(missing):
        try:
            fsync_dir(made.parent)
        except PermissionError:  # a parent we may not open (a shared /srv): nothing to sync
            continue


def lock_holder(directory: Path) -> int | None:
    """The pid of the process writing the log in ``directory``, or None when none is."""
    path = directory / "LOCK"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = path.read_text().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class EventLog:
    """The single writer of a log directory; holds an exclusive lock on it while open.

    ``append`` returns once the records are written and synced under the policy, so a caller
    may publish or acknowledge them right after. A batch is all or nothing: on a full disk it
    is cut off whole and `LogDiskFullError` raised, with the log still open.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy | str = FsyncPolicy.BATCH,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = FsyncPolicy(fsync)
        if segment_bytes < HEADER_SIZE + 1:
            raise ValueError(f"segment_bytes {segment_bytes} is too small")
        self.segment_bytes = segment_bytes
        make_private_dir(self.directory)
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
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, FILE_MODE)
        # A probe (`lock_holder`) holds a shared lock for an instant: retry for a moment
        # before deciding another writer has the log.
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                os.close(fd)
                holder = (self.directory / "LOCK").read_text().strip() or "unknown"
                raise LogLockedError(
                    f"log {self.directory} is already open for writing by pid {holder}"
                ) from None
        os.ftruncate(fd, 0)
        try:
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:  # the pid only names the holder: a full disk may go without it
            if exc.errno not in DISK_FULL_ERRNOS:
                os.close(fd)
                raise
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
        fsync_dir(self.directory)

    def _roll(self) -> None:
        """Start the segment of seq ``head + 1``; on failure the current one stays in use (an
        empty new file left behind is a valid last segment, and the next roll reuses it)."""
        self._sync()
        path = self.directory / segment_name(self._head + 1)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            fsync_dir(self.directory)
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
        powercut.synced_size(self._path, self._size)

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
        pack_seq = SEQ_BYTES.pack
        crc32 = zlib.crc32
        always = self.fsync is FsyncPolicy.ALWAYS
        for payload in payloads:
            seq += 1
            seq_bytes = pack_seq(seq)
            buf += (len(payload) << 32 | crc32(payload, crc32(seq_bytes))).to_bytes(8, "big")
            buf += seq_bytes
            buf += payload
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


def _first_key(payload: bytes) -> int:
    """Where the first key of a packed map starts (-1: not a map)."""
    head = payload[0] if payload else 0
    return 1 if 0x80 <= head <= 0x8F else 3 if head == 0xDE else 5 if head == 0xDF else -1


def _packed_str(payload: bytes, pos: int) -> tuple[str, int] | None:
    """The msgpack string at ``pos`` (fixstr or str8) and the offset after it."""
    tag = payload[pos] if 0 <= pos < len(payload) else 0
    if 0xA0 <= tag <= 0xBF:
        start, size = pos + 1, tag & 0x1F
    elif tag == 0xD9 and pos + 1 < len(payload):
        start, size = pos + 2, payload[pos + 1]
    else:
        return None
    raw = payload[start : start + size]
    if len(raw) != size:
        return None
    try:
        return raw.decode("utf-8"), start + size
    except UnicodeDecodeError:
        return None


def payload_type(payload: bytes) -> str | None:
    """The ``type`` of an event payload without unpacking the rest of it: events are packed
    with ``type`` as their first key. None when the payload is not laid out that way."""
    pos = _first_key(payload)
    if pos < 0 or payload[pos : pos + 5] != b"\xa4type":
        return None
    found = _packed_str(payload, pos + 5)
    return found[0] if found is not None else None


def payload_id(payload: bytes) -> str | None:
    """The ``id`` of an event payload packed the usual way (``type``, ``v``, ``id`` first),
    read without unpacking the rest; None when it is laid out otherwise."""
    pos = _first_key(payload)
    if pos < 0 or payload[pos : pos + 5] != b"\xa4type":
        return None
    found = _packed_str(payload, pos + 5)
    if found is None:
        return None
    pos = found[1]
    if payload[pos : pos + 2] != b"\xa1v" or pos + 2 >= len(payload) or payload[pos + 2] > 0x7F:
        return None
    pos += 3  # a positive fixint version
    if payload[pos : pos + 3] != b"\xa2id":
        return None
    found = _packed_str(payload, pos + 3)
    return found[0] if found is not None else None


def recent_payloads(directory: Path, from_seq: int) -> Iterator[tuple[int, bytes]]:
    """``(seq, payload)`` from ``from_seq`` to the end, walking record headers without checking
    CRCs: for what a writer that has just opened (and so checked) the log needs again, such as
    the ids of its dedup window. Stops at the first record that does not fit."""
    segments = list_segments(directory)
    firsts = [segment_first_seq(p) for p in segments]
    start = max([i for i, first in enumerate(firsts) if first <= from_seq], default=0)
    unpack = HEADER.unpack_from
    for path in segments[start:]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # archived meanwhile: older than anything wanted here
            continue
        offset, size = 0, len(data)
        while offset + HEADER_SIZE <= size:
            length, _, seq = unpack(data, offset)
            stop = offset + HEADER_SIZE + length
            if stop > size or length > MAX_PAYLOAD:
                break
            if seq >= from_seq:
                yield seq, data[offset + HEADER_SIZE : stop]
            offset = stop


def _packed_keys(values: Iterable[str]) -> tuple[bytes, ...]:
    return tuple(msgpack.packb(v) for v in values)


class LogReader:
    """Streams records of a log directory by seq range without loading it into memory.

    Safe beside a live writer: a record still being written at the end of the last segment ends
    the stream instead of raising.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._index: dict[str, list[tuple[int, int]]] = {}
        self._scanned = 0

    def read(
        self,
        from_seq: int = 1,
        to_seq: int | None = None,
        *,
        types: Iterable[str] | None = None,
        execution_id: str | None = None,
        limit: int | None = None,
    ) -> Generator[tuple[int, bytes], None, None]:
        """Yield ``(seq, payload)`` for ``from_seq <= seq <= to_seq`` that pass the filters.

        ``limit`` bounds how many records are scanned (matching or not), so a server can
        answer in chunks.
        """
        if types is None and execution_id is None:
            return self._read_range(from_seq, to_seq, limit)
        return self._filtered(self._read_range(from_seq, to_seq, limit), types, execution_id)

    def read_chunk(
        self,
        from_seq: int,
        to_seq: int,
        *,
        types: Iterable[str] | None = None,
        execution_id: str | None = None,
        max_events: int = 1000,
        max_bytes: int = 512 << 10,
        max_scan: int = 50_000,
    ) -> tuple[list[tuple[int, bytes]], int]:
        """A bounded piece of a read: the records and the seq to continue from.

        Stops after ``max_events`` records, ``max_bytes`` of payload (at least one record) or
        ``max_scan`` records looked at, so one call never holds a server for long.
        """
        out: list[tuple[int, bytes]] = []
        size = 0
        records = self.read(
            from_seq, to_seq, types=types, execution_id=execution_id, limit=max_scan
        )
        try:
            for seq, payload in records:
                out.append((seq, payload))
                size += len(payload)
                if len(out) >= max_events or size >= max_bytes:
                    return out, seq + 1
        finally:
            records.close()  # type: ignore[attr-defined]
        return out, max(self._scanned, from_seq - 1) + 1

    def _filtered(
        self,
        records: Generator[tuple[int, bytes], None, None],
        types: Iterable[str] | None,
        execution_id: str | None,
    ) -> Generator[tuple[int, bytes], None, None]:
        type_set = set(types) if types is not None else None
        type_keys = _packed_keys(type_set) if type_set is not None else ()
        exec_key = msgpack.packb(execution_id) if execution_id is not None else b""
        try:
            for seq, payload in records:
                if type_set is not None and not any(k in payload for k in type_keys):
                    continue
                if execution_id is None and type_set is not None:
                    kind = payload_type(payload)
                    if kind is not None:  # the common layout: no need to unpack the rest
                        if kind in type_set:
                            yield seq, payload
                        continue
                if execution_id is not None and exec_key not in payload:
                    continue
                try:
                    fields = msgpack.unpackb(payload)
                except Exception:  # it passed its CRC: the content is what the writer sent
                    continue
                if not isinstance(fields, dict):
                    continue
                if type_set is not None and fields.get("type") not in type_set:
                    continue
                if execution_id is not None and fields.get("execution_id") != execution_id:
                    continue
                yield seq, payload
        finally:
            records.close()

    def _read_range(
        self, from_seq: int, to_seq: int | None, limit: int | None
    ) -> Generator[tuple[int, bytes], None, None]:
        from_seq = max(from_seq, 1)
        # Seqs are contiguous, so "at most `limit` records scanned" is a seq bound too.
        last = to_seq if to_seq is not None else (1 << 63)
        if limit is not None:
            last = min(last, from_seq + limit - 1)
        segments = list_segments(self.directory)
        firsts = [segment_first_seq(p) for p in segments]
        start = 0
        for i, first in enumerate(firsts):
            if first <= from_seq:
                start = i
        seq = from_seq
        try:
            if firsts and from_seq < firsts[0]:  # older than the live log: the archive's
                upto = min(last, firsts[0] - 1)
                for at, payload in self._archived(from_seq, upto):
                    seq = at
                    yield at, payload
                seq = upto + 1  # what neither holds was deleted: skipped, as replay says
                if seq > last:
                    return
            for i in range(start, len(segments)):
                path = segments[i]
                if firsts[i] > last:
                    return
                is_last = i == len(segments) - 1
                with _mapped(path) as view:
                    if view is None:  # archived since it was listed: read it there
                        upto = min(last, firsts[i + 1] - 1) if not is_last else last
                        for at, payload in self._archived(seq, upto):
                            seq = at
                            yield at, payload
                        seq = upto + 1
                        continue
                    offset, seq = self._locate(path, view, firsts[i], seq)
                    size = len(view)
                    unpack = HEADER.unpack_from
                    crc32 = zlib.crc32
                    while offset < size and seq <= last:
                        if size - offset < HEADER_SIZE:
                            if is_last:
                                return
                            raise CorruptRecordError(str(path), offset, "header cut short")
                        length, crc, rec_seq = unpack(view, offset)
                        stop = offset + HEADER_SIZE + length
                        if stop > size or length > MAX_PAYLOAD:
                            if is_last and length <= MAX_PAYLOAD:
                                return
                            raise CorruptRecordError(str(path), offset, f"bad length {length}")
                        if crc32(view[offset + 8 : stop]) != crc:
                            raise CorruptRecordError(str(path), offset, "crc mismatch")
                        if rec_seq != seq:
                            raise CorruptRecordError(
                                str(path), offset, f"seq {rec_seq}, expected {seq}"
                            )
                        if not seq & INDEX_MASK:
                            self._remember(path, seq, offset)
                        yield seq, view[offset + HEADER_SIZE : stop].tobytes()
                        seq += 1
                        offset = stop
                if seq > last:
                    return
        finally:
            self._scanned = max(from_seq, seq) - 1

    def _archived(self, from_seq: int, to_seq: int) -> Iterator[tuple[int, bytes]]:
        """Records of the archive beside this log (see `store.archive`) in a seq range."""
        from store import archive

        for span in archive.spans(archive.archive_dir(self.directory)):
            if span.last < from_seq or span.first > to_seq or span.deleted:
                continue
            yield from archive.read_span(span, from_seq, to_seq)

    def _remember(self, path: Path, seq: int, offset: int) -> None:
        marks = self._index.setdefault(path.name, [])
        if not marks or marks[-1][0] < seq:
            marks.append((seq, offset))

    def _locate(self, path: Path, view: memoryview, first: int, from_seq: int) -> tuple[int, int]:
        """Offset and seq of the best-known record at or before ``from_seq`` in a segment."""
        offset, seq = 0, first
        for mark_seq, mark_offset in self._index.get(path.name, ()):
            if mark_seq > from_seq:
                break
            offset, seq = mark_offset, mark_seq
        size = len(view)
        unpack = HEADER.unpack_from
        while seq < from_seq and offset + HEADER_SIZE <= size:
            length, _, rec_seq = unpack(view, offset)
            if rec_seq != seq or offset + HEADER_SIZE + length > size:
                break
            if not seq & INDEX_MASK:
                self._remember(path, seq, offset)
            offset += HEADER_SIZE + length
            seq += 1
        return offset, seq


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[memoryview | None]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            yield None
            return
        mapping = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    view = memoryview(mapping)
    try:
        yield view
    finally:
        view.release()
        mapping.close()


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What `verify` found: counts, the seq range, and the first problem if any."""

    segments: int
    records: int
    first_seq: int
    last_seq: int
    problem: str
    problem_segment: str
    problem_offset: int
    torn_tail: bool

    @property
    def ok(self) -> bool:
        return not self.problem or self.torn_tail


def verify(directory: str | os.PathLike[str]) -> VerifyReport:
    """Check every record of every segment; report the first bad offset.

    A record cut short at the very end of the last segment is reported as a torn tail (it is
    what a crash mid-write leaves, and the writer cuts it off on open), not as corruption.
    """
    segments = list_segments(Path(directory))
    records = 0
    first_seq = segment_first_seq(segments[0]) if segments else 1
    expected = first_seq
    for i, path in enumerate(segments):
        first = segment_first_seq(path)
        if first != expected:
            return VerifyReport(
                len(segments), records, first_seq, expected - 1,
                f"segment starts at seq {first}, expected {expected}", str(path), 0, False,
            )  # fmt: skip
        data = path.read_bytes()
        result = scan(data, first)
        records += result.records
        expected = result.last_seq + 1
        if result.problem:
            is_last = i == len(segments) - 1
            torn = is_last and valid_record_after(data, result.end, result.last_seq) is None
            return VerifyReport(
                len(segments), records, first_seq, result.last_seq,
                result.problem, str(path), result.end, torn,
            )  # fmt: skip
    return VerifyReport(len(segments), records, first_seq, expected - 1, "", "", 0, False)


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What `repair` did: where it cut, how many records stay, where the rest was put."""

    segment: str
    offset: int
    kept_records: int
    last_seq: int
    moved: tuple[str, ...]
    quarantine: str


def repair(directory: str | os.PathLike[str], quarantine_name: str) -> RepairReport:
    """Cut the log at its first bad record: the segment is truncated there and every later
    segment is moved into ``directory/quarantine_name/`` along with a copy of the cut-off bytes,
    so nothing is deleted. Only for a log no hub holds; never done automatically."""
    root = Path(directory)
    holder = lock_holder(root)
    if holder is not None:
        raise StoreError(f"log repair: a hub (pid {holder}) holds {root}; stop it first")
    report = verify(root)
    if not report.problem:
        raise StoreError(f"log repair: nothing to repair, {report.records} records are whole")
    quarantine = root / quarantine_name
    quarantine.mkdir(mode=0o700)
    bad = Path(report.problem_segment)
    data = bad.read_bytes()
    (quarantine / f"{bad.name}.from-{report.problem_offset}").write_bytes(
        data[report.problem_offset :]
    )
    moved = []
    for path in list_segments(root):
        first = segment_first_seq(path)
        # a segment bad from its first byte goes whole (an empty file would claim its seqs)
        if first > segment_first_seq(bad) or (path == bad and report.problem_offset == 0):
            path.rename(quarantine / path.name)
            moved.append(path.name)
    if bad.exists():
        fd = os.open(bad, os.O_WRONLY)
        try:
            os.ftruncate(fd, report.problem_offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(root)
    return RepairReport(str(bad), report.problem_offset, report.records, report.last_seq,
                        tuple(moved), str(quarantine))  # fmt: skip
