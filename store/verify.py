"""Checking a log whole (`porch log verify`) and cutting it at its first bad record (repair)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from store.errors import StoreError
from store.fsutil import fsync_dir
from store.log import lock_holder
from store.segment import list_segments, scan, segment_first_seq, valid_record_after


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
