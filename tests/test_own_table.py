"""The same four stages on a table that is not query history, with a small config each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.errors import StageInputError, StageRuleError
from stages.pipeline import build, run

CONFIGS = {
    "data_cleaning": {
        "column_case": "lower",
        "timestamps": ["created_at"],
        "numerics": ["amount"],
        "categoricals": ["region"],
        "case_columns": ["region"],
        "category_case": "lower",
        "key": ["order_id"],
        "missing": {
            "order_id": "drop",
            "created_at": "drop",
            "amount": "median",
            "region": "constant",
        },
        "fill_values": {"region": "unknown"},
        "non_negative": ["amount"],
        "ordered_times": [],
        "outliers": ["amount"],
    },
    "feature_engineering": {
        "time_column": "created_at",
        "durations": {},
        "ratios": {},
        "log_columns": ["amount"],
        "since_previous": ["customer"],
        "rolling": [{"group": "customer", "column": "amount", "window": 3}],
        "frequency": ["region"],
        "one_hot": ["region"],
    },
    "data_aggregation": {
        "time_column": "created_at",
        "groupings": [{"name": "region_day", "by": ["region"], "bucket": "day"}],
        "metrics": {
            "orders": "count",
            "revenue": "sum:amount",
            "p90_amount": "p90:amount",
            "customers": "nunique:customer",
        },
    },
    "data_validation": {
        "rules": [
            {"name": "has_rows", "rule": "row_count", "min": 1},
            {"name": "revenue_positive", "rule": "range", "column": "revenue", "min": 0},
            {
                "name": "known_region",
                "rule": "allowed",
                "column": "region",
                "values": ["eu", "us", "apac", "unknown"],
                "severity": "warning",
            },
        ]
    },
}


def orders() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    n = 400
    frame = pd.DataFrame(
        {
            "Order ID": [f"o{i}" for i in range(n)],
            "Created At": [f"2026-11-{1 + i % 20:02d}T{i % 24:02d}:00:00Z" for i in range(n)],
            "Customer": rng.choice(["ann", "bob", "cho"], n),
            "Region": rng.choice([" EU", "us ", "apac", None], n),
            "Amount": rng.gamma(2, 30, n).round(2).astype(str),
        }
    )
    frame.loc[5, "Amount"] = "-4"
    frame.loc[7, "Amount"] = "n/a"
    frame.loc[9] = frame.loc[8]  # an exact duplicate
    return frame


def test_an_orders_table_gives_meaningful_results():
    # given an orders table and a short config per stage
    pipeline = build(configs=CONFIGS)
    # when the default four-stage chain runs on it
    frames, reports = run(pipeline, orders())
    # then cleaning normalised, coerced, de-duplicated and filled
    clean = reports["data_cleaning"]
    assert clean["renamed_columns"] == 5
    assert clean["exact_duplicates_removed"] == 1
    assert clean["columns"]["amount"]["impossible"] == 1
    assert clean["columns"]["amount"]["unparseable"] == 1
    assert clean["columns"]["region"]["trimmed"] > 0
    # features came from the configured columns
    added = reports["feature_engineering"]["features_added"]
    assert "SECONDS_SINCE_PREVIOUS_BY_customer" in added
    assert "region_IS_eu".upper() in {a.upper() for a in added}
    # and the cost-style view is per region per day
    result = frames["data_validation"]
    assert set(result["region"].astype(str)) == {"eu", "us", "apac", "unknown"}
    assert result["orders"].sum() == 399
    assert (result["revenue"] > 0).all()
    assert reports["data_validation"]["passed"]


def test_the_snowflake_defaults_do_not_fail_on_a_foreign_table():
    # without config, the defaults whose columns are absent are skipped; aggregation says why
    # it cannot run rather than guessing
    with pytest.raises(StageInputError, match="no grouping can run on these columns"):
        run(build(), orders())
    _frames, reports = run(build(["data_cleaning", "data_validation"]), orders())
    assert reports["data_validation"]["passed"]
    assert reports["data_cleaning"]["renamed_columns"] == 5


def test_a_failing_rule_on_an_own_table_names_it():
    configs = {**CONFIGS, "data_validation": {"rules": [
        {"name": "big_orders_only", "rule": "range", "column": "revenue", "min": 1e9}]}}  # fmt: skip
    with pytest.raises(StageRuleError, match="big_orders_only"):
        run(build(configs=configs), orders())
