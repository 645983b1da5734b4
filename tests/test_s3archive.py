"""The log's parquet archive on an S3 store (a real SeaweedFS server): shipped whole, read back
across archive and live log as if nothing moved, refused when the object changed."""

from __future__ import annotations

import time

import pytest

from scripts.seaweed import ACCESS_KEY, SECRET_KEY
from store import archive, archiveship, objstore
from store.archive import ArchiveError
from store.objstore import S3Options
from store.reader import LogReader
from tests.conftest import HubProcess, run_porch
from tests.test_archive import archive_sealed, golden_payloads, replay, small_log


@pytest.fixture
def bucket(s3server):
    objstore.configure(
        S3Options(
            endpoint=s3server.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
        )
    )
    try:
        yield s3server.bucket()
    finally:
        objstore.configure(None)


def test_shipped_archive_reads_as_the_log_and_refuses_a_changed_object(tmp_path, bucket, s3server):
    # given a log whose first segments were archived, then shipped to the store
    log_dir = tmp_path / "data" / "log"
    small_log(log_dir, golden_payloads())
    before = list(LogReader(log_dir).read(1))
    local = archive_sealed(log_dir, 3)
    shipped = archiveship.ship_all(archive.archive_dir(log_dir), f"s3://{bucket}/archive")
    # then every file went (a marker names each object) and the log reads the same
    assert [(s.first, s.last) for s in shipped] == [(s.first, s.last) for s in local]
    folder = archive.archive_dir(log_dir)
    assert not list(folder.glob("events-*.parquet"))
    assert len(list(folder.glob("remote-*.json"))) == 3
    assert set(s3server.keys(f"{bucket}/archive")) == {
        f"{bucket}/archive/{s.path.name}" for s in local
    }
    assert list(LogReader(log_dir).read(1)) == before
    assert archive.verify_archive(folder, local[-1].last + 1).problem == ""
    # when an object is changed on the store, then reading it is refused, never taken
    with s3server.filesystem().open_output_stream(shipped[1].url.removeprefix("s3://")) as out:
        out.write(b"not the archive")
    with pytest.raises(ArchiveError, match="does not hash"):
        list(LogReader(log_dir).read(shipped[1].first, shipped[1].last))
    assert "does not hash" in archive.verify_archive(folder, local[-1].last + 1).problem


def test_a_hub_ships_its_archive_and_replay_reads_it_back(tmp_path, s3server, monkeypatch):
    # given a hub whose archive goes to the store, reached through the usual AWS variables
    for name, value in s3server.environ().items():
        monkeypatch.setenv(name, value)
    bucket = s3server.bucket()
    data_dir = tmp_path / "porch"
    small_log(data_dir / "log", golden_payloads())
    events, _ = replay(data_dir)
    from store.snapshots import SnapshotStore

    snapshots = SnapshotStore(data_dir / "snapshots")
    snapshots.save("orchestrator", 150, "v", {})
    config = tmp_path / "hub.toml"
    config.write_text(
        '[hub]\nsegment_bytes = 8192\narchive = "archive"\narchive_after_s = 0.0\n'
        f'archive_check_s = 0.2\narchive_to = "s3://{bucket}/log-archive"\n'
    )
    hub = HubProcess(data_dir, "--config", str(config)).start()
    try:
        # when it has archived what the snapshot passed
        deadline = time.monotonic() + 30
        while not list((data_dir / "archive").glob("remote-*.json")):
            assert time.monotonic() < deadline, hub.stderr()
            time.sleep(0.05)
        # then the files are on the store, and replay through the hub sees the same log
        assert s3server.keys(f"{bucket}/log-archive")
        again, _ = replay(data_dir)
        assert again == events
    finally:
        hub.stop()
    # and without the hub, replay and verify read the archive from the store themselves
    assert replay(data_dir)[0] == events
    verify = run_porch("log", "verify", data_dir=data_dir)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "archive ok:" in verify.stdout
