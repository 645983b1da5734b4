"""A full disk is a state: on a real, small tmpfs the log cuts what did not fit, the hub refuses
appends with the reason, keeps serving, and takes appends again once space frees."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from bus.client import Client, Record
from bus.endpoints import log_dir
from bus.errors import EventRefusedError
from bus.events import MetricRecorded, MetricSampled
from store.errors import LogDiskFullError
from store.log import EventLog
from store.reader import LogReader
from store.segment import list_segments
from store.verify import verify
from tests.conftest import HubProcess, run_porch

PAD = "x" * 900  # about 1 KB an event: a few fill the last page of a segment


def mount_tmpfs(path: Path, options: str) -> Iterator[Path]:
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command: a full filesystem needs a tmpfs of its own")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, private to the test."""
    yield from mount_tmpfs(tmp_path / "d", "size=2m,mode=0700")


@pytest.fixture
def few_inodes_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs with room for data but for few files: creating a segment is what fails."""
    yield from mount_tmpfs(tmp_path / "d", "size=2m,nr_inodes=16,mode=0700")


def fill(directory: Path) -> Path:
    """Write a filler file until the filesystem refuses another byte; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = bytes(64 << 10)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


def fill_inodes(directory: Path) -> list[Path]:
    made = []
    try:
        for i in range(10_000):
            path = directory / f"inode-{i}"
            path.touch()
            made.append(path)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    return made


def metric(i: int) -> MetricRecorded:
    return MetricRecorded(name="disk", value=float(i), labels={"pad": PAD})


def payloads(start: int, count: int) -> list[bytes]:
    return [
        msgpack.packb({"type": "MetricRecorded", "i": i, "pad": PAD})
        for i in range(start, start + count)
    ]


def whole_and_clean(directory: Path, head: int) -> None:
    report = verify(directory)
    assert report.problem == "", report  # not even a torn tail: the partial record was cut
    assert (report.records, report.last_seq) == (head, head)


# --- the log writer ---------------------------------------------------------------------------


def append_until_full(log: EventLog, written: int) -> tuple[int, LogDiskFullError]:
    for _ in range(100):
        try:
            log.append(payloads(written + 1, 8))
        except LogDiskFullError as exc:
            return written, exc
        written += 8
    raise AssertionError("the log never refused a batch on a full disk")


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_log_cuts_the_batch_that_did_not_fit_and_appends_once_space_frees(small_fs, fsync):
    # given: a log on a 2 MiB filesystem, and a filler that leaves no room
    directory = small_fs / "log"
    with EventLog(directory, fsync=fsync) as log:
        assert log.append(payloads(1, 10)) == 1
        filler = fill(small_fs)
        # when: batches of 8 (about 8 KB) are appended until one does not fit
        written, refused = append_until_full(log, 10)
        # then: the batch is gone whole, the head and the file end at the last whole record
        assert refused.errno == errno.ENOSPC
        assert isinstance(refused, OSError)
        assert str(refused).startswith("disk full: ")
        assert "\n" not in str(refused)
        assert f"free on {directory}" in str(refused)
        assert log.head == written
        whole_and_clean(directory, written)
        # and a refused append keeps refusing without damage while the disk stays full
        with pytest.raises(LogDiskFullError):
            log.append(payloads(written + 1, 8))
        whole_and_clean(directory, written)
        # when: space frees
        filler.unlink()
        # then: the same writer appends again, from the next seq
        assert log.append(payloads(written + 1, 8)) == written + 1
        assert log.head == written + 8
    whole_and_clean(directory, written + 8)
    got = [msgpack.unpackb(p)["i"] for _, p in LogReader(directory).read()]
    assert got == list(range(1, written + 9))
    with EventLog(directory) as reopened:
        assert (reopened.head, reopened.truncated_bytes) == (written + 8, 0)


def test_a_segment_that_cannot_be_created_is_a_full_disk_too(few_inodes_fs):
    # given: a log that rolls every few records, on a filesystem with no inode left
    directory = few_inodes_fs / "log"
    with EventLog(directory, segment_bytes=1000) as log:
        log.append(payloads(1, 2))
        fillers = fill_inodes(few_inodes_fs)
        # when: the next batch needs a new segment
        with pytest.raises(LogDiskFullError):
            log.append(payloads(3, 1))
        # then: the log is as it was, and takes the batch once a file may be created again
        assert log.head == 2
        assert len(list_segments(directory)) == 1
        whole_and_clean(directory, 2)
        fillers.pop().unlink()
        assert log.append(payloads(3, 1)) == 3
    assert len(list_segments(directory)) == 2
    whole_and_clean(directory, 3)


# --- the hub ----------------------------------------------------------------------------------


@pytest.fixture
def full_hub(small_fs) -> Iterator[HubProcess]:
    process = HubProcess(small_fs)  # its stderr goes beside the mount, not onto it
    try:
        yield process.start()
    finally:
        process.stop()


def append_until_refused(client: Client, start: int) -> tuple[list[int], MetricRecorded, str]:
    """Append until the hub refuses; the seqs acknowledged, the refused event, the reason."""
    acked = []
    for i in range(start, start + 200):
        event = metric(i)
        try:
            acked.append(client.append(event))
        except EventRefusedError as exc:
            return acked, event, str(exc)
    raise AssertionError("the hub never refused an append on a full disk")


def collect(sub, count: int, timeout_s: float = 10.0) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got.extend(sub.receive(timeout_ms=200))
    return got


def wait_until(check, what: str, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return result


def test_the_hub_refuses_appends_on_a_full_disk_serves_reads_and_resumes_by_itself(full_hub):
    data_dir = full_hub.data_dir
    with Client.local(data_dir, timeout_ms=5000) as client, client.subscribe(1) as sub:
        # given: acknowledged events, a subscriber, and a disk with no room left
        acked = [client.append(metric(i)) for i in range(20)]
        filler = fill(data_dir)
        # when: appends go on until the hub refuses one
        more, refused_event, reason = append_until_refused(client, 20)
        acked += more
        head = acked[-1]
        # then: a one-line reason, and the hub is alive and serving
        assert acked == list(range(1, head + 1))
        assert reason.startswith("disk full: ")
        assert re.search(r"^disk full: [0-9.]+ (bytes|KB) free on ", reason), reason
        assert "appends resume by themselves" in reason
        assert "\n" not in reason
        assert full_hub.alive()
        assert client.head() == head
        stats = client.stats()
        assert stats["disk_full"] is True
        assert 0 <= stats["disk_free_bytes"] < 64 << 10
        assert stats["refused"]["disk full"] >= 1
        # reads hold every acknowledged event and nothing refused
        values = [r.event().value for r in client.read()]
        assert values == [float(i) for i in range(head)]
        # the subscriber got every acknowledged event, and a new one gets the history
        assert [r.seq for r in collect(sub, head)] == acked
        with client.subscribe(1) as late:
            assert [r.seq for r in collect(late, head)] == acked
        # no partial record is left on disk, even while the disk is full
        whole_and_clean(log_dir(data_dir), head)

        # when: events are pushed (no ack) while the disk is full
        before = stats["refused"]["disk full"]
        for i in range(5):
            client.publish(metric(1000 + i))
        # then: they are dropped and counted, not written
        wait_until(lambda: client.stats()["refused"]["disk full"] >= before + 5, "5 pushes refused")
        assert client.head() == head
        # live events are never appended: they keep flowing
        client.publish(MetricSampled(name="probe", value=1.0))
        wait_until(
            lambda: (sub.receive(timeout_ms=100) or True) and sub.take_live(), "a live event"
        )

        # when: space frees
        filler.unlink()
        # then: the very event refused before is written by a retry (not taken for a duplicate)
        seq = wait_until(lambda: _append_or_none(client, refused_event), "appends to resume")
        assert seq == head + 1
        assert client.head() == head + 1
        assert client.append(metric(2000)) == head + 2
        assert client.stats()["disk_full"] is False
        assert [r.seq for r in collect(sub, 2)] == [head + 1, head + 2]
        records = list(client.read())
        assert [r.seq for r in records] == list(range(1, head + 3))
        assert records[head].event().id == refused_event.id
        assert full_hub.alive()

    # and: a clean stop, a log that verifies whole, one line into the state and one out of it
    assert full_hub.stop() == 0
    done = run_porch("log", "verify", data_dir=data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"ok: {head + 2} records")
    assert "torn" not in done.stdout
    whole_and_clean(log_dir(data_dir), head + 2)
    stderr = full_hub.stderr()
    assert stderr.count("refusing appends") == 1, stderr
    assert stderr.count("room again") == 1, stderr
    assert "Traceback" not in stderr


def _append_or_none(client: Client, event: MetricRecorded) -> int | None:
    try:
        return client.append(event)
    except EventRefusedError as exc:
        if not str(exc).startswith("disk full: "):
            raise
        return None


def test_a_hub_started_on_a_full_disk_serves_and_refuses_without_crashing(full_hub):
    # given: a hub that filled its disk, stopped
    data_dir = full_hub.data_dir
    with Client.local(data_dir, timeout_ms=5000) as client:
        filler = fill(data_dir)
        acked, _, _ = append_until_refused(client, 0)
    assert full_hub.stop() == 0
    head = len(acked)
    # when: it starts again on the full disk
    full_hub.start()
    with Client.local(data_dir, timeout_ms=5000) as client:
        # then: it serves reads, refuses appends, and resumes once space frees
        assert client.head() == head
        assert len(list(client.read())) == head
        with pytest.raises(EventRefusedError, match=r"^disk full: "):
            client.append(metric(500))
        # `porch publish` prints the reason on one line and exits 2
        done = run_porch("publish", "MetricRecorded", "name=x", "value=1", data_dir=data_dir)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.startswith("porch: disk full: ")
        assert done.stderr.count("\n") == 1
        assert full_hub.alive()
        filler.unlink()
        assert wait_until(lambda: _append_or_none(client, metric(501)), "appends") == head + 1
    assert full_hub.stop() == 0
    whole_and_clean(log_dir(data_dir), head + 1)
