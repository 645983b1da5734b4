"""Sample data: the documented columns, reproducible by seed, dirt at the documented rates."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from stages.errors import StageConfigError
from stages.sample import BLOCK_ROWS, COLUMNS, DIRT_RATES, generate, write_sample
from tests.conftest import run_porch


def test_columns_and_types(tmp_path):
    path = write_sample(tmp_path / "q.parquet", 2_000, seed=1)
    frame = pd.read_parquet(path)
    assert tuple(frame.columns) == COLUMNS
    assert len(frame) == 2_000
    assert str(frame["END_TIME"].dtype).startswith("datetime64")
    assert frame["END_TIME"].dt.tz is not None
    assert frame["START_TIME"].map(type).eq(str).all()


def test_same_seed_same_data_other_seed_other_data():
    a = pd.concat(generate(3_000, seed=5))
    b = pd.concat(generate(3_000, seed=5))
    c = pd.concat(generate(3_000, seed=6))
    pd.testing.assert_frame_equal(a, b)
    assert not a["QUERY_ID"].equals(c["QUERY_ID"]) or not a["EXECUTION_TIME"].equals(
        c["EXECUTION_TIME"]
    )


def test_large_samples_are_written_in_row_groups(tmp_path):
    rows = BLOCK_ROWS * 2 + 10
    path = write_sample(tmp_path / "big.parquet", rows, seed=2)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == rows
    assert meta.num_row_groups == 3


def test_dirt_comes_at_the_documented_rates():
    frame = pd.concat(generate(100_000, seed=3))
    n = len(frame)

    def near(observed: int, kind: str, slack: float = 0.5) -> None:
        expected = DIRT_RATES[kind] * n
        assert abs(observed - expected) <= max(30, expected * slack), (kind, observed, expected)

    near(frame["USER_NAME"].isna().sum(), "null_user_name")
    near((frame["ROWS_PRODUCED"] == "N/A").sum(), "rows_produced_not_a_number")
    near((frame["TOTAL_ELAPSED_TIME"] < 0).sum(), "negative_elapsed_time")
    near((frame["BYTES_SCANNED"] < 0).sum(), "negative_bytes_scanned")
    unparseable = frame["START_TIME"].isin(["not a date", "2026-13-45 99:00:00", "", "N/A"]).sum()
    near(unparseable, "unparseable_start_time")
    assert frame.duplicated().sum() > 0
    assert frame["QUERY_ID"].duplicated().sum() > frame.duplicated().sum()


def test_load_follows_the_working_week():
    frame = pd.concat(generate(50_000, seed=4))
    end = frame["END_TIME"]
    weekend = end.dt.day_of_week >= 5
    assert weekend.mean() < 0.2
    by_hour = end.dt.hour.value_counts()
    assert by_hour.loc[10] > 2 * by_hour.loc[4]


def test_bad_arguments_are_refused():
    with pytest.raises(StageConfigError, match="rows must be >= 0"):
        list(generate(-1))


def test_cli_writes_a_sample(tmp_path):
    out = tmp_path / "s.parquet"
    result = run_porch("sample", str(out), "--rows", "1000", "--seed", "7")
    assert result.returncode == 0, result.stderr
    assert len(pd.read_parquet(out)) == 1000
    bad = run_porch("sample", str(out), "--start", "yesterday")
    assert bad.returncode == 2
    assert "is not an ISO 8601 datetime" in bad.stderr


def test_cli_default_days_match_the_generator():
    from actors.commands import sample as cli
    from stages import sample

    assert cli.DEFAULT_DAYS == sample.DEFAULT_DAYS
