"""The event log on real files: durability rules, torn tails, corruption, segments, reads."""

from __future__ import annotations

import os
import stat

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.errors import CorruptRecordError, LogLockedError
from store.log import EventLog, lock_holder
from store.reader import LogReader
from store.segment import HEADER_SIZE, list_segments
from store.verify import verify


def payload(i: int, kind: str = "MetricRecorded", execution_id: str | None = None) -> bytes:
    return msgpack.packb({"type": kind, "i": i, "execution_id": execution_id, "pad": "x" * (i % 7)})


def write(directory, count: int, **options) -> list[bytes]:
    payloads = [payload(i) for i in range(1, count + 1)]
    with EventLog(directory, **options) as log:
        for start in range(0, count, 10):
            log.append(payloads[start : start + 10])
    return payloads


def test_append_assigns_contiguous_seqs_and_reads_back(tmp_path):
    # given
    with EventLog(tmp_path, fsync="always") as log:
        first = log.append([b"a", b"b"])
        second = log.append([b"c"])
        # then
        assert (first, second, log.head) == (1, 3, 3)
    assert list(LogReader(tmp_path).read()) == [(1, b"a"), (2, b"b"), (3, b"c")]


def test_reopen_continues_the_seq(tmp_path):
    write(tmp_path, 25)
    with EventLog(tmp_path) as log:
        assert log.head == 25
        assert log.append([b"next"]) == 26


def test_segments_roll_and_reads_cross_them(tmp_path):
    # given: segments of about 300 bytes
    payloads = write(tmp_path, 200, segment_bytes=300)
    # then
    assert len(list_segments(tmp_path)) > 5
    assert [p for _, p in LogReader(tmp_path).read()] == payloads
    assert [s for s, _ in LogReader(tmp_path).read(137, 150)] == list(range(137, 151))
    assert verify(tmp_path).ok
    assert verify(tmp_path).records == 200


def test_read_from_the_middle_uses_the_index(tmp_path):
    write(tmp_path, 5000)
    reader = LogReader(tmp_path)
    assert [s for s, _ in reader.read(4090, 4100)] == list(range(4090, 4101))
    assert [s for s, _ in reader.read(2049, 2049)] == [2049]
    assert [s for s, _ in reader.read(1, 3)] == [1, 2, 3]


def test_read_filters_by_type_and_execution(tmp_path):
    with EventLog(tmp_path) as log:
        log.append(
            [
                payload(1, "A", "e1"),
                payload(2, "B", "e1"),
                payload(3, "A", "e2"),
                payload(4, "AB", "e1"),
            ]
        )
    reader = LogReader(tmp_path)
    assert [s for s, _ in reader.read(types=["A"])] == [1, 3]
    assert [s for s, _ in reader.read(execution_id="e1")] == [1, 2, 4]
    assert [s for s, _ in reader.read(types=["A", "B"], execution_id="e1")] == [1, 2]


def test_read_chunk_bounds_and_continues(tmp_path):
    write(tmp_path, 100)
    reader = LogReader(tmp_path)
    records, next_seq = reader.read_chunk(1, 100, max_events=30)
    assert [s for s, _ in records] == list(range(1, 31))
    assert next_seq == 31
    records, next_seq = reader.read_chunk(31, 100, types=["Nope"], max_scan=50)
    assert records == []
    assert next_seq == 81
    records, next_seq = reader.read_chunk(81, 100)
    assert len(records) == 20
    assert next_seq == 101


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_truncation_anywhere_recovers_to_the_last_whole_record(tmp_path_factory, data):
    # given: a log of 40 records
    directory = tmp_path_factory.mktemp("log")
    payloads = write(directory, 40)
    segment = list_segments(directory)[0]
    boundaries = [0]
    for p in payloads:
        boundaries.append(boundaries[-1] + HEADER_SIZE + len(p))
    cut = data.draw(st.integers(0, boundaries[-1]))
    # when: the file is cut there (a power cut before the fsync reached it)
    os.truncate(segment, cut)
    with EventLog(directory) as log:
        whole = max(i for i, b in enumerate(boundaries) if b <= cut)
        # then: the log holds exactly the records that fit whole, and goes on from there
        assert log.head == whole
        assert segment.stat().st_size == boundaries[whole]
        assert log.append([b"after"]) == whole + 1
    assert [p for _, p in LogReader(directory).read(1, whole)] == payloads[:whole]


def test_a_cut_at_every_record_boundary_and_one_byte_either_side_recovers(tmp_path):
    import shutil

    original = tmp_path / "original"
    payloads = write(original, 25)
    boundaries = [0]
    for p in payloads:
        boundaries.append(boundaries[-1] + HEADER_SIZE + len(p))
    cuts = sorted({c for b in boundaries for c in (b - 1, b, b + 1) if 0 <= c <= boundaries[-1]})
    for cut in cuts:
        directory = tmp_path / f"cut-{cut}"
        shutil.copytree(original, directory, ignore=shutil.ignore_patterns("LOCK"))
        os.truncate(list_segments(directory)[0], cut)
        whole = max(i for i, b in enumerate(boundaries) if b <= cut)
        with EventLog(directory) as log:
            assert log.head == whole, cut
            assert log.append([b"after"]) == whole + 1
        assert [p for _, p in LogReader(directory).read(1, whole)] == payloads[:whole]
        shutil.rmtree(directory)


def test_garbage_tail_with_nothing_whole_after_it_is_cut(tmp_path):
    write(tmp_path, 10)
    segment = list_segments(tmp_path)[0]
    with segment.open("ab") as fh:
        fh.write(b"\x00" * 100)
    with EventLog(tmp_path) as log:
        assert log.head == 10
        assert log.truncated_bytes == 100


def test_damage_in_the_middle_is_an_error_not_a_cut(tmp_path):
    # given: one byte of record 5's payload flipped
    payloads = write(tmp_path, 20)
    segment = list_segments(tmp_path)[0]
    offset = sum(HEADER_SIZE + len(p) for p in payloads[:4])
    raw = bytearray(segment.read_bytes())
    raw[offset + HEADER_SIZE + 2] ^= 0xFF
    segment.write_bytes(bytes(raw))
    size = segment.stat().st_size
    # then: opening refuses and names the offset, the file stays whole
    with pytest.raises(CorruptRecordError, match=f"offset {offset}: crc mismatch"):
        EventLog(tmp_path)
    assert segment.stat().st_size == size
    report = verify(tmp_path)
    assert not report.ok
    assert (report.problem_offset, report.problem, report.records) == (offset, "crc mismatch", 4)
    with pytest.raises(CorruptRecordError):
        list(LogReader(tmp_path).read())


def test_verify_reports_a_torn_tail_as_recoverable(tmp_path):
    write(tmp_path, 10)
    segment = list_segments(tmp_path)[0]
    os.truncate(segment, segment.stat().st_size - 3)
    report = verify(tmp_path)
    assert report.torn_tail
    assert report.ok
    assert report.records == 9


def test_one_writer_at_a_time(tmp_path):
    with EventLog(tmp_path):
        assert lock_holder(tmp_path) == os.getpid()
        with pytest.raises(LogLockedError, match="already open for writing"):
            EventLog(tmp_path)
    assert lock_holder(tmp_path) is None


def test_files_are_private(tmp_path):
    directory = tmp_path / "log"
    write(directory, 3)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reader_stops_at_a_record_being_written(tmp_path):
    write(tmp_path, 5)
    segment = list_segments(tmp_path)[0]
    with segment.open("ab") as fh:
        fh.write(b"\x00\x00\x00\x10")
    assert len(list(LogReader(tmp_path).read())) == 5


def test_oversized_payload_is_refused(tmp_path):
    with EventLog(tmp_path) as log, pytest.raises(ValueError, match="over the"):
        log.append([b"x" * ((1 << 20) + 1)])


def test_damage_over_many_records_with_whole_ones_after_is_not_cut(tmp_path):
    # given: 1 KiB zeroed in the middle of a 100-record segment
    write(tmp_path, 100)
    segment = list_segments(tmp_path)[0]
    raw = bytearray(segment.read_bytes())
    raw[1000:2024] = bytes(1024)
    segment.write_bytes(bytes(raw))
    # then: refused, nothing cut
    with pytest.raises(CorruptRecordError, match="whole records after it"):
        EventLog(tmp_path)
    assert segment.stat().st_size == len(raw)
    assert not verify(tmp_path).ok


def test_a_refused_append_writes_nothing(tmp_path):
    with EventLog(tmp_path, fsync="always") as log:
        with pytest.raises(ValueError, match="over the"):
            log.append([b"ok", b"x" * ((1 << 20) + 1)])
        assert log.append([b"next"]) == 1
    assert [p for _, p in LogReader(tmp_path).read()] == [b"next"]


@pytest.mark.parametrize("event_id", ["a", "x" * 31, "y" * 32, "z" * 128, "ü-ü"])
def test_an_event_id_is_read_without_unpacking_the_event(event_id):
    from bus.events import StageCompleted
    from bus.schema import encode
    from store.sniff import payload_id

    event = StageCompleted(id=event_id, execution_id="e", stage="s", worker="w", artifact="a",
                           rows_in=1, rows_out=1, bytes=1, sha256="h", duration_s=0.1)  # fmt: skip
    assert payload_id(encode(event)) == event_id
    assert payload_id(msgpack.packb({"id": event_id, "type": "X"})) is None  # another layout
    assert payload_id(b"") is None
    assert payload_id(encode(event)[:12]) is None


def test_recent_payloads_match_the_checked_reader_across_segments(tmp_path):
    from store.reader import recent_payloads

    with EventLog(tmp_path / "log", fsync="never", segment_bytes=2048) as log:
        for i in range(300):
            log.append([payload(i)])
    reader = LogReader(tmp_path / "log")
    for start in (1, 57, 150, 299, 300, 301):
        assert list(recent_payloads(tmp_path / "log", start)) == list(reader.read(start))
