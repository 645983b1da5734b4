"""data_cleaning on generated query history and on the edge cases users hit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from stages.cleaning import data_cleaning
from stages.errors import StageConfigError, StageInputError
from stages.sample import DIRT_RATES, SCHEMA, generate

N = 20_000


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return pd.concat(list(generate(N, seed=3)), ignore_index=True)


@pytest.fixture(scope="module")
def cleaned(sample):
    return data_cleaning(sample)


def near(count: int, rate: float, n: int = N) -> bool:
    expected = rate * n
    return abs(count - expected) <= 5 * np.sqrt(expected) + 3


def test_generated_data_comes_out_clean(cleaned):
    out, report = cleaned
    # then types are one per role
    assert str(out["START_TIME"].dtype) == "datetime64[us, UTC]"
    assert str(out["END_TIME"].dtype) == "datetime64[us, UTC]"
    for column in ("TOTAL_ELAPSED_TIME", "BYTES_SCANNED", "ROWS_PRODUCED"):
        assert out[column].dtype == "float64"
    assert isinstance(out["WAREHOUSE_NAME"].dtype, pd.CategoricalDtype)
    # and the dirt is gone
    assert out["QUERY_ID"].is_unique
    assert out["START_TIME"].notna().all()
    assert (out["TOTAL_ELAPSED_TIME"] >= 0).all()
    assert (out["BYTES_SCANNED"] >= 0).all()
    assert out["BYTES_SCANNED"].notna().all()
    names = set(out["WAREHOUSE_NAME"].cat.categories)
    assert names == {"COMPUTE_WH", "ETL_WH", "BI_WH", "DS_WH", "ADHOC_WH", "UNKNOWN"}
    assert report["rows_out"] == len(out)


def test_report_counts_match_the_injected_dirt(cleaned):
    _, report = cleaned
    cols = report["columns"]
    assert near(cols["START_TIME"]["unparseable"], DIRT_RATES["unparseable_start_time"])
    assert cols["START_TIME"]["dropped_missing"] == cols["START_TIME"]["unparseable"]
    assert near(cols["ROWS_PRODUCED"]["unparseable"], DIRT_RATES["rows_produced_not_a_number"])
    assert near(cols["TOTAL_ELAPSED_TIME"]["impossible"], DIRT_RATES["negative_elapsed_time"])
    assert near(cols["END_TIME"]["impossible"], DIRT_RATES["end_before_start"])
    assert near(cols["WAREHOUSE_NAME"]["trimmed"], DIRT_RATES["messy_warehouse_name"])
    assert near(report["exact_duplicates_removed"], DIRT_RATES["exact_duplicate"])
    assert near(report["key_duplicates_removed"], DIRT_RATES["duplicate_query_id"])
    assert report["rows_in"] == N
    assert "WAREHOUSE_SIZE" not in cols  # its values are already canonical


def test_duplicates_keep_the_first_occurrence():
    df = pd.DataFrame({"QUERY_ID": ["a", "b", "a", "b", "c"], "EXECUTION_TIME": [1, 2, 1, 99, 3]})
    out, report = data_cleaning(df, {"outliers": []})
    assert out["QUERY_ID"].tolist() == ["a", "b", "c"]
    assert out["EXECUTION_TIME"].tolist() == [1.0, 2.0, 3.0]
    assert report["exact_duplicates_removed"] == 1
    assert report["key_duplicates_removed"] == 1


def test_median_mode_and_constant_fills_use_the_kept_rows():
    df = pd.DataFrame(
        {
            "QUERY_ID": ["a", "b", "c", "d", "d"],
            "BYTES_SCANNED": [1.0, 2.0, None, 10.0, 1000.0],  # the last row is a key duplicate
            "USER_NAME": ["x", None, "y", "y", "z"],
        }
    )
    config = {"missing": {"BYTES_SCANNED": "median", "USER_NAME": "mode"}, "outliers": []}
    out, report = data_cleaning(df, config)
    assert out["BYTES_SCANNED"].tolist() == [1.0, 2.0, 2.0, 10.0]
    assert out["USER_NAME"].tolist() == ["X", "Y", "Y", "Y"]
    assert report["fill_values"] == {"BYTES_SCANNED": 2.0, "USER_NAME": "Y"}
    assert report["columns"]["BYTES_SCANNED"] == {"filled_median": 1}


@pytest.mark.parametrize(
    ("policy", "values", "flag"),
    [
        ("null", [5.0, 0.0, 5.0], None),  # nulled, then the median fill
        ("clip", [5.0, 0.0, 5.0], None),
        ("drop", [5.0, 5.0], None),
        ("flag", [5.0, -3.0, 5.0], [False, True, False]),
    ],
)
def test_impossible_values_by_policy(policy, values, flag):
    df = pd.DataFrame({"QUERY_ID": ["a", "b", "c"], "TOTAL_ELAPSED_TIME": [5, -3, 5]})
    config = {"impossible": policy, "missing": {"TOTAL_ELAPSED_TIME": "median"}, "outliers": []}
    out, report = data_cleaning(df, config)
    if policy == "null":
        values = [5.0, 5.0, 5.0]
    assert out["TOTAL_ELAPSED_TIME"].tolist() == values
    assert report["columns"]["TOTAL_ELAPSED_TIME"]["impossible"] == 1
    if flag:
        assert out["TOTAL_ELAPSED_TIME_INVALID"].tolist() == flag


@pytest.mark.parametrize("action", ["clip", "flag", "drop"])
def test_outliers_by_action(action):
    values = [10.0, 11, 12, 10, 11, 12, 10, 11, 5000]
    df = pd.DataFrame({"QUERY_ID": [str(i) for i in range(9)], "EXECUTION_TIME": values})
    config = {"outlier_action": action, "outlier_scale": "linear", "outlier_threshold": 1.5}
    out, report = data_cleaning(df, config)
    _lo, hi = report["outlier_bounds"]["EXECUTION_TIME"]
    assert 12 <= hi < 5000
    assert report["columns"]["EXECUTION_TIME"]["outliers"] == 1
    if action == "clip":
        assert out["EXECUTION_TIME"].iloc[-1] == hi
    elif action == "flag":
        assert out["EXECUTION_TIME_OUTLIER"].tolist() == [False] * 8 + [True]
    else:
        assert len(out) == 8


def test_mixed_timestamps_become_one_utc_type():
    # given naive and aware datetimes, ISO text with offsets, the export format and epochs
    aware = datetime(2026, 10, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    df = pd.DataFrame(
        {
            "QUERY_ID": list("abcdefgh"),
            "START_TIME": pd.Series(
                [
                    datetime(2026, 10, 1, 12, 0),  # noqa: DTZ001 - naive: taken as UTC
                    aware,
                    "2026-10-01T12:00:00Z",
                    "2026-10-01 12:00:00.000000 +0000",
                    1_790_856_000,  # epoch seconds
                    1_790_856_000_000,  # epoch milliseconds
                    "1790856000",
                    "13/45/2026",
                ],
                dtype=object,
            ),
        }
    )
    out, report = data_cleaning(df)
    noon = pd.Timestamp("2026-10-01 12:00", tz="UTC")
    assert out["START_TIME"].tolist() == [noon] * 7
    assert report["columns"]["START_TIME"] == {"unparseable": 1, "dropped_missing": 1}


def test_naive_datetime_column_is_taken_as_utc_and_aware_is_converted():
    df = pd.DataFrame(
        {
            "QUERY_ID": ["a", "b"],
            "START_TIME": pd.to_datetime(["2026-01-01 00:00", "2026-01-01 01:00"]),
            "END_TIME": pd.to_datetime(["2026-01-01 02:00", "2026-01-01 03:00"]).tz_localize(
                "Europe/Paris"
            ),
        }
    )
    out, _ = data_cleaning(df)
    assert out["START_TIME"].iloc[0] == pd.Timestamp("2026-01-01 00:00", tz="UTC")
    assert out["END_TIME"].iloc[0] == pd.Timestamp("2026-01-01 01:00", tz="UTC")


def test_empty_frame_keeps_its_columns_and_types():
    empty = SCHEMA.empty_table().to_pandas()
    out, report = data_cleaning(empty)
    assert len(out) == 0
    assert str(out["START_TIME"].dtype) == "datetime64[us, UTC]"
    assert report["rows_in"] == 0
    assert report["rows_out"] == 0
    out, _ = data_cleaning(pd.DataFrame())
    assert out.shape == (0, 0)


def test_one_row():
    one = next(generate(1, seed=5))
    out, report = data_cleaning(one)
    assert len(out) == report["rows_out"] <= 1


def test_all_null_column_does_not_stop_cleaning():
    df = pd.DataFrame({"QUERY_ID": ["a", "b"], "BYTES_SCANNED": [None, None]})
    out, report = data_cleaning(df)
    assert out["BYTES_SCANNED"].isna().all()
    assert "fill_values" in report
    assert "BYTES_SCANNED" not in report["fill_values"]


def test_unicode_is_trimmed_and_upper_cased():
    df = pd.DataFrame(
        {
            "QUERY_ID": ["a", "b"],
            "WAREHOUSE_NAME": ["  entrepôt_ü ", "倉庫"],
            "QUERY_TEXT": ["😀 ", "x"],
        }
    )
    out, report = data_cleaning(df)
    assert out["WAREHOUSE_NAME"].tolist() == ["ENTREPÔT_Ü", "倉庫"]
    assert out["QUERY_TEXT"].tolist() == ["😀", "x"]
    assert report["columns"]["QUERY_TEXT"] == {"trimmed": 1}


def test_column_of_the_wrong_type_is_coerced_and_counted():
    df = pd.DataFrame({"QUERY_ID": ["a", "b", "c"], "EXECUTION_TIME": ["12", " 7 ", "abc"]})
    out, report = data_cleaning(df, {"outliers": []})
    assert out["EXECUTION_TIME"].tolist()[:2] == [12.0, 7.0]
    assert np.isnan(out["EXECUTION_TIME"].iloc[2])
    assert report["columns"]["EXECUTION_TIME"]["unparseable"] == 1


def test_column_names_are_normalised():
    df = pd.DataFrame({" query id": ["a"], "Start-Time": ["2026-01-01T00:00:00Z"]})
    out, report = data_cleaning(df)
    assert list(out.columns[:2]) == ["QUERY_ID", "START_TIME"]
    assert report["renamed_columns"] == 2
    with pytest.raises(StageInputError, match="both normalise to 'A_B'"):
        data_cleaning(pd.DataFrame({"a b": [1], "A_B": [2]}))


def test_a_key_column_the_user_names_must_exist():
    df = pd.DataFrame({"ID": [1, 1, 2]})
    # the default key (QUERY_ID) is absent: no key de-duplication, no error
    out, _ = data_cleaning(df)
    assert len(out) == 2  # exact duplicates still go
    with pytest.raises(
        StageInputError, match="column 'ORDER_ID' named in 'key' is not in the data"
    ):
        data_cleaning(df, {"key": ["ORDER_ID"]})


def test_bad_config_is_refused_with_one_line():
    with pytest.raises(StageConfigError, match="unknown config key 'outlier'"):
        data_cleaning(pd.DataFrame(), {"outlier": "iqr"})
    with pytest.raises(StageConfigError, match="'outlier_action' must be one of"):
        data_cleaning(pd.DataFrame(), {"outlier_action": "explode"})
    with pytest.raises(StageConfigError, match=r"needs fill_values\['X'\]"):
        data_cleaning(pd.DataFrame(), {"missing": {"X": "constant"}})
    with pytest.raises(StageConfigError, match="must be a table"):
        data_cleaning(pd.DataFrame(), ["not", "a", "table"])


def test_input_frame_is_not_modified(sample):
    before = sample.copy()
    data_cleaning(sample.head(500))
    pd.testing.assert_frame_equal(sample, before)


def test_epoch_utc_reference():
    assert datetime.fromtimestamp(1_790_856_000, UTC) == datetime(2026, 10, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("values", "role", "dtype"),
    [
        (pd.Series(pd.date_range("2026-01-01", periods=2, tz="UTC")), "numerics", "datetime64"),
        (pd.Series(pd.to_timedelta([1, 2], unit="s")), "numerics", "timedelta64"),
        (pd.Series(pd.Categorical(["1", "2"])), "non_negative", "category"),
    ],
)
def test_a_time_or_category_column_named_as_numbers_is_refused(values, role, dtype):
    df = pd.DataFrame({"QUERY_ID": ["a", "b"], "T": values})
    with pytest.raises(
        StageInputError, match=f"column 'T' is {dtype}.*does not convert to numbers"
    ):
        data_cleaning(df, {role: ["T"], "outliers": []})


def test_constant_fill_into_a_categorical_column_not_listed_in_categoricals():
    # given an input categorical column that cleaning does not type itself
    df = pd.DataFrame({"QUERY_ID": ["a", "b"], "WAREHOUSE_NAME": pd.Categorical(["wh", None])})
    # when its missing value is filled with a constant
    out, report = data_cleaning(df, {"categoricals": []})
    # then the fill becomes a category
    assert out["WAREHOUSE_NAME"].tolist() == ["wh", "UNKNOWN"]
    assert list(out["WAREHOUSE_NAME"].cat.categories) == ["wh", "UNKNOWN"]
    assert report["columns"]["WAREHOUSE_NAME"] == {"filled_constant": 1}


def test_unhashable_cells_are_one_line():
    df = pd.DataFrame({"C": [{"a": 1}, {"a": 1}]})
    with pytest.raises(StageInputError, match="column 'C' holds a dict value"):
        data_cleaning(df, {"trim_strings": False})


def test_values_of_different_types_are_not_duplicates():
    df = pd.DataFrame({"X": pd.Series(["a", "a", 1, 1.0, True, "1"], dtype=object)})
    out, report = data_cleaning(df, {"trim_strings": False})
    assert out["X"].tolist() == ["a", 1, 1.0, True, "1"]
    assert report["exact_duplicates_removed"] == 1


def test_mode_fill_of_a_timestamp_column():
    df = pd.DataFrame(
        {"QUERY_ID": list("abcd"), "END_TIME": ["2026-01-02", None, "2026-01-02", "2026-01-01"]}
    )
    out, report = data_cleaning(df, {"missing": {"END_TIME": "mode"}})
    assert out["END_TIME"].tolist() == [pd.Timestamp("2026-01-02", tz="UTC")] * 3 + [
        pd.Timestamp("2026-01-01", tz="UTC")
    ]
    assert str(out["END_TIME"].dtype) == "datetime64[us, UTC]"
    assert report["fill_values"] == {"END_TIME": "2026-01-02T00:00:00+00:00"}
