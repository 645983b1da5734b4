"""data_validation: every rule kind, severities, examples, and refusals."""

from __future__ import annotations

import pandas as pd
import pytest

from stages.errors import StageConfigError, StageInputError, StageRuleError
from stages.expr import Expression
from stages.validation import data_validation
from tests.stagedata import clean_pool, raw_pool


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": ["a1", "b2", "b2", "zz", None],
            "N": [1.0, -5.0, 3.0, 200.0, 4.0],
            "S": ["x", "y", "x", "q", "x"],
            "T": pd.Series(
                pd.to_datetime(
                    ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04", "2026-10-05"], utc=True
                )
            ),
        }
    )


def rules(*specs, **extra):
    return {"rules": [{"severity": "warning", **s} for s in specs], **extra}


def results(config, df=None):
    _, report = data_validation(frame() if df is None else df, config)
    return {r["rule"]: r for r in report["rules"]}


def test_every_rule_kind_counts_failures_with_examples():
    got = results(rules(
        {"name": "cols", "rule": "columns", "columns": {"ID": "string", "N": "integer", "X": "any"}},
        {"name": "nn", "rule": "not_null", "column": "ID"},
        {"name": "uq", "rule": "unique", "columns": ["ID"]},
        {"name": "rg", "rule": "range", "column": "N", "min": 0, "max": 100},
        {"name": "al", "rule": "allowed", "column": "S", "values": ["x", "y"]},
        {"name": "rx", "rule": "regex", "column": "ID", "pattern": "[a-z][0-9]"},
        {"name": "rc", "rule": "row_count", "min": 10},
        {"name": "fr", "rule": "freshness", "column": "T", "max_age": "1d"},
        {"name": "ex", "rule": "expression", "expr": "N < 100 and S != 'q'"},
        now="2026-10-05T12:00:00Z",
    ))  # fmt: skip
    assert got["cols"]["failing"] == 2  # N is float, X is missing
    assert got["nn"]["failing"] == 1
    assert got["nn"]["examples"][0]["row"] == 4
    assert got["uq"]["failing"] == 1
    assert got["uq"]["examples"] == [{"row": 2, "values": {"ID": "b2"}}]
    assert got["rg"]["failing"] == 2
    assert [e["row"] for e in got["rg"]["examples"]] == [1, 3]
    assert got["al"]["failing"] == 1
    assert got["al"]["examples"][0]["values"] == {"S": "q"}
    assert got["rx"]["failing"] == 1  # "zz"; the null is not_null's business
    assert got["rc"]["failing"] == 1
    assert got["rc"]["detail"] == "5 rows"
    assert got["fr"]["passed"]
    assert got["ex"]["failing"] == 1
    assert got["ex"]["examples"][0]["row"] == 3


def test_examples_are_capped():
    got = results(rules({"name": "rg", "rule": "range", "column": "N", "min": 1000}, examples=2))
    assert got["rg"]["failing"] == 5
    assert len(got["rg"]["examples"]) == 2


def test_a_failed_error_rule_fails_the_stage_naming_it():
    config = {"rules": [{"name": "positive_n", "rule": "range", "column": "N", "min": 0},
                        {"name": "soft", "rule": "not_null", "column": "ID", "severity": "warning"}]}  # fmt: skip
    with pytest.raises(StageRuleError, match=r"rule failed: positive_n \(1 failing\)") as caught:
        data_validation(frame(), config)
    assert caught.value.report["errors"] == 1
    assert caught.value.report["warnings"] == 1


def test_stale_data_fails_freshness():
    config = {"rules": [{"name": "fresh", "rule": "freshness", "column": "T", "max_age": "36h"}],
              "now": "2026-10-09T00:00:00Z"}  # fmt: skip
    with pytest.raises(StageRuleError, match="fresh"):
        data_validation(frame(), config)


def test_a_rule_on_a_missing_column_fails_but_a_default_one_is_skipped():
    with pytest.raises(StageRuleError, match="nn"):
        data_validation(frame(), {"rules": [{"name": "nn", "rule": "not_null", "column": "NOPE"}]})
    _, report = data_validation(frame())
    skipped = [r["rule"] for r in report["rules"] if r.get("skipped")]
    assert "query_id_unique" in skipped


def test_defaults_fail_raw_and_pass_cleaned_query_history():
    with pytest.raises(StageRuleError, match="query_id_unique"):
        data_validation(raw_pool())
    out, report = data_validation(clean_pool())
    assert report["passed"]
    assert report["rows"] == len(clean_pool())
    pd.testing.assert_frame_equal(out, clean_pool())


def test_empty_frame_fails_only_the_row_count():
    with pytest.raises(StageRuleError, match=r"has_rows \(1 failing\)$"):
        data_validation(clean_pool().iloc[:0])


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"rule": "bogus"}, "'rule' must be one of"),
        ({"rule": "range", "column": "N"}, "needs 'min' or 'max'"),
        ({"rule": "not_null"}, "needs 'column'"),
        ({"rule": "not_null", "column": "N", "colour": 1}, "unknown key 'colour'"),
        ({"rule": "regex", "column": "S", "pattern": "(unclosed"}, "is not valid RE2"),
        ({"rule": "freshness", "column": "T", "max_age": "soon"}, "is not a duration"),
        ({"rule": "not_null", "column": "N", "severity": "fatal"}, "severity 'fatal'"),
        ({"rule": "expression", "expr": "__import__('os').system('true')"}, "is not allowed"),
    ],
)
def test_bad_rules_are_refused(rule, message):
    with pytest.raises(StageConfigError, match=message):
        data_validation(frame(), {"rules": [rule]})


def test_expressions_refuse_code_and_run_vectorised():
    df = pd.DataFrame({"A": [1, 2, None], "B": [1, 1, 1], "S": ["x", "y", None]})
    assert Expression("A <= B").evaluate(df).tolist() == [True, False, False]
    assert Expression("isnull(A) or A > B").evaluate(df).tolist() == [False, True, True]
    assert Expression("S in ['x']").evaluate(df).tolist() == [True, False, False]
    assert Expression("0 < A < 2").evaluate(df).tolist() == [True, False, False]
    assert Expression('col("A") * 2 >= 4').evaluate(df).tolist() == [False, True, False]
    for bad in ("A.__class__", "lambda: 1", "[x for x in A]", "open('f')", "A ** 9", "x := 1"):
        with pytest.raises(StageConfigError):
            Expression(bad)
    with pytest.raises(StageConfigError, match="arithmetic on text"):
        Expression("'a' * 100000000 == S").evaluate(df)


@pytest.mark.parametrize("bound", ["5", 1.5, True])
def test_row_count_bounds_must_be_whole_numbers(bound):
    with pytest.raises(StageConfigError, match="'min' must be a whole number of rows"):
        data_validation(frame(), {"rules": [{"rule": "row_count", "min": bound}]})


def test_examples_show_list_cells_as_text():
    df = pd.DataFrame({"L": [[1, 2], None]})
    got = results(rules({"name": "n", "rule": "expression", "expr": "isnull(L)"}), df)
    assert got["n"]["failing"] == 1
    assert got["n"]["examples"] == [{"row": 0, "values": {"L": "[1, 2]"}}]


def test_an_expression_that_cannot_run_fails_every_row():
    df = pd.DataFrame({"X": pd.Series([1, -1, "a"], dtype=object)})
    got = results(rules({"name": "p", "rule": "expression", "expr": "X > 0"}), df)
    assert got["p"]["failing"] == 3
    assert got["p"]["examples"] == []
    assert got["p"]["detail"].startswith("expression 'X > 0' cannot run on this data")


def test_expression_errors_from_arrow_are_input_errors():
    df = pd.DataFrame({"S": ["a"]})
    with pytest.raises(
        StageInputError, match="expression 'abs\\(S\\) > 1' cannot run on this data"
    ):
        Expression("abs(S) > 1").evaluate(df)


@pytest.mark.parametrize("text", ["length(S * 1000000000) > 0", "O * 3 == 'aaa'", "2 * S == ''"])
def test_expressions_refuse_to_multiply_text(text):
    # given text columns, one of them an object column
    df = pd.DataFrame({"S": ["ab"], "O": pd.Series(["ab"], dtype=object)})
    # then repeating text is refused before it allocates
    with pytest.raises(StageConfigError, match=r"'\*' on text column '[SO]' is not allowed"):
        Expression(text).evaluate(df)


@pytest.mark.parametrize("text", ["X > [1, 2]", "[1] == X", "X in [1] == [1]"])
def test_a_list_may_only_follow_in(text):
    with pytest.raises(StageConfigError, match="a list may only follow 'in' or 'not in'"):
        Expression(text)
