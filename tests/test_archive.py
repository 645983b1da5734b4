"""The archive of the log: sealed segments move to parquet once every actor's snapshot has passed
them, reads go across archive and live log as if nothing moved, and a deleted range is named."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pandas as pd
import pytest

from store import archive
from store.archive import LogRetention, Sealed
from store.log import EventLog
from store.reader import LogReader
from store.snapshots import SnapshotStore
from tests.conftest import HubProcess, run_porch

GOLDEN_LOG = Path(__file__).parent / "golden" / "full" / "log"


def golden_payloads() -> list[bytes]:
    return [payload for _, payload in LogReader(GOLDEN_LOG).read(1)]


def small_log(log_dir: Path, payloads: list[bytes], segment_bytes: int = 8192) -> None:
    """A log of the golden events in many small segments."""
    with EventLog(log_dir, fsync="never", segment_bytes=segment_bytes) as log:
        for payload in payloads:
            log.append([payload])


def archive_sealed(log_dir: Path, count: int) -> list[archive.Span]:
    """Archive the first ``count`` segments and remove them, as the hub does."""
    from store.segment import list_segments

    done = []
    for segment in list_segments(log_dir)[:count]:
        done.append(archive.archive_segment(segment, archive.archive_dir(log_dir)))
        segment.unlink()
    return done


def test_reads_go_across_archive_and_live_log_as_if_nothing_moved(tmp_path):
    # given a log of the golden events whose first segments were archived
    payloads = golden_payloads()
    log_dir = tmp_path / "data" / "log"
    small_log(log_dir, payloads)
    before = list(LogReader(log_dir).read(1))
    spans = archive_sealed(log_dir, 4)
    assert spans[0].first == 1
    # when it is read whole, from inside the archive, filtered, and in bounded chunks
    reader = LogReader(log_dir)
    # then it is the same log
    assert list(reader.read(1)) == before
    assert (
        list(reader.read(spans[1].first + 3, spans[3].last + 5))
        == before[spans[1].first + 2 : spans[3].last + 5]
    )
    kinds = {"ExecutionRequested", "StageCompleted"}
    assert list(reader.read(1, types=kinds)) == list(LogReader(log_dir).read(1, types=kinds))
    assert [s for s, _ in reader.read(1, types=kinds)] == [
        s for s, p in before if msgpack.unpackb(p)["type"] in kinds
    ]
    chunked, at = [], 1
    while at <= len(before):
        records, at = reader.read_chunk(at, len(before), max_events=37)
        chunked += records
    assert chunked == before


def test_the_archive_reads_with_pandas_and_verifies(tmp_path):
    log_dir = tmp_path / "data" / "log"
    small_log(log_dir, golden_payloads())
    spans = archive_sealed(log_dir, 3)
    frame = pd.read_parquet(archive.archive_dir(log_dir))
    assert list(frame.columns) == [
        "seq",
        "ts",
        "type",
        "id",
        "src",
        "execution_id",
        "event",
        "payload",
    ]
    assert frame["seq"].tolist() == list(range(1, spans[-1].last + 1))
    first = json.loads(frame["event"].iloc[0])
    assert first["type"] == frame["type"].iloc[0]
    report = archive.verify_archive(archive.archive_dir(log_dir), spans[-1].last + 1)
    assert (report.problem, report.records) == ("", spans[-1].last)
    # a damaged file is found
    spans[1].path.write_bytes(spans[1].path.read_bytes()[:100])
    assert (
        "does not read"
        in archive.verify_archive(archive.archive_dir(log_dir), spans[-1].last + 1).problem
    )


@pytest.mark.parametrize(
    ("passed", "now", "policy", "expected"),
    [
        (99, 100.0, LogRetention(after_s=50), [1, 2]),  # old enough, passed by every snapshot
        (25, 100.0, LogRetention(after_s=50), [1]),  # segment 2 ends after the snapshots
        (None, 100.0, LogRetention(after_s=50), []),  # no snapshot yet: an actor needs it all
        (99, 100.0, LogRetention(after_s=95), [1]),  # only the first is old enough
        (99, 10.0, LogRetention(after_s=50), []),
        (99, 10.0, LogRetention(after_s=50, max_bytes=150), [1, 2]),  # over the bytes: oldest go
        (99, 100.0, LogRetention(mode="off", after_s=0), []),
    ],
)
def test_which_sealed_segments_may_leave_the_live_log(passed, now, policy, expected):
    sealed = [
        Sealed(Path("a"), 1, 20, 100, 0.0),
        Sealed(Path("b"), 21, 40, 100, 10.0),
        Sealed(Path("c"), 41, 60, 100, 90.0),
    ]
    picked = archive.due(sealed, passed_seq=passed, now=now, policy=policy)
    assert [s.first for s in picked] == [{1: 1, 2: 21, 3: 41}[i] for i in expected]


def replay(data_dir: Path, *args: str) -> tuple[list[dict], str]:
    result = run_porch("replay", "--json", *args, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def state_at(data_dir: Path, execution_id: str, seq: int) -> dict:
    result = run_porch(
        "replay", "--state", execution_id, "--at", str(seq), "--json", data_dir=data_dir
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def archiving_hub(tmp_path):
    hubs: list[HubProcess] = []

    def start(data_dir: Path, mode: str) -> HubProcess:
        config = tmp_path / f"{mode}.toml"
        config.write_text(
            f'[hub]\nsegment_bytes = 8192\narchive = "{mode}"\narchive_after_s = 0.0\n'
            "archive_check_s = 0.2\n"
        )
        hub = HubProcess(data_dir, "--config", str(config))
        hubs.append(hub)
        return hub.start()

    yield start
    for hub in hubs:
        hub.stop()


def wait_for(predicate, timeout: float = 20.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("not reached")


def test_a_running_hub_archives_what_every_snapshot_passed_and_replay_and_time_travel_agree(
    archiving_hub, tmp_path
):
    # given a log of the golden events, replayed and time-travelled before any archiving
    data_dir = tmp_path / "porch"
    payloads = golden_payloads()
    small_log(data_dir / "log", payloads)
    events, _ = replay(data_dir)
    at = {seq: state_at(data_dir, "par", seq) for seq in (60, 150, len(payloads))}
    # and actor snapshots up to seq 150: nothing after it may leave the live log
    store = SnapshotStore(data_dir / "snapshots")
    store.save("orchestrator", 150, "v", {})
    store.save("monitor", 200, "v", {})
    # when a hub with archiving due at once runs a while
    archiving_hub(data_dir, "archive")
    wait_for(
        lambda: (
            archive.spans(data_dir / "archive")
            and min(int(p.name[:20]) for p in (data_dir / "log").glob("*.seg")) > 100
        )
    )
    live_first = min(int(p.name[:20]) for p in (data_dir / "log").glob("*.seg"))
    # then only what the oldest snapshot passed was archived
    assert all(s.last <= 150 for s in archive.spans(data_dir / "archive"))
    assert live_first <= 151
    # and replay through the hub, time travel and verify see the same log
    again, stderr = replay(data_dir)
    assert again == events
    assert "deleted" not in stderr
    assert {seq: state_at(data_dir, "par", seq) for seq in at} == at
    verify = run_porch("log", "verify", data_dir=data_dir)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "archive ok:" in verify.stdout


def test_deleted_history_is_named_by_replay(archiving_hub, tmp_path):
    data_dir = tmp_path / "porch"
    payloads = golden_payloads()
    small_log(data_dir / "log", payloads)
    SnapshotStore(data_dir / "snapshots").save("scheduler", 200, "v", {}, last_id="x", last_seq=3)
    archiving_hub(data_dir, "delete")
    wait_for(lambda: any(s.deleted for s in archive.spans(data_dir / "archive")))
    gone = [s for s in archive.spans(data_dir / "archive") if s.deleted]
    events, stderr = replay(data_dir)
    assert f"events 1..{gone[0].last} were deleted by log retention" in stderr
    assert events[0]["seq"] > gone[-1].last
    assert events[-1]["seq"] == len(payloads)


def test_a_crash_while_archiving_leaves_every_event_in_one_place_or_both(tmp_path):
    from store.segment import list_segments

    log_dir = tmp_path / "data" / "log"
    payloads = golden_payloads()
    small_log(log_dir, payloads)
    before = list(LogReader(log_dir).read(1))
    target = archive.archive_dir(log_dir)
    # given a crash mid-write (a temp file left) and one after the file but before the segment
    # was deleted (the same events in the archive and in the live log)
    first, second = list_segments(log_dir)[:2]
    target.mkdir(parents=True)
    (target / ".events-00000000000000000001-00000000000000000020.parquet.77.tmp").write_bytes(
        b"PAR1"
    )
    archive.archive_segment(first, target)
    # then readers and verify see one log, and the leftovers are cleaned up on the next pass
    assert list(LogReader(log_dir).read(1)) == before
    assert archive.verify_archive(target, 1).problem == ""
    assert archive.drop_partial(target) == 1
    span = archive.archive_segment(first, target)  # the hub's next pass does it again
    first.unlink()
    assert list(LogReader(log_dir).read(1)) == before
    assert archive.verify_archive(target, archive.segment_first_seq(second)).problem == ""
    assert span.first == 1


def test_a_snapshot_whose_last_event_was_deleted_is_still_used(tmp_path):
    """A filtered actor's snapshot covers seq 200 but its last folded event is seq 3: deleting
    what every snapshot passed removes seq 3, and the snapshot must still count as this log's."""
    from actors.shared.snapshotter import newest_snapshot
    from actors.shared.sources import FileSource

    data_dir = tmp_path / "porch"
    payloads = golden_payloads()
    small_log(data_dir / "log", payloads)
    third = msgpack.unpackb(payloads[2])["id"]
    store = SnapshotStore(data_dir / "snapshots")
    store.save("scheduler", 200, "v", {"at": 200}, last_id=third, last_seq=3)
    from store.segment import list_segments

    for segment in list_segments(data_dir / "log")[:3]:  # what delete-mode retention does
        archive.mark_deleted(archive.archive_dir(data_dir / "log"), archive.segment_first_seq(segment),
                             archive.segment_first_seq(list_segments(data_dir / "log")[1]) - 1, "t")  # fmt: skip
        segment.unlink()
        break
    with FileSource(data_dir) as source:
        assert source.event_id(3) is None  # deleted: cannot tell
        assert source.event_id(len(payloads) + 5) == ""  # past the end: another log
        snap = newest_snapshot(store, [("scheduler", "v")], source)
    assert snap is not None
    assert snap.seq == 200
