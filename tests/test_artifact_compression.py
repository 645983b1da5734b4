"""Big frames between stages are written LZ4-compressed, and read back column by column."""

from __future__ import annotations

import select
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from actors.shared.stagecfg import StageSet
from actors.worker.child import Runner, compression_env
from actors.worker.pipes import pack_frame
from stages.sample import write_sample
from store import artifacts, deltas, powercut


def _big(rows: int = 2_300_000) -> pd.DataFrame:
    """Over `artifacts.SMALL` (32 MB) as Arrow: the size that is streamed to its file."""
    ids = np.arange(rows)
    return pd.DataFrame(
        {
            "WAREHOUSE": np.array(["COMPUTE_WH", "ETL_WH", "BI_WH"])[ids % 3],
            "BYTES": (ids % 1000).astype("float64"),
            "ROWS": ids % 7,
        }
    )


def test_a_big_frame_is_compressed_and_reads_back_equal(tmp_path):
    # given
    df = _big()
    assert pa.Table.from_pandas(df).nbytes > artifacts.SMALL
    # when
    info = artifacts.write_frame(tmp_path / "clean" / "run-0000.arrow", df)
    # then: a fraction of its Arrow size on disk, the same frame when read
    assert info.bytes < pa.Table.from_pandas(df).nbytes / 3
    assert info.sha256 == artifacts.file_sha256(info.path)
    pd.testing.assert_frame_equal(artifacts.read_frames([info.path]), df)


def test_a_read_of_some_columns_gives_those_of_a_compressed_delta_and_its_base(tmp_path):
    # given: a compressed frame, and a delta over it that adds one column
    df = _big()
    info = artifacts.write_frame(tmp_path / "clean" / "run-0000.arrow", df)
    read = artifacts.read_frames([info.path])
    out = read.assign(LOG_BYTES=np.log1p(read["BYTES"]))
    kept = deltas.kept_columns(deltas.guard(read), out)
    base = deltas.Base(info.path, info.sha256, tuple(kept))
    delta = artifacts.write_frame(tmp_path / "feat" / "run-0000.arrow", out, base=base)
    # when
    some = artifacts.read_frames([delta.path], ["LOG_BYTES", "WAREHOUSE"])
    none_here = artifacts.read_frames([delta.path], ["ROWS"])
    # then: the columns asked for, in the frame's order, from wherever each is kept
    pd.testing.assert_frame_equal(some, out[["WAREHOUSE", "LOG_BYTES"]])
    pd.testing.assert_frame_equal(none_here, out[["ROWS"]])
    pd.testing.assert_frame_equal(artifacts.read_frames([delta.path]), out)


def test_an_uncompressed_frame_of_an_earlier_version_still_reads(tmp_path):
    # given: a frame file as porch wrote it before compression
    df = _big(1000)
    path = tmp_path / "old" / "run-0000.arrow"
    path.parent.mkdir()
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    # when / then
    pd.testing.assert_frame_equal(artifacts.read_frames([str(path)]), df)
    pd.testing.assert_frame_equal(artifacts.read_frames([str(path)], ["BYTES"]), df[["BYTES"]])


def test_a_compressed_frame_a_power_cut_damaged_is_refused_not_read(tmp_path):
    # given: a compressed frame written, unsynced, on one boot
    artifacts.set_boot_id("boot-a")
    try:
        df = _big()
        info = artifacts.write_frame(tmp_path / "clean" / "run-0000.arrow", df)
        # when the machine has restarted, and the cut left zeros where blocks were
        artifacts.set_boot_id("boot-b")
        hashes = {info.path: info.sha256}
        pd.testing.assert_frame_equal(artifacts.read_frames([info.path], hashes=hashes), df)
        powercut._damage(Path(info.path))
        # then: refused by its hash, for the whole frame and for some of its columns
        for columns in (None, ["BYTES"]):
            with pytest.raises(artifacts.ArtifactError, match="damaged"):
                artifacts.read_frames([info.path], columns, hashes)
    finally:
        artifacts.set_boot_id(None)


def _cleaned_by_a_runner(tmp_path: Path, *, compress: bool) -> Path:
    """Run `data_cleaning` on 200,000 sample rows (its output is over 32 MB as Arrow) in a
    runner started as a worker with ``compress_frames`` so starts it; the output's path."""
    source = write_sample(tmp_path / "input.parquet", 200_000)
    output = tmp_path / "out" / "run-0000.arrow"
    task = {"execution_id": "e", "stage": "data_cleaning", "task_id": "e/data_cleaning:run:0/1",
            "partition": 0, "partitions": 1, "attempt": 1, "lease_ms": 10_000, "inputs": [],
            "step": "data_cleaning", "phase": "run", "config": {}, "output": str(output),
            "reuse": {}, "fingerprint": "f", "spec": {"kind": "global", "input_path": str(source)}}  # fmt: skip
    runner = Runner(StageSet(), compression_env(compress=compress))
    try:
        runner.send(pack_frame(task))
        assert runner.reader is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            select.select([runner.fd], [], [], 1.0)
            frames, closed = runner.reader.read()
            done = [f for f in frames if isinstance(f, dict) and "ok" in f]
            if done:
                assert done[0]["ok"], done[0]
                return output
            assert not closed
        raise AssertionError("the runner gave no result in 60 s")
    finally:
        runner.kill()


@pytest.mark.parametrize("compress", [True, False])
def test_a_workers_compress_frames_setting_reaches_its_runner(tmp_path, compress):
    # when
    output = _cleaned_by_a_runner(tmp_path, compress=compress)
    # then: compressed by default; plain when the worker's compress_frames is off
    arrow_bytes = artifacts.read_table(output).nbytes
    assert arrow_bytes > artifacts.SMALL
    if compress:
        assert output.stat().st_size < arrow_bytes / 2
    else:
        assert output.stat().st_size >= arrow_bytes
