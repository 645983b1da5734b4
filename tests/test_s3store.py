"""Artifacts on an S3 object store (a real SeaweedFS server): whole or absent, hashed, checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest

from scripts.seaweed import ACCESS_KEY, SECRET_KEY
from store import artifacts, deltas, objstore
from store.errors import ArtifactError
from store.objstore import S3Options
from store.s3store import S3Store
from tests.conftest import run_porch


@pytest.fixture
def store(s3server):
    """The server as this process's object store, and a fresh bucket's URL."""
    objstore.configure(
        S3Options(
            endpoint=s3server.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )
    )
    try:
        yield f"s3://{s3server.bucket()}/ck"
    finally:
        objstore.configure(None)


def frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"a": range(rows), "b": [f"x{i}" for i in range(rows)]})


class ArtifactStoreContract:
    """What every `ArtifactStore` promises, run against each (`root`: an empty folder or
    prefix; `raw`: an artifact's bytes as the medium holds them)."""

    def raw(self, location: str) -> bytes:
        raise AssertionError("a store's test class says how to read its bytes")

    def test_frames_bytes_and_parquet_round_trip_with_their_hashes(self, root):
        store = objstore.store_for(root)
        # given a frame and some bytes written to the store
        df = frame(1000)
        info = store.write_frame(f"{root}/e1/s/run-0000.arrow", df)
        small = store.write_bytes(f"{root}/e1/s/map-0000.partial", b"partial")
        # then each is whole under its name, and the recorded hash is its content's
        raw = self.raw(info.path)
        assert info.sha256 == hashlib.sha256(raw).hexdigest()
        assert info.bytes == len(raw)
        assert info.rows == 1000
        assert store.read_bytes(small.path) == b"partial"
        # and it reads back as written, whole or by columns, and verifies against its hash
        back = artifacts.read_frames([info.path], hashes={info.path: info.sha256})
        pd.testing.assert_frame_equal(back, df)
        assert artifacts.column_names(info.path) == ["a", "b"]
        assert list(artifacts.read_frames([info.path], ["b"]).columns) == ["b"]
        assert store.verify(info.path, info.sha256)
        assert not store.verify(info.path, "0" * 64)
        assert not store.verify(f"{root}/e1/s/missing.arrow", info.sha256)
        # when two frames are collected into a parquet output
        other = store.write_frame(f"{root}/e1/s/run-0001.arrow", frame(5))
        out = store.write_parquet(f"{root}/e1/output/s.parquet", [info.path, other.path])
        # then it is one parquet file of both, hashed as written
        raw = self.raw(out.path)
        assert out.sha256 == hashlib.sha256(raw).hexdigest() == store.file_sha256(out.path)
        assert pq.read_table(pa.BufferReader(raw)).num_rows == 1005 == out.rows

    def test_copy_sizes_and_removal_stay_inside_the_execution(self, root):
        store = objstore.store_for(root)
        # given two executions' artifacts, one a copy of the other's
        a = store.write_frame(f"{root}/e4/s/run-0000.arrow", frame(100))
        store.write_bytes(f"{root}/e4/output/out.parquet", b"x" * 10)
        store.link_or_copy(a.path, f"{root}/e5/s/run-0000.arrow")
        # then the copy is the same content, and sizes add up per step
        assert store.verify(f"{root}/e5/s/run-0000.arrow", a.sha256)
        assert store.disk_bytes([f"{root}/e4/s"]) == a.bytes
        assert store.disk_bytes([f"{root}/e4/s", f"{root}/e4/output"]) == a.bytes + 10
        # when a step of e4 is removed
        gone = store.remove_paths([f"{root}/e4/s"], inside=f"{root}/e4")
        # then only it went, and doing it again is harmless; a path outside is refused
        assert gone == [f"{root}/e4/s"]
        assert not store.verify(a.path, a.sha256)
        assert store.read_bytes(f"{root}/e4/output/out.parquet") == b"x" * 10
        assert store.verify(f"{root}/e5/s/run-0000.arrow", a.sha256)
        assert store.remove_paths([f"{root}/e4/s"], inside=f"{root}/e4") == []
        with pytest.raises(ArtifactError, match="not inside"):
            store.remove_paths([f"{root}/e5/s"], inside=f"{root}/e4")


class TestLocalFolder(ArtifactStoreContract):
    @pytest.fixture
    def root(self, tmp_path):
        return str(tmp_path / "ck")

    def raw(self, location: str) -> bytes:
        return Path(location).read_bytes()


class TestS3Store(ArtifactStoreContract):
    @pytest.fixture
    def root(self, store, s3server):
        self.server = s3server
        return store

    def raw(self, location: str) -> bytes:
        with self.server.filesystem().open_input_stream(location.removeprefix("s3://")) as f:
            return f.read()


def test_a_frame_that_does_not_hash_to_what_was_recorded_is_refused(store, s3server):
    # given a frame on the store whose bytes were changed after its producer recorded them
    info = artifacts.write_frame(f"{store}/e2/s/run-0000.arrow", frame(50))
    fs = s3server.filesystem()
    with fs.open_output_stream(info.path.removeprefix("s3://")) as out:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, pa.schema([("a", pa.int64())])) as w:
            w.write_table(pa.table({"a": [1, 2, 3]}))
        out.write(sink.getvalue())
    # when it is read with the recorded hash, then it is refused in one line
    with pytest.raises(ArtifactError, match="damaged") as err:
        artifacts.read_frames([info.path], hashes={info.path: info.sha256})
    assert "\n" not in str(err.value)
    assert not artifacts.verify(info.path, info.sha256)


def test_a_big_frame_goes_through_a_spool_file_and_arrives_whole_read_in_ranges(store, monkeypatch):
    # given frames above the in-memory size (made small here), sent from a spool file
    monkeypatch.setattr("store.s3store.SMALL", 1024)
    monkeypatch.setattr("store.s3store.RANGE_BYTES", 64 * 1024)  # and read back in ranges
    df = frame(20_000)
    info = artifacts.write_frame(f"{store}/e3/s/run-0000.arrow", df)
    # then the object is the whole frame and hashes to what was recorded
    assert artifacts.verify(info.path, info.sha256)
    pd.testing.assert_frame_equal(artifacts.read_frames([info.path]), df)


def test_an_unreachable_store_is_one_line_naming_it_without_the_keys():
    # given a store on a port where nothing listens
    dead = S3Store(
        S3Options(
            endpoint=f"http://127.0.0.1:{_closed_port()}",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            connect_timeout_s=0.5,
            request_timeout_s=1.0,
        )
    )
    # when an artifact is written there, then it fails in one line naming the store
    with pytest.raises(ArtifactError) as err:
        dead.write_bytes("s3://bucket/e/s/x.partial", b"data")
    text = str(err.value)
    assert "object store http://127.0.0.1:" in text
    assert "s3://bucket/e/s/x.partial" in text
    assert "\n" not in text
    assert SECRET_KEY not in text
    assert ACCESS_KEY not in text
    assert not dead.verify("s3://bucket/e/s/x.partial", "0" * 64)


def test_options_come_from_porch_then_aws_variables_and_never_show_the_keys():
    # given the usual AWS variables, one overridden by porch's own
    options = objstore.from_environ(
        {
            "AWS_ENDPOINT_URL": "http://aws-like:9000",
            "PORCH_S3_ENDPOINT": "http://porch:8333",
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "very-secret",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    )
    # then porch's wins, the rest come from AWS_*, and no key is in the options' text
    assert options.endpoint == "http://porch:8333"
    assert options.region == "eu-west-1"
    assert options.access_key_id == "AKIAEXAMPLE"
    assert "very-secret" not in repr(options)
    assert "AKIAEXAMPLE" not in repr(options)
    assert "very-secret" not in options.where()
    # and a bad value is refused in one line
    with pytest.raises(ValueError, match="must start with http"):
        objstore.from_environ({"PORCH_S3_ENDPOINT": "minio:9000"})
    with pytest.raises(ValueError, match="both"):
        objstore.from_environ({"AWS_ACCESS_KEY_ID": "only-one"})


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_config_file_with_keys_must_be_private_and_never_shows_them(tmp_path):
    # given a config file with the object store's keys, readable by others
    config = tmp_path / "porch.toml"
    config.write_text(
        '[orchestrator]\ncheckpoint_dir = "s3://bucket/porch"\n'
        '[s3]\nendpoint = "http://127.0.0.1:8333"\n'
        f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key = "{SECRET_KEY}"\n'
    )
    config.chmod(0o644)
    # when porch reads it, then it is refused in one line saying what to do
    refused = run_porch("config", "show", "--config", str(config), data_dir=tmp_path / "d")
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0
    assert "must be private" in refused.stderr
    assert f"chmod 600 {config}" in refused.stderr
    # when it is private, then the settings show the location and hide the keys
    config.chmod(0o600)
    for extra in ((), ("--json",)):
        shown = run_porch(
            "config", "show", "--config", str(config), *extra, data_dir=tmp_path / "d"
        )
        assert shown.returncode == 0, shown.stderr
        assert "s3://bucket/porch" in shown.stdout
        assert "(set, hidden)" in shown.stdout
        assert SECRET_KEY not in shown.stdout
        assert ACCESS_KEY not in shown.stdout


def test_a_store_that_hangs_fails_a_write_in_one_line_within_its_timeouts(s3server):
    # given a store that takes connections and answers nothing
    slow = S3Store(
        S3Options(
            endpoint=s3server.endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            connect_timeout_s=0.5,
            request_timeout_s=0.5,
        )
    )
    bucket = s3server.bucket()
    s3server.freeze()
    try:
        # when an artifact is written there, then it fails in one line naming the store
        with pytest.raises(ArtifactError) as err:
            slow.write_bytes(f"s3://{bucket}/e/s/x.partial", b"data")
    finally:
        s3server.thaw()
    text = str(err.value)
    assert text.startswith(f"object store {s3server.endpoint}: cannot write s3://{bucket}/e/s/")
    assert "\n" not in text
    # and once it answers again, the same write goes through
    assert slow.write_bytes(f"s3://{bucket}/e/s/x.partial", b"data").bytes == 4


def test_a_frame_that_keeps_its_inputs_columns_is_a_delta_of_it_on_the_store(store, s3server):
    # given a frame on the store, and a stage's output that keeps its columns and adds one
    df = frame(2000)
    base = artifacts.write_frame(f"{store}/e6/a/run-0000.arrow", df)
    out = df.copy(deep=False)
    out["c"] = out["a"] * 2
    kept = deltas.kept_columns(deltas.guard(df), out)
    assert kept == ["a", "b"]
    # when it is written with that frame as its base
    info = artifacts.write_frame(
        f"{store}/e6/b/run-0000.arrow", out, base=deltas.Base(base.path, base.sha256, tuple(kept))
    )
    # then the object holds only the new column, and reads back as the whole frame
    raw = s3server.filesystem().open_input_stream(info.path.removeprefix("s3://")).read()
    assert pa.ipc.open_file(raw).schema.names == ["c"]
    assert info.bytes < base.bytes
    pd.testing.assert_frame_equal(
        artifacts.read_frames([info.path], hashes={info.path: info.sha256}), out
    )
    assert artifacts.column_names(info.path) == ["a", "b", "c"]
    assert artifacts.verify(info.path, info.sha256)
    # and once its base is changed, it no longer verifies, and a read is refused
    with s3server.filesystem().open_output_stream(base.path.removeprefix("s3://")) as f:
        f.write(raw)
    assert artifacts.verify(info.path, info.sha256, base=False)
    assert not artifacts.verify(info.path, info.sha256)
    with pytest.raises(ArtifactError, match="damaged"):
        artifacts.read_frames([info.path], hashes={info.path: info.sha256})
