"""feature_engineering: time parts, durations, ratios, logs, per-group history, encodings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.errors import StageConfigError, StageInputError
from stages.features import feature_engineering
from tests.stagedata import clean_pool

NONE = {"since_previous": [], "rolling": [], "frequency": [], "one_hot": [], "ratios": {},
        "log_columns": [], "durations": {}}  # fmt: skip


def times(*texts: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(texts), utc=True, format="ISO8601")).dt.as_unit("us")


def test_time_parts_in_the_configured_time_zone():
    df = pd.DataFrame(
        {"START_TIME": times("2026-10-03 14:00", "2026-10-05 13:30", "2026-10-05 23:30")}
    )
    out, report = feature_engineering(df, NONE)
    assert out["START_TIME_HOUR"].tolist() == [14, 13, 23]
    assert out["START_TIME_WEEKDAY"].tolist() == [5, 0, 0]  # Saturday, Monday
    assert out["START_TIME_IS_WEEKEND"].tolist() == [True, False, False]
    assert out["START_TIME_IS_BUSINESS_HOURS"].tolist() == [False, True, False]
    assert out["START_TIME_MONTH"].tolist() == [10, 10, 10]
    ny, _ = feature_engineering(df, {**NONE, "timezone": "America/New_York"})
    assert ny["START_TIME_HOUR"].tolist() == [10, 9, 19]
    assert report["features_added"][0] == "START_TIME_HOUR"


def test_durations_ratios_and_logs():
    df = pd.DataFrame(
        {
            "START_TIME": times("2026-10-01 00:00", "2026-10-01 00:00"),
            "END_TIME": times("2026-10-01 00:00:02.5", "2026-10-01 00:01"),
            "BYTES_SCANNED": [100.0, 50.0],
            "EXECUTION_TIME": [10.0, 0.0],
        }
    )
    config = {**NONE, "time_features": [], "durations": {"DURATION_S": ["START_TIME", "END_TIME"]},
              "ratios": {"BYTES_PER_MS": ["BYTES_SCANNED", "EXECUTION_TIME"]},
              "log_columns": ["BYTES_SCANNED"]}  # fmt: skip
    out, report = feature_engineering(df, config)
    assert out["DURATION_S"].tolist() == [2.5, 60.0]
    assert out["BYTES_PER_MS"].iloc[0] == 10.0
    assert np.isnan(out["BYTES_PER_MS"].iloc[1])  # divided by zero: missing, not inf
    assert out["LOG_BYTES_SCANNED"].tolist() == pytest.approx(np.log1p([100.0, 50.0]).tolist())
    assert report["features_added"] == ["DURATION_S", "BYTES_PER_MS", "LOG_BYTES_SCANNED"]


def test_time_since_previous_follows_time_not_row_order():
    df = pd.DataFrame(
        {
            "START_TIME": times(
                "2026-10-01 10:00", "2026-10-01 09:00", "2026-10-01 11:00", "2026-10-01 12:00", None
            ),
            "USER_NAME": ["a", "a", "b", "a", "a"],
        }
    )
    out, _ = feature_engineering(df, {**NONE, "time_features": [], "since_previous": ["USER_NAME"]})
    got = out["SECONDS_SINCE_PREVIOUS_BY_USER_NAME"].tolist()
    assert got[0] == 3600.0
    assert np.isnan(got[1])
    assert np.isnan(got[2])
    assert got[3] == 7200.0
    assert np.isnan(got[4])


def test_rolling_statistics_per_group_in_time_order():
    df = pd.DataFrame(
        {
            "START_TIME": times(
                "2026-10-01 03:00", "2026-10-01 01:00", "2026-10-01 02:00", "2026-10-01 01:30"
            ),
            "WAREHOUSE_NAME": ["w", "w", "w", "v"],
            "EXECUTION_TIME": [30.0, 10.0, 20.0, 99.0],
        }
    )
    config = {**NONE, "time_features": [], "rolling": [
        {"group": "WAREHOUSE_NAME", "column": "EXECUTION_TIME", "window": 2, "stats": ["mean", "max"]}]}  # fmt: skip
    out, _ = feature_engineering(df, config)
    assert out["EXECUTION_TIME_ROLLING_MEAN_2_BY_WAREHOUSE_NAME"].tolist() == [
        25.0,
        10.0,
        15.0,
        99.0,
    ]
    assert out["EXECUTION_TIME_ROLLING_MAX_2_BY_WAREHOUSE_NAME"].tolist() == [
        30.0,
        10.0,
        20.0,
        99.0,
    ]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", None]), st.one_of(st.none(), st.integers(0, 4)),
                  st.integers(0, 9)),
        min_size=1, max_size=40,
    ),
    window=st.integers(1, 4),
)  # fmt: skip
def test_group_histories_match_plain_pandas_with_ties_and_gaps(rows, window):
    # given: few times, so many ties within a group; null groups and missing times
    df = pd.DataFrame(
        {
            "START_TIME": pd.Series(
                [None if m is None else pd.Timestamp("2026-10-01", tz="UTC") + pd.Timedelta(minutes=m)
                 for _, m, _ in rows], dtype="datetime64[us, UTC]"),
            "USER_NAME": [g for g, _, _ in rows],
            "EXECUTION_TIME": [float(v) for _, _, v in rows],
        }
    )  # fmt: skip
    config = {**NONE, "time_features": [], "since_previous": ["USER_NAME"], "rolling": [
        {"group": "USER_NAME", "column": "EXECUTION_TIME", "window": window, "stats": ["sum"]}]}  # fmt: skip
    # when
    out, _ = feature_engineering(df, config)
    # then: each group in time order, ties in table order, as a stable sort in plain pandas
    known = df[df["USER_NAME"].notna() & df["START_TIME"].notna()]
    ordered = known.sort_values("START_TIME", kind="stable")
    groups = ordered.groupby("USER_NAME", sort=False)
    since = groups["START_TIME"].diff().dt.total_seconds().reindex(df.index)
    rolled = groups["EXECUTION_TIME"].rolling(window, min_periods=1).sum()
    rolled = rolled.reset_index(level=0, drop=True).reindex(df.index)
    np.testing.assert_array_equal(out["SECONDS_SINCE_PREVIOUS_BY_USER_NAME"].to_numpy(), since)
    np.testing.assert_array_equal(
        out[f"EXECUTION_TIME_ROLLING_SUM_{window}_BY_USER_NAME"].to_numpy(), rolled
    )


def test_frequency_and_one_hot_with_other():
    df = pd.DataFrame({"Q": ["s", "s", "s", "i", "i", "m", None]})
    config = {
        **NONE,
        "time_features": [],
        "frequency": ["Q"],
        "one_hot": ["Q"],
        "max_categories": 2,
    }
    out, report = feature_engineering(df, config)
    assert out["Q_FREQUENCY"].tolist()[:6] == pytest.approx([3 / 7] * 3 + [2 / 7] * 2 + [1 / 7])
    assert np.isnan(out["Q_FREQUENCY"].iloc[6])
    assert out["Q_IS_S"].tolist() == [True] * 3 + [False] * 4
    assert out["Q_IS_OTHER"].tolist() == [False] * 5 + [True, False]
    assert report["features_added"] == ["Q_FREQUENCY", "Q_IS_I", "Q_IS_S", "Q_IS_OTHER"]


def test_defaults_on_cleaned_query_history():
    out, report = feature_engineering(clean_pool())
    assert "SECONDS_SINCE_PREVIOUS_BY_USER_NAME" in out.columns
    assert "WAREHOUSE_SIZE_IS_LARGE" in out.columns
    assert len(report["features_added"]) > 20
    assert report["rows"] == len(clean_pool())


def test_empty_and_one_row():
    empty = clean_pool().iloc[:0]
    out, report = feature_engineering(empty)
    assert len(out) == 0
    assert report["rows"] == 0
    assert "START_TIME_HOUR" in out.columns
    out, _ = feature_engineering(clean_pool().iloc[:1])
    assert np.isnan(out["SECONDS_SINCE_PREVIOUS_BY_USER_NAME"].iloc[0])


def test_columns_named_by_the_user_must_exist_and_have_the_right_type():
    df = pd.DataFrame({"T": ["2026-01-01"]})
    _out, report = feature_engineering(df)  # defaults whose columns are absent are skipped
    assert report["features_added"] == []
    with pytest.raises(StageInputError, match="'T' is str, not a timestamp; run data_cleaning"):
        feature_engineering(df, {"time_column": "T"})
    with pytest.raises(StageInputError, match="column 'NOPE' named in 'log_columns'"):
        feature_engineering(df, {"log_columns": ["NOPE"]})


def test_bad_config():
    with pytest.raises(StageConfigError, match="unknown timezone 'Mars/Base'"):
        feature_engineering(pd.DataFrame(), {"timezone": "Mars/Base"})
    with pytest.raises(StageConfigError, match="rolling window must be an integer >= 1"):
        feature_engineering(
            pd.DataFrame(), {"rolling": [{"group": "a", "column": "b", "window": 0}]}
        )
    with pytest.raises(StageConfigError, match="rolling stat 'median'"):
        feature_engineering(
            pd.DataFrame(), {"rolling": [{"group": "a", "column": "b", "stats": ["median"]}]}
        )
    with pytest.raises(StageConfigError, match="business_hours"):
        feature_engineering(pd.DataFrame(), {"business_hours": [18, 9]})


def test_mixed_type_groups_are_kept_apart_by_type():
    # given an object group column where 1, 1.0, True and "1" are four different values
    df = pd.DataFrame(
        {
            "START_TIME": times(*[f"2026-10-01 0{h}:00" for h in range(5)]),
            "G": pd.Series([1, 1.0, True, "1", 1], dtype=object),
        }
    )
    out, _ = feature_engineering(df, {**NONE, "time_features": [], "since_previous": ["G"]})
    # then only the last row has an earlier row of its own group (the first 1)
    got = out["SECONDS_SINCE_PREVIOUS_BY_G"].tolist()
    assert np.isnan(got[:4]).all()
    assert got[4] == 4 * 3600.0


def test_unhashable_group_values_are_one_line():
    df = pd.DataFrame({"START_TIME": times("2026-10-01 00:00"), "G": [{"a": 1}]})
    with pytest.raises(StageInputError, match="column 'G' holds a dict value"):
        feature_engineering(df, {**NONE, "time_features": [], "since_previous": ["G"]})


def test_rolling_names_may_hold_colons_and_repeat():
    # given group and column names with ':' and two specs on the same group, column and window
    df = pd.DataFrame(
        {
            "START_TIME": times("2026-10-01 01:00", "2026-10-01 02:00", "2026-10-01 03:00"),
            "w:1": ["a", "a", "b"],
            "v:x": [1.0, 3.0, 5.0],
        }
    )
    spec = {"group": "w:1", "column": "v:x", "window": 2}
    config = {**NONE, "time_features": [],
              "rolling": [{**spec, "stats": ["mean"]}, {**spec, "stats": ["max"]}]}  # fmt: skip
    out, report = feature_engineering(df, config)
    # then both specs give their features
    assert out["v:x_ROLLING_MEAN_2_BY_w:1"].tolist() == [1.0, 2.0, 5.0]
    assert out["v:x_ROLLING_MAX_2_BY_w:1"].tolist() == [1.0, 3.0, 5.0]
    assert report["features_added"] == ["v:x_ROLLING_MEAN_2_BY_w:1", "v:x_ROLLING_MAX_2_BY_w:1"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["x-1", "x_1", "y"], "one-hot values 'x-1' and 'x_1' of 'c' both make column 'c_IS_X_1'"),
        (["X 1", "x-1"], "one-hot values 'X 1' and 'x-1' of 'c' both make column 'c_IS_X_1'"),
        (["other", "other", "a", "b"], "one-hot value 'other' of 'c' makes column 'c_IS_OTHER'"),
    ],
)
def test_one_hot_values_that_make_one_column_are_refused(values, message):
    df = pd.DataFrame({"c": values})
    config = {**NONE, "time_features": [], "one_hot": ["c"], "max_categories": 2}
    with pytest.raises(StageConfigError, match=message):
        feature_engineering(df, config)


def test_empty_timezone_is_a_config_error():
    with pytest.raises(StageConfigError, match="unknown timezone ''"):
        feature_engineering(pd.DataFrame(), {"timezone": ""})
