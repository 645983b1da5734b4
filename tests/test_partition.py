"""The partition contract: every built-in stage over N partitions equals the whole-table call."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages import codec
from stages.aggregation import STAGE as AGGREGATION
from stages.cleaning import STAGE as CLEANING
from stages.errors import StageConfigError, StageRuleError
from stages.features import STAGE as FEATURES
from stages.features import _by_time as features_by_time
from stages.partition import concat, run_partitioned, split, split_at
from stages.spec import Partitioning, Stage
from stages.validation import STAGE as VALIDATION
from tests.stagedata import clean_pool, pick, raw_pool

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def table_and_cuts(draw: st.DrawFn, pool_size: int = 80) -> tuple[list[int], list[int]]:
    rows = draw(st.lists(st.integers(0, pool_size - 1), min_size=0, max_size=120))
    parts = draw(st.integers(1, 8))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), min_size=parts - 1, max_size=parts - 1)))
    return rows, cuts


def outcome(call):
    """(frame, report) or the failure's message and report, so failures compare too."""
    try:
        return call()
    except StageRuleError as exc:
        return str(exc), exc.report


def whole(stage: Stage, df: pd.DataFrame, config=None):
    return outcome(lambda: stage(df, config))


def by_parts(stage: Stage, parts: list[pd.DataFrame], config=None, *, through_codec=True):
    def run():
        runner = codec_stage(stage) if through_codec else stage
        outputs, report = run_partitioned(runner, parts, config)
        return concat(outputs), report

    return outcome(run)


def codec_stage(stage: Stage) -> Stage:
    """The same stage with partials and stats sent through the codec, as between processes."""
    if stage.partitioning is not Partitioning.GLOBAL_STATS:
        return stage

    def map_(df, cfg):
        out, partial = stage.map(df, cfg)
        return out, codec.unpack(codec.pack(partial))

    def reduce_(partials, cfg):
        return codec.unpack(codec.pack(stage.reduce(partials, cfg)))

    return Stage(
        name=stage.name,
        func=stage.func,
        partitioning=stage.partitioning,
        parse=stage.parse,
        map=map_,
        reduce=reduce_,
        apply=stage.apply,
        report=stage.report,
        columns=stage.columns,
    )


def assert_same(expected, got):
    if isinstance(expected[0], str):
        assert got[0] == expected[0]
        assert got[1] == expected[1]
        return
    assert isinstance(got[0], pd.DataFrame), got
    pd.testing.assert_frame_equal(got[0], expected[0], check_exact=True)
    assert got[1] == expected[1]


@pytest.mark.parametrize(
    ("stage", "pool"),
    [
        (CLEANING, raw_pool),
        (FEATURES, clean_pool),
        (AGGREGATION, clean_pool),
        (VALIDATION, raw_pool),
        (VALIDATION, clean_pool),
    ],
    ids=["cleaning", "features", "aggregation", "validation-raw", "validation-clean"],
)
@SETTINGS
@given(drawn=table_and_cuts())
def test_partitions_give_the_whole_table_result(stage, pool, drawn):
    # given a table with duplicates anywhere, cut at random places into 1..8 partitions
    rows, cuts = drawn
    df = pick(pool(), rows)
    # when the stage runs whole and by partitions (partials and stats through the codec)
    expected = whole(stage, df)
    got = by_parts(stage, split_at(df, cuts))
    # then rows, values, dtypes and the report are exactly the same
    assert_same(expected, got)


@SETTINGS
@given(
    drawn=table_and_cuts(),
    method=st.sampled_from(["iqr", "zscore"]),
    action=st.sampled_from(["clip", "flag", "drop"]),
    impossible=st.sampled_from(["null", "clip", "drop", "flag"]),
)
def test_cleaning_policies_partition_exactly(drawn, method, action, impossible):
    # given every outlier and impossible-value policy, and mode/mean imputation
    rows, cuts = drawn
    df = pick(raw_pool(), rows)
    config = {
        "outlier_method": method,
        "outlier_action": action,
        "outlier_scale": "linear" if method == "zscore" else "log",
        "outliers": ["EXECUTION_TIME", "BYTES_SCANNED"],
        "impossible": impossible,
        "missing": {
            "QUERY_ID": "drop",
            "USER_NAME": "mode",
            "BYTES_SCANNED": "mean",
            "WAREHOUSE_NAME": "flag",
        },
    }
    # then partitions agree with the whole table
    assert_same(whole(CLEANING, df, config), by_parts(CLEANING, split_at(df, cuts), config))


@SETTINGS
@given(drawn=table_and_cuts(), window=st.integers(1, 6), max_categories=st.integers(1, 4))
def test_features_history_and_encodings_partition_exactly(drawn, window, max_categories):
    # given per-group history with any window and one-hot with an OTHER column
    rows, cuts = drawn
    df = pick(clean_pool(), rows)
    config = {
        "rolling": [
            {
                "group": "USER_NAME",
                "column": "BYTES_SCANNED",
                "window": window,
                "stats": ["mean", "std", "min", "sum"],
            }
        ],
        "one_hot": ["USER_NAME", "QUERY_TYPE"],
        "max_categories": max_categories,
        "timezone": "America/New_York",
    }
    assert_same(whole(FEATURES, df, config), by_parts(FEATURES, split_at(df, cuts), config))


@SETTINGS
@given(
    times=st.lists(st.integers(-3, 3), min_size=0, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=5),
)
def test_the_partitions_time_orders_merge_into_the_whole_table_s(times, cuts):
    # given times with many ties, cut anywhere, each partition ordered by its map
    time = np.array(times, dtype=np.int64)
    edges = [0, *sorted({c for c in cuts if 0 < c < len(time)}), len(time)]
    partials = [
        {"by_time": np.argsort(time[a:b], kind="stable")} for a, b in itertools.pairwise(edges)
    ]
    bounds = np.array(edges, dtype=np.int64)
    # when the reduce merges them, then it is the whole table's stable sort (ties: table order)
    merged = features_by_time(time, partials, bounds)
    np.testing.assert_array_equal(merged, np.argsort(time, kind="stable"))
    # and a partial of an older map, without its order, is sorted in the reduce
    older = [{} for _ in partials]
    np.testing.assert_array_equal(
        features_by_time(time, older, bounds), np.argsort(time, kind="stable")
    )


def test_partials_of_an_older_features_map_reduce_to_the_same_stats():
    # given the features maps of a table in three parts, and the same partials as an older map
    # wrote them: the times in each history entry, none beside the entries
    df = pick(clean_pool(), list(range(80)) * 2)
    cfg = FEATURES.config({"since_previous": ["USER_NAME", "WAREHOUSE_NAME"]})
    partials = [FEATURES.map(part, cfg)[1] for part in split_at(df, [50, 110])]
    older = [
        {**{k: v for k, v in p.items() if k != "time"},
         "history": [{**entry, "time": p["time"]} for entry in p["history"]]}
        for p in partials
    ]  # fmt: skip
    assert partials[0]["history"]
    assert "time" not in partials[0]["history"][0]
    # when each is reduced, then the stats are the same
    new, old = FEATURES.reduce(partials, cfg), FEATURES.reduce(older, cfg)
    assert new["per_row"].keys() == old["per_row"].keys()
    assert new["per_row"]
    for name in new["per_row"]:
        for a, b in zip(new["per_row"][name], old["per_row"][name], strict=True):
            np.testing.assert_array_equal(a, b)


def test_row_local_custom_stage_runs_per_partition():
    # given a row-local user stage
    from stages.registry import stage

    @stage("double", partitioning="row_local")
    def double(df, config):
        return df.assign(X2=df["X"] * 2), {"rows": len(df)}

    df = pd.DataFrame({"X": np.arange(10)})
    # when it runs over 3 partitions
    outputs, report = run_partitioned(double, split(df, 3))
    # then it equals the whole call, and the reports add up
    pd.testing.assert_frame_equal(concat(outputs), double(df)[0])
    assert report == {"rows": 10}
    assert len(outputs) == 3


def test_global_stage_reads_only_its_columns():
    df = clean_pool()
    need = AGGREGATION.columns(AGGREGATION.config(None), list(df.columns))
    assert "QUERY_TEXT" not in need
    assert {"WAREHOUSE_NAME", "USER_NAME", "START_TIME", "TOTAL_ELAPSED_TIME"} <= set(need)


def test_split_sizes_and_bad_cuts():
    df = pd.DataFrame({"a": range(10)})
    assert [len(p) for p in split(df, 3)] == [3, 4, 3]
    assert [len(p) for p in split(df, 12)].count(0) == 2
    with pytest.raises(ValueError, match="must ascend"):
        split_at(df, [5, 2])
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        split(df, 0)


def hours(n: int) -> pd.Series:
    return pd.Series(pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC").as_unit("us"))


MIXED = pd.Series(["a"] * 20 + [1, 1.0, True, "1"], dtype=object)
NO_FEATURES = {"one_hot": [], "frequency": [], "since_previous": [], "rolling": []}
CASES = {
    "unique over mixed types": (
        VALIDATION,
        pd.DataFrame({"K": MIXED}),
        {"rules": [{"name": "u", "rule": "unique", "columns": ["K"], "severity": "warning"}]},
    ),
    "duplicates over mixed types": (CLEANING, pd.DataFrame({"X": MIXED}), {"trim_strings": False}),
    "groups over mixed types": (
        FEATURES,
        pd.DataFrame({"START_TIME": hours(24), "G": MIXED}),
        {**NO_FEATURES, "since_previous": ["G"]},
    ),
    "expression failing in one partition": (
        VALIDATION,
        pd.DataFrame({"X": pd.Series([1, -1, 2, 3, "a", -5], dtype=object)}),
        {"rules": [{"name": "p", "rule": "expression", "expr": "X > 0", "severity": "warning"}]},
    ),
    "frequency of ints and booleans": (
        FEATURES,
        pd.DataFrame({"N": [1, 2, 2, 3] * 3, "B": [True, False, True] * 4}),
        {**NO_FEATURES, "frequency": ["N", "B"], "one_hot": ["N"]},
    ),
    "frequency of the text '__ndarray__'": (
        FEATURES,
        pd.DataFrame({"S": ["a", "__ndarray__", "b", "data"] * 3}),
        {**NO_FEATURES, "frequency": ["S"]},
    ),
    "mode of a timestamp column": (
        CLEANING,
        pd.DataFrame({"END_TIME": ["2024-01-01", None, "2024-01-02", "2024-01-02"] * 3}),
        {"missing": {"END_TIME": "mode"}},
    ),
    "rolling names with ':' twice": (
        FEATURES,
        pd.DataFrame({"START_TIME": hours(12), "g:1": list("aab") * 4, "v": np.arange(12.0)}),
        {**NO_FEATURES, "rolling": [{"group": "g:1", "column": "v", "window": 2},
                                    {"group": "g:1", "column": "v", "window": 2, "stats": ["max"]}]},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("cuts", [[1], [4, 21], [2, 5, 9, 22]])
def test_awkward_values_partition_exactly_through_the_codec(case, cuts):
    # given a table that used to split differently from the whole
    stage, df, config = CASES[case]
    # when it runs whole and by partitions, partials and stats through the codec
    expected = whole(stage, df, config)
    got = by_parts(stage, split_at(df, [c for c in cuts if c <= len(df)]), config)
    # then the results are the same
    assert_same(expected, got)


@pytest.mark.parametrize("cuts", [[1.5], ["2"], [True], "3"])
def test_cuts_must_be_whole_row_positions(cuts):
    with pytest.raises(StageConfigError, match="partition cuts must be whole row positions"):
        split_at(pd.DataFrame({"a": range(5)}), cuts)
