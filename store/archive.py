"""The archive of the log: sealed segments moved to compressed parquet, readable with pandas.

The archive is the log in another form (DESIGN section 4, Bounded growth): a sealed segment
that every actor's snapshot has passed and that is older than the retention is written to
``<data-dir>/archive/events-<first>-<last>.parquet`` (one row per event: seq, ts, type, id,
src, execution_id, the event as JSON, and its msgpack payload, exact), checked by reading it
back, and only then is the segment deleted. A user who asked for deletion instead gets a
marker ``deleted-<first>-<last>.json`` in its place, so replay can say what is gone.
With ``[hub] archive_to = "s3://BUCKET/PREFIX"`` each archived file then moves to the object
store (`store.archiveship`), and ``remote-<first>-<last>.json`` here names its object and hash.

Readers (`store.reader.LogReader`) read across archive and live log by seq: a range below the
first live segment comes from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from store.errors import StoreError
from store.fsutil import FILE_MODE, fsync_dir, make_private_dir
from store.segment import scan, segment_first_seq

ARCHIVED: Final = re.compile(r"^events-(\d{20})-(\d{20})\.parquet$")
DELETED: Final = re.compile(r"^deleted-(\d{20})-(\d{20})\.json$")
REMOTE: Final = re.compile(r"^remote-(\d{20})-(\d{20})\.json$")
READ_BATCH: Final = 8192


class ArchiveError(StoreError, ValueError):
    """The archive holds a file that does not read back as the events it claims."""


@dataclass(frozen=True, slots=True)
class Span:
    """A seq range of the archive: held in a parquet file, or deleted (``path`` its marker)."""

    first: int
    last: int
    path: Path
    deleted: bool
    url: str = ""  # on an object store: the object (``path`` is the marker naming it)
    sha256: str = ""  # the object's content hash, checked when it is read

    @property
    def records(self) -> int:
        return self.last - self.first + 1


def archive_dir(log_directory: Path) -> Path:
    """The archive beside a log directory: ``<data-dir>/archive`` for ``<data-dir>/log``."""
    return log_directory.parent / "archive"


def spans(directory: Path) -> list[Span]:
    """What the archive holds and what was deleted, by seq."""
    try:
        names = [p.name for p in directory.iterdir()]
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        for pattern, deleted in ((ARCHIVED, False), (DELETED, True)):
            match = pattern.match(name)
            if match:
                first, last = int(match[1]), int(match[2])
                out.append(Span(first, last, directory / name, deleted))
        match = REMOTE.match(name)
        if match:
            out.append(_remote_span(directory / name, int(match[1]), int(match[2])))
    # a file shipped and its marker written, then a crash before the file went: one span
    shipped = {(s.first, s.last) for s in out if s.url}
    out = [s for s in out if s.url or s.deleted or (s.first, s.last) not in shipped]
    return sorted(out, key=lambda s: (s.first, s.deleted))


def _remote_span(marker: Path, first: int, last: int) -> Span:
    try:
        body = json.loads(marker.read_text())
        return Span(first, last, marker, False, str(body["url"]), str(body["sha256"]))
    except (OSError, ValueError, KeyError) as exc:
        raise ArchiveError(f"archive: {marker} does not name an object: {exc}") from None


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("seq", pa.uint64()),
            ("ts", pa.float64()),
            ("type", pa.string()),
            ("id", pa.string()),
            ("src", pa.string()),
            ("execution_id", pa.string()),
            ("event", pa.string()),
            ("payload", pa.binary()),
        ]
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _json(fields: dict[str, Any]) -> str:
    return json.dumps(fields, default=lambda v: v.hex() if isinstance(v, bytes) else repr(v))


def archive_segment(segment: Path, directory: Path) -> Span:
    """Write one sealed segment as a parquet file of the archive, durably, and check it reads
    back as the same events (count, seqs and a checksum of every payload). The segment itself
    is left for the caller to delete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = segment.read_bytes()
    first = segment_first_seq(segment)
    result = scan(data, first)
    if result.problem:
        raise ArchiveError(f"archive: {segment} is not whole ({result.problem} at {result.end})")
    if not result.records:
        raise ArchiveError(f"archive: {segment} holds no records")
    columns: dict[str, list[Any]] = {name: [] for name in _schema().names}
    checksum = 0
    view = memoryview(data)
    offset, seq = 0, first
    while offset < result.end:
        length = int.from_bytes(view[offset : offset + 4], "big")
        payload = bytes(view[offset + 16 : offset + 16 + length])
        checksum = zlib.crc32(payload, checksum)
        try:
            fields = msgpack.unpackb(payload, strict_map_key=False)
        except Exception:  # whole by its CRC, but not a map: kept as bytes all the same
            fields = {}
        if not isinstance(fields, dict):
            fields = {}
        ts = fields.get("ts")
        columns["seq"].append(seq)
        columns["ts"].append(float(ts) if isinstance(ts, int | float) else None)
        columns["type"].append(_text(fields.get("type")))
        columns["id"].append(_text(fields.get("id")))
        columns["src"].append(_text(fields.get("src")))
        columns["execution_id"].append(_text(fields.get("execution_id")))
        columns["event"].append(_json(fields))
        columns["payload"].append(payload)
        offset += 16 + length
        seq += 1
    last = seq - 1
    make_private_dir(directory)
    path = directory / f"events-{first:020d}-{last:020d}.parquet"
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    table = pa.table(columns, schema=_schema())
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=16384)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.chmod(FILE_MODE)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(directory)
    span = Span(first, last, path, False)
    check_span(span, checksum)
    return span


def check_span(span: Span, checksum: int | None = None) -> int:
    """Read an archived span back: every seq in order, every payload there. Returns the
    crc32 of the payloads; raises `ArchiveError` naming what is wrong."""
    crc = 0
    expected = span.first
    try:
        for seq, payload in read_span(span, span.first, span.last):
            if seq != expected:
                raise ArchiveError(f"archive: {span.path} has seq {seq} where {expected} belongs")
            crc = zlib.crc32(payload, crc)
            expected += 1
    except ArchiveError:
        raise
    except Exception as exc:  # pyarrow raises many kinds for a damaged file
        raise ArchiveError(f"archive: {span.path} does not read: {exc}") from None
    if expected != span.last + 1:
        raise ArchiveError(f"archive: {span.path} ends at seq {expected - 1}, not {span.last}")
    if checksum is not None and crc != checksum:
        raise ArchiveError(f"archive: {span.path} payloads differ from the segment's")
    return crc


def read_span(span: Span, from_seq: int, to_seq: int) -> Iterator[tuple[int, bytes]]:
    """``(seq, payload)`` of an archived span within ``from_seq..to_seq``."""
    import pyarrow.parquet as pq

    if span.deleted:
        return
    if span.url:
        from store.archiveship import fetch

        source = pq.ParquetFile(fetch(span))
    else:
        source = pq.ParquetFile(span.path)
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=["seq", "payload"]):
        seqs = batch.column(0).to_pylist()
        if not seqs or seqs[-1] < from_seq:
            continue
        if seqs[0] > to_seq:
            return
        payloads = batch.column(1)
        for i, seq in enumerate(seqs):
            if from_seq <= seq <= to_seq:
                yield seq, payloads[i].as_py()


def drop_partial(directory: Path) -> int:
    """Remove temp files a crash left mid-write (call only while no archiving runs)."""
    count = 0
    try:
        leftovers = [
            p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")
        ]
    except FileNotFoundError:
        return 0
    for path in leftovers:
        with contextlib.suppress(OSError):
            path.unlink()
            count += 1
    return count


def mark_deleted(directory: Path, first: int, last: int, reason: str) -> Span:
    """Record durably that events ``first..last`` are gone (the user chose deletion)."""
    make_private_dir(directory)
    path = directory / f"deleted-{first:020d}-{last:020d}.json"
    body = {"first_seq": first, "last_seq": last, "deleted_ts": time.time(), "reason": reason}
    write_marker(path, body)
    return Span(first, last, path, True)


def write_marker(path: Path, body: dict[str, Any]) -> None:
    """A small JSON file standing for a span of the log, written durably (temp, fsync,
    rename, directory fsync): it exists whole or not at all."""
    from store import atomic  # here: it loads pyarrow, which a command reading the log never needs

    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    atomic.write_small(tmp, path, json.dumps(body).encode())


def deleted_note(span: Span) -> str:
    """One line saying what a deleted span was and when it went."""
    when = ""
    with contextlib.suppress(OSError, ValueError):
        ts = json.loads(span.path.read_text())["deleted_ts"]
        when = time.strftime(" on %Y-%m-%d %H:%M UTC", time.gmtime(ts))
    return f"events {span.first}..{span.last} were deleted by log retention{when}"


@dataclass(frozen=True, slots=True)
class ArchiveReport:
    """What `verify_archive` found."""

    files: int
    records: int
    deleted: int  # events in deleted spans
    first_seq: int
    last_seq: int
    problem: str


def verify_archive(directory: Path, first_live: int | None) -> ArchiveReport:
    """Check every archived file reads back whole and the spans follow each other from seq 1
    up to the live log's first seq (``first_live``; None: no live log)."""
    # a file of seqs the live log still holds: archived, then a crash before the segment went;
    # the hub archives that segment again and removes it
    found = [s for s in spans(directory) if first_live is None or s.first < first_live]
    records = deleted = 0
    expected = 1
    problem = ""
    for span in found:
        if span.first != expected:
            what = "overlaps" if span.first < expected else "leaves a gap before"
            problem = f"{span.path.name} {what} seq {expected}"
            break
        if span.deleted:
            deleted += span.records
        else:
            try:
                check_span(span)
            except ArchiveError as exc:
                problem = str(exc)
                break
            records += span.records
        expected = span.last + 1
    if not problem and found and first_live is not None and first_live != expected:
        problem = f"the archive ends at seq {expected - 1} but the live log starts at {first_live}"
    return ArchiveReport(
        files=len(found), records=records, deleted=deleted,
        first_seq=found[0].first if found else 0, last_seq=expected - 1, problem=problem,
    )  # fmt: skip


# --- what to archive, and when --------------------------------------------------------------

MODES: Final = ("archive", "delete", "off")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRetention:
    """When sealed segments leave the live log: older than ``after_s`` (by the time they were
    sealed), or the oldest while the live log holds more than ``max_bytes`` (0: no bound);
    never before every actor's newest snapshot has passed them. ``mode`` archive | delete |
    off."""

    mode: str = "archive"
    after_s: float = 7 * 86400.0
    max_bytes: int = 0
    check_s: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"log retention: mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.after_s < 0 or self.max_bytes < 0 or self.check_s <= 0:
            raise ValueError("log retention: after_s and max_bytes must be >= 0, check_s > 0")


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed segment as the retention sees it."""

    path: Path
    first: int
    last: int
    size: int
    sealed_ts: float


def due(
    sealed: list[Sealed], *, passed_seq: int | None, now: float, policy: LogRetention
) -> list[Sealed]:
    """The sealed segments (oldest first) that may leave the live log now. ``passed_seq``: the
    lowest seq every actor's newest snapshot covers (None: no actor has one yet, so an actor
    would fold from seq 1, and nothing may go)."""
    if policy.mode == "off" or passed_seq is None:
        return []
    live = sum(s.size for s in sealed)
    out = []
    for segment in sealed:
        if passed_seq is not None and segment.last > passed_seq:
            break  # an actor would have to read it back at its next start
        old = now - segment.sealed_ts >= policy.after_s
        big = bool(policy.max_bytes) and live > policy.max_bytes
        if not (old or big):
            break
        out.append(segment)
        live -= segment.size
    return out
