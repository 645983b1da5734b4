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
