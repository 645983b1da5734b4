"""Delta artifacts: a frame written as the columns a stage added, over the artifact it read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import artifacts, deltas


def _input(rows: int = 5000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "QUERY_ID": [f"q-{i:06d}" for i in range(rows)],
            "WAREHOUSE": pd.Categorical(rng.choice(["A", "B", None], rows)),
            "START": pd.date_range("2026-01-01", periods=rows, freq="min", tz="UTC"),
            "BYTES": rng.random(rows) * 1e9,
            "ROWS": pd.array(rng.integers(0, 9, rows), dtype="Int64"),
        }
    )


def _written(tmp_path: Path, df: pd.DataFrame) -> tuple[artifacts.ArtifactInfo, pd.DataFrame]:
    """`df` as an upstream task wrote it, and as the next task reads it."""
    info = artifacts.write_frame(tmp_path / "clean" / "run-0000.arrow", df)
    return info, artifacts.read_frames([info.path])


def _add_features(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(LOG_BYTES=np.log1p(df["BYTES"]), HOUR=df["START"].dt.hour)


def _as_delta(tmp_path: Path, info, read: pd.DataFrame, out: pd.DataFrame, name: str = "feat"):
    kept = deltas.kept_columns(deltas.guard(read), out)
    base = deltas.Base(info.path, info.sha256, tuple(kept))
    return artifacts.write_frame(tmp_path / name / "run-0000.arrow", out, base=base)


def test_a_frame_with_added_columns_is_written_as_those_columns_and_reads_back_whole(tmp_path):
    # given a task that read an artifact and added two columns to it
    info, read = _written(tmp_path, _input())
    as_read = deltas.guard(read)
    out = _add_features(read)
    # when its output is written over what it read
    kept = deltas.kept_columns(as_read, out)
    delta = artifacts.write_frame(
        tmp_path / "feat" / "run-0000.arrow",
        out,
        base=deltas.Base(info.path, info.sha256, tuple(kept)),
    )
    # then the file holds only the new columns, and every reader sees the whole frame
    assert kept == list(read.columns)
    with pa.memory_map(delta.path) as source:
        assert pa.ipc.open_file(source).schema.names == ["LOG_BYTES", "HOUR"]
    assert delta.bytes < info.bytes / 2
    whole = artifacts.write_frame(tmp_path / "whole.arrow", out)
    expected = artifacts.read_frames([whole.path])
    pd.testing.assert_frame_equal(artifacts.read_frames([delta.path]), expected)
    some = artifacts.read_frames([delta.path], ["HOUR", "BYTES", "QUERY_ID"])
    pd.testing.assert_frame_equal(some, expected[["QUERY_ID", "BYTES", "HOUR"]])
    final = artifacts.write_parquet(tmp_path / "output" / "feat.parquet", [delta.path])
    assert pq.read_table(final.path).equals(pq.read_table(
        artifacts.write_parquet(tmp_path / "output" / "whole.parquet", [whole.path]).path
    ))  # fmt: skip


def test_a_column_the_stage_wrote_into_is_written_not_taken_from_the_base(tmp_path):
    # given a stage that changes a column of its input in place and returns the input
    info, read = _written(tmp_path, _input())
    as_read = deltas.guard(read)
    read.loc[read.index[:10], "BYTES"] = -1.0
    read["ROWS"] = read["ROWS"] * 2
    # then those columns are its own, and the delta carries them
    kept = deltas.kept_columns(as_read, read)
    assert "BYTES" not in kept
    assert "ROWS" not in kept
    assert "QUERY_ID" in kept
    delta = artifacts.write_frame(
        tmp_path / "feat" / "run-0000.arrow",
        read,
        base=deltas.Base(info.path, info.sha256, tuple(kept)),
    )
    back = artifacts.read_frames([delta.path])
    assert (back["BYTES"].iloc[:10] == -1.0).all()
    pd.testing.assert_series_equal(back["ROWS"], read["ROWS"])


def test_rows_taken_or_reordered_are_not_the_base(tmp_path):
    _, read = _written(tmp_path, _input())
    as_read = deltas.guard(read)
    assert deltas.kept_columns(as_read, read.iloc[1:].reset_index(drop=True)) == []
    assert deltas.kept_columns(as_read, read.iloc[::-1].reset_index(drop=True)) == []
    recast = read.assign(WAREHOUSE=read["WAREHOUSE"].cat.add_categories(["C"]))
    assert "WAREHOUSE" not in deltas.kept_columns(as_read, recast)


def test_a_delta_verifies_only_while_its_base_is_what_it_was_written_over(tmp_path):
    # given a delta over a base
    info, read = _written(tmp_path, _input())
    delta = _as_delta(tmp_path, info, read, _add_features(read))
    assert artifacts.verify(delta.path, delta.sha256)
    # when the base's bytes change
    damaged = bytearray(Path(info.path).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    Path(info.path).write_bytes(bytes(damaged))
    # then the delta no longer verifies, though its own bytes do
    assert artifacts.verify(delta.path, delta.sha256, base=False)
    assert not artifacts.base_verifies(delta.path)
    assert not artifacts.verify(delta.path, delta.sha256)
    # and a missing base fails too
    Path(info.path).unlink()
    assert not artifacts.verify(delta.path, delta.sha256)
    with pytest.raises(artifacts.ArtifactError):
        artifacts.read_frames([delta.path])


def test_deltas_of_deltas_stop_at_a_depth_and_a_moved_pair_still_reads(tmp_path):
    # given a chain of stages each adding a column to what the one before wrote
    info, read = _written(tmp_path, _input(500))
    expected = read
    for level in range(deltas.MAX_DEPTH + 2):
        out = read.assign(**{f"F{level}": np.arange(len(read)) * level})
        expected = out
        info = _as_delta(tmp_path, info, read, out, name=f"step{level}")
        read = artifacts.read_frames([info.path])
    # then each reads back whole, and the chain restarts with a whole frame at the depth
    pd.testing.assert_frame_equal(read, expected, check_dtype=False)
    with pa.memory_map(str(tmp_path / f"step{deltas.MAX_DEPTH}" / "run-0000.arrow")) as source:
        assert deltas.link_of(pa.ipc.open_file(source).schema) is None
    # and a directory moved whole (the base named relative to the delta) still reads
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    tmp_path.rename(moved)
    last = moved / f"step{deltas.MAX_DEPTH + 1}" / "run-0000.arrow"
    pd.testing.assert_frame_equal(artifacts.read_frames([last]), expected, check_dtype=False)
    assert artifacts.verify(last, info.sha256)
