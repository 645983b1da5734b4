"""Reading the log: records streamed by seq range, across the archive and the live segments."""

from __future__ import annotations

import contextlib
import mmap
import os
import zlib
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Final

import msgpack

from store.errors import CorruptRecordError
from store.segment import HEADER, HEADER_SIZE, MAX_PAYLOAD, list_segments, segment_first_seq
from store.sniff import packed_keys, payload_type

INDEX_EVERY: Final = 1024
INDEX_MASK: Final = INDEX_EVERY - 1


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
        type_keys = packed_keys(type_set) if type_set is not None else ()
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
