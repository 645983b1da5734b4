"""data_aggregation: grouping sets, time buckets, metrics, the Snowflake cost view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.aggregation import data_aggregation
from stages.errors import StageConfigError, StageInputError
from tests.stagedata import clean_pool


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "START_TIME": pd.Series(
                pd.to_datetime(
                    [
                        "2026-10-05 01:00",
                        "2026-10-05 02:30",
                        "2026-10-06 01:00",
                        "2026-10-05 01:10",
                    ],
                    utc=True,
                )
            ).dt.as_unit("us"),
            "WAREHOUSE_NAME": ["A", "A", "A", "B"],
            "USER_NAME": ["u", "v", "u", "u"],
            "WAREHOUSE_SIZE": ["Large", "Large", "Large", "X-Small"],
            "EXECUTION_STATUS": ["SUCCESS", "FAIL", "SUCCESS", "SUCCESS"],
            "TOTAL_ELAPSED_TIME": [100.0, 300.0, 50.0, 10.0],
            "EXECUTION_TIME": [3_600_000.0, 1_800_000.0, 0.0, 3_600_000.0],
            "BYTES_SCANNED": [1.0, 2.0, 3.0, 4.0],
            "CREDITS_USED_CLOUD_SERVICES": [0.1, 0.2, 0.3, 0.4],
        }
    )


def test_default_cost_view():
    out, report = data_aggregation(frame())
    wh = out[out["GROUPING"] == "warehouse_day"].reset_index(drop=True)
    assert wh["WAREHOUSE_NAME"].tolist() == ["A", "A", "B"]
    assert wh["BUCKET"].dt.day.tolist() == [5, 6, 5]
    assert wh["QUERIES"].tolist() == [2, 1, 1]
    assert wh["FAILED_QUERIES"].tolist() == [1, 0, 0]
    assert wh["TOTAL_ELAPSED_MS"].tolist() == [400.0, 50.0, 10.0]
    assert wh["P95_ELAPSED_MS"].iloc[0] == pytest.approx(np.quantile([100.0, 300.0], 0.95))
    # one hour on Large is 8 credits, half an hour 4; one hour on X-Small is 1
    assert wh["CREDITS_COMPUTE_EST"].tolist() == pytest.approx([12.0, 0.0, 1.0])
    assert wh["USER_NAME"].isna().all()
    user = out[out["GROUPING"] == "user_day"]
    assert sorted(zip(user["USER_NAME"], user["QUERIES"], strict=True)) == [
        ("u", 1),
        ("u", 2),
        ("v", 1),
    ]
    assert report["groupings"] == {"warehouse_day": 3, "user_day": 3}


@pytest.mark.parametrize(("bucket", "groups"), [("hour", 3), ("day", 2), ("week", 1), ("none", 1)])
def test_time_buckets(bucket, groups):
    config = {"groupings": [{"name": "g", "by": ["WAREHOUSE_NAME"], "bucket": bucket}],
              "metrics": {"N": "count"}}  # fmt: skip
    out, _ = data_aggregation(frame()[frame()["WAREHOUSE_NAME"] == "A"], config)
    assert len(out) == groups
    if bucket == "week":
        assert out["BUCKET"].iloc[0] == pd.Timestamp("2026-10-05", tz="UTC")  # a Monday


def test_metrics_of_every_kind():
    metrics = {"N": "count", "S": "sum:BYTES_SCANNED", "M": "mean:BYTES_SCANNED",
               "LO": "min:BYTES_SCANNED", "HI": "max:BYTES_SCANNED", "MED": "median:BYTES_SCANNED",
               "P50": "p50:BYTES_SCANNED", "U": "nunique:USER_NAME",
               "F": "count_eq:EXECUTION_STATUS=FAIL"}  # fmt: skip
    config = {
        "groupings": [{"name": "all", "by": ["WAREHOUSE_NAME"], "bucket": "none"}],
        "metrics": metrics,
    }
    out, _ = data_aggregation(frame(), config)
    a = out.iloc[0]
    assert (a["N"], a["S"], a["M"], a["LO"], a["HI"], a["MED"], a["P50"], a["U"], a["F"]) == (
        3, 6.0, 2.0, 1.0, 3.0, 2.0, 2.0, 2, 1)  # fmt: skip


def test_on_cleaned_query_history():
    out, report = data_aggregation(clean_pool())
    assert set(out["GROUPING"]) == {"warehouse_day", "user_day"}
    assert out["QUERIES"].sum() == 2 * len(clean_pool())
    assert report["rows_in"] == len(clean_pool())


def test_empty_input_gives_empty_output_with_columns():
    out, report = data_aggregation(clean_pool().iloc[:0])
    assert len(out) == 0
    assert "QUERIES" in out.columns
    assert report["rows_out"] == 0


def test_bad_config_and_missing_columns():
    with pytest.raises(StageConfigError, match="metric 'X': aggregation 'avg'"):
        data_aggregation(frame(), {"metrics": {"X": "avg:BYTES_SCANNED"}})
    with pytest.raises(StageConfigError, match="bucket 'month'"):
        data_aggregation(frame(), {"groupings": [{"name": "g", "by": ["A"], "bucket": "month"}]})
    with pytest.raises(StageConfigError, match="grouping 'g' is declared twice"):
        data_aggregation(
            frame(), {"groupings": [{"name": "g", "by": ["A"]}, {"name": "g", "by": ["B"]}]}
        )
    with pytest.raises(StageInputError, match="grouping 'g' needs column 'REGION'"):
        data_aggregation(frame(), {"groupings": [{"name": "g", "by": ["REGION"]}]})
    with pytest.raises(StageInputError, match="metric 'X' needs column 'NOPE'"):
        data_aggregation(frame(), {"metrics": {"X": "sum:NOPE"}})
    with pytest.raises(StageInputError, match="no grouping can run"):
        data_aggregation(pd.DataFrame({"a": [1]}))


def at(*texts: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"START_TIME": pd.Series(pd.to_datetime(list(texts), utc=True)).dt.as_unit("us")}
    )


def buckets(df: pd.DataFrame, tz: str, bucket: str) -> pd.DataFrame:
    config = {"timezone": tz, "metrics": {"N": "count"},
              "groupings": [{"name": "g", "by": [], "bucket": bucket}]}  # fmt: skip
    out, _ = data_aggregation(df, config)
    assert str(out["BUCKET"].dtype) == f"datetime64[us, {tz}]"
    return out


def test_hour_buckets_keep_the_repeated_fall_back_hour_apart():
    # given New York's 01:00-02:00 twice on 2024-11-03: first as EDT, then as EST
    df = at("2024-11-03 05:30", "2024-11-03 05:59", "2024-11-03 06:30", "2024-11-03 07:10")
    # when bucketed by hour
    out = buckets(df, "America/New_York", "hour")
    # then each occurrence of the hour is its own bucket, starting at its own instant
    assert out["BUCKET"].dt.tz_convert("UTC").tolist() == [
        pd.Timestamp(t, tz="UTC")
        for t in ("2024-11-03 05:00", "2024-11-03 06:00", "2024-11-03 07:00")
    ]
    assert out["N"].tolist() == [2, 1, 1]


def test_day_bucket_where_midnight_does_not_exist():
    # given Santiago, where 2024-09-08 starts at 01:00 (clocks skip midnight)
    out = buckets(at("2024-09-08 12:00", "2024-09-07 12:00"), "America/Santiago", "day")
    # then the day starts at its first instant
    assert out["BUCKET"].tolist() == [
        pd.Timestamp("2024-09-07 00:00", tz="America/Santiago"),
        pd.Timestamp("2024-09-08 01:00", tz="America/Santiago"),
    ]


def test_day_bucket_where_midnight_happens_twice_is_one_day():
    # given Havana, where clocks go back from 01:00 to 00:00 on 2024-11-03
    df = at("2024-11-03 04:30", "2024-11-03 05:30", "2024-11-03 06:30")
    out = buckets(df, "America/Havana", "day")
    # then the whole day is one bucket, starting at the first midnight
    assert out["BUCKET"].tolist() == [pd.Timestamp("2024-11-03 04:00", tz="UTC")]
    assert out["N"].tolist() == [3]


def test_week_bucket_starts_at_local_monday_midnight_across_dst():
    # given Jerusalem, where DST starts on Friday 2024-03-29: a Monday and a Saturday
    times = pd.to_datetime(["2024-03-25 12:00", "2024-03-30 12:00"]).tz_localize("Asia/Jerusalem")
    df = pd.DataFrame({"START_TIME": pd.Series(times.tz_convert("UTC").as_unit("us"))})
    out = buckets(df, "Asia/Jerusalem", "week")
    # then both are in the week of Monday 00:00 local time
    assert out["BUCKET"].tolist() == [pd.Timestamp("2024-03-25 00:00", tz="Asia/Jerusalem")]
    assert out["N"].tolist() == [2]


@pytest.mark.parametrize(
    ("column", "metric", "message"),
    [
        (
            "WAREHOUSE_NAME",
            "sum",
            "metric 'X': sum needs a numeric column, 'WAREHOUSE_NAME' is str",
        ),
        ("WAREHOUSE_NAME", "mean", "mean needs a numeric column"),
        ("CAT", "p95", "metric 'X': p95 needs a numeric column, 'CAT' is category"),
        ("CAT", "min", "metric 'X': min cannot run on 'CAT' \\(category\\)"),
    ],
)
def test_a_metric_on_a_column_of_the_wrong_type_is_one_line(column, metric, message):
    df = frame().assign(CAT=pd.Categorical(frame()["USER_NAME"]))
    config = {
        "groupings": [{"name": "g", "by": ["USER_NAME"]}],
        "metrics": {"X": f"{metric}:{column}"},
    }
    with pytest.raises(StageInputError, match=message):
        data_aggregation(df, config)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"metrics": {"WAREHOUSE_NAME": "count"}},
            "metric name 'WAREHOUSE_NAME' is taken by a key",
        ),
        ({"metrics": {"BUCKET": "count"}}, "metric name 'BUCKET' is taken by a key"),
        ({"metrics": {"GROUPING": "count"}}, "metric name 'GROUPING' is taken by a key"),
        ({"groupings": [{"name": "g", "by": ["A", "A"]}]}, "grouping 'g' names 'A' twice in 'by'"),
        ({"groupings": [{"name": "g", "by": ["BUCKET"]}]}, "'by' may not name GROUPING or BUCKET"),
        ({"timezone": ""}, "unknown timezone ''"),
    ],
)
def test_names_that_would_collide_in_the_output_are_refused(config, message):
    with pytest.raises(StageConfigError, match=message):
        data_aggregation(frame(), config)


def test_column_names_that_are_not_text_give_a_one_line_error():
    with pytest.raises(StageInputError, match=r"no grouping can run .*\(columns: 0, 1\)"):
        data_aggregation(pd.DataFrame({0: [1], 1: [2]}))
