"""The record format of log segments and the scan that checks it.

A record is ``[u32 length][u32 crc32(seq + payload)][u64 seq][payload]``, big-endian. The seq
sits right before the payload, so one ``crc32`` call covers both. A segment file is named after
the seq of its first record, zero-padded, so names sort by seq.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

HEADER: Final = struct.Struct(">IIQ")
HEADER_SIZE: Final = HEADER.size
MAX_PAYLOAD: Final = 1 << 20
SUFFIX: Final = ".seg"
SEQ_BYTES: Final = struct.Struct(">Q")


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SUFFIX}"


def segment_first_seq(path: Path) -> int:
    return int(path.name[: -len(SUFFIX)])


def list_segments(directory: Path) -> list[Path]:
    """Segment files of a log directory in seq order."""
    names = sorted(n for n in _listdir(directory) if n.endswith(SUFFIX) and n[:-4].isdigit())
    return [directory / n for n in names]


def _listdir(directory: Path) -> list[str]:
    try:
        return [p.name for p in directory.iterdir()]
    except FileNotFoundError:
        return []


def append_record(buf: bytearray, seq: int, payload: bytes) -> None:
    """Add the record of ``payload`` at ``seq`` to the end of ``buf``."""
    seq_bytes = SEQ_BYTES.pack(seq)
    buf += (len(payload) << 32 | zlib.crc32(payload, zlib.crc32(seq_bytes))).to_bytes(8, "big")
    buf += seq_bytes
    buf += payload


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Where a scan of one segment stopped and why.

    ``end`` is the offset just past the last good record; ``last_seq`` its seq (or the seq before
    the segment's first when it holds none). ``problem`` is empty when the scan reached the end of
    the data cleanly, else it names what is wrong at ``end``.
    """

    end: int
    last_seq: int
    records: int
    problem: str
    incomplete: bool


def scan(
    data: bytes | memoryview, first_seq: int, *, start: int = 0, seq: int | None = None
) -> ScanResult:
    """Check every record from ``start``: lengths, CRCs and seqs counting up by one.

    ``incomplete`` tells that the problem is a record running past the end of ``data`` (a torn
    write at the tail), as opposed to bytes that are wrong.
    """
    view = memoryview(data)
    size = len(view)
    offset = start
    expected = first_seq if seq is None else seq
    records = 0
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    while offset < size:
        if size - offset < HEADER_SIZE:
            return ScanResult(offset, expected - 1, records, "header cut short", True)
        length, crc, rec_seq = unpack(view, offset)
        if length > MAX_PAYLOAD:
            return ScanResult(
                offset, expected - 1, records, f"length {length} over {MAX_PAYLOAD}", False
            )
        stop = offset + HEADER_SIZE + length
        if stop > size:
            return ScanResult(
                offset, expected - 1, records, f"length {length} runs past the end", True
            )
        if crc32(view[offset + 8 : stop]) != crc:
            return ScanResult(offset, expected - 1, records, "crc mismatch", False)
        if rec_seq != expected:
            return ScanResult(
                offset, expected - 1, records, f"seq {rec_seq}, expected {expected}", False
            )
        expected += 1
        records += 1
        offset = stop
    return ScanResult(offset, expected - 1, records, "", False)


def valid_record_after(data: bytes | memoryview, offset: int, after_seq: int) -> int | None:
    """Offset of a whole, CRC-valid record with a seq above ``after_seq`` past ``offset``.

    Tells damage in the middle of a log (good records follow the bad one) from a torn tail
    (nothing good follows): only a torn tail may be cut off automatically. It searches for the
    high six bytes of every seq the rest of the data could hold, so it finds a good record
    however much was damaged before it.
    """
    raw = bytes(data)
    size = len(raw)
    most = (size - offset) // HEADER_SIZE + 1
    for high in range((after_seq + 1) >> 16, ((after_seq + most) >> 16) + 1):
        needle = high.to_bytes(6, "big")
        at = raw.find(needle, offset + 9)
        while at != -1:
            start = at - 8
            if start + HEADER_SIZE <= size:
                length, crc, seq = HEADER.unpack_from(raw, start)
                stop = start + HEADER_SIZE + length
                if (
                    seq > after_seq
                    and length <= MAX_PAYLOAD
                    and stop <= size
                    and zlib.crc32(raw[start + 8 : stop]) == crc
                ):
                    return start
            at = raw.find(needle, at + 1)
    return None
