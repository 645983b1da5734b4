"""Pipelines in Python and TOML, the stage registry, custom stages by entry point and by name."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.errors import StageConfigError, StageError
from stages.pipeline import DEFAULT_STAGES, Step, build, load, run
from stages.registry import Registry, stage
from tests.stagedata import raw_pool

PLUGIN = textwrap.dedent(
    """
    from stages.registry import stage

    @stage("tag_rows", partitioning="row_local")
    def tag_rows(df, config):
        return df.assign(TAG=config.get("tag", "x")), {"tagged": len(df)}

    def plain(df, config):
        return df.head(int(config.get("n", 1))), {}

    def broken(df, config):
        return "not a frame"
    """
)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module on sys.path, plus an installed distribution declaring a porch.stages entry point."""
    (tmp_path / "porch_test_plugin.py").write_text(PLUGIN)
    info = tmp_path / "porch_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: porch-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[porch.stages]\ntag_rows = porch_test_plugin:tag_rows\nfirst_rows = porch_test_plugin:plain\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_default_pipeline_is_the_four_builtins_in_a_chain():
    p = build()
    assert [s.stage for s in p.steps] == list(DEFAULT_STAGES)
    assert [s.source for s in p.steps] == ["source", *DEFAULT_STAGES[:-1]]
    assert p.outputs == ["data_validation"]
    frames, reports = run(p, raw_pool())
    assert list(frames) == ["data_validation"]
    assert set(frames["data_validation"]["GROUPING"]) == {"warehouse_day", "user_day"}
    assert reports["data_cleaning"]["rows_in"] == len(raw_pool())


def test_dag_with_two_branches_reading_one_step():
    p = build([
        {"id": "clean", "stage": "data_cleaning"},
        {"id": "check", "stage": "data_validation", "after": ["clean"]},
        {"id": "features", "stage": "feature_engineering", "after": ["clean"]},
        {"id": "cost", "stage": "data_aggregation", "after": ["features", "check"]},
    ])  # fmt: skip
    assert [s.id for s in p.steps] == ["clean", "check", "features", "cost"]
    assert sorted(p.outputs) == ["cost"]
    frames, reports = run(p, raw_pool())
    assert list(frames) == ["cost"]
    assert reports["check"]["passed"]


def test_toml_list_form_with_config(tmp_path):
    path = tmp_path / "cost.toml"
    path.write_text(textwrap.dedent(
        '''
        [pipeline]
        name = "cost"
        stages = ["data_cleaning", "data_aggregation"]

        [config.data_cleaning]
        outlier_action = "clip"

        [config.data_aggregation]
        groupings = [{name = "wh", by = ["WAREHOUSE_NAME"], bucket = "week"}]
        metrics = {QUERIES = "count"}
        '''
    ))  # fmt: skip
    p = load(path)
    assert p.name == "cost"
    assert p.step("data_cleaning").config == {"outlier_action": "clip"}
    frames, _ = run(p, raw_pool())
    assert list(frames["data_aggregation"].columns) == [
        "GROUPING",
        "WAREHOUSE_NAME",
        "BUCKET",
        "QUERIES",
    ]


def test_toml_dag_form_and_custom_stage_by_module_name(plugin):
    text = textwrap.dedent(
        """
        [stages]
        head = "porch_test_plugin:plain"

        [[step]]
        id = "clean"
        stage = "data_cleaning"

        [[step]]
        id = "few"
        stage = "head"
        after = ["clean"]
        config = {n = 3}
        """
    )
    p = load(text, registry=Registry())
    frames, _ = run(p, raw_pool())
    assert len(frames["few"]) == 3


def test_entry_point_stages_are_registered(plugin):
    registry = Registry.default()
    assert {"tag_rows", "first_rows"} <= set(registry.names())
    p = build(["tag_rows"], configs={"tag_rows": {"tag": "q"}}, registry=registry)
    frames, reports = run(p, pd.DataFrame({"a": [1, 2]}))
    assert frames["tag_rows"]["TAG"].tolist() == ["q", "q"]
    assert reports["tag_rows"] == {"tagged": 2}
    assert registry.get("tag_rows").partitioning == "row_local"


def test_a_custom_stage_must_return_a_frame_and_a_report(plugin):
    registry = Registry()
    registry.import_stage("broken", "porch_test_plugin:broken")
    with pytest.raises(StageError, match="stage 'broken' must return \\(DataFrame, dict\\)"):
        run(build(["broken"], registry=registry), pd.DataFrame({"a": [1]}))


def test_python_stage_objects_and_steps():
    @stage(partitioning="row_local")
    def plus_one(df, config):
        return df + 1, {}

    p = build(
        [plus_one, Step(id="again", stage="plus_one", after=("plus_one",))], registry=Registry()
    )
    frames, _ = run(p, pd.DataFrame({"a": [1]}))
    assert frames["again"]["a"].tolist() == [3]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["data_cleaning", "nope"], "step 'nope': unknown stage 'nope' \\(known: data_aggregation"),
        ([{"id": "a", "stage": "data_cleaning", "after": ["b"]},
          {"id": "b", "stage": "data_validation", "after": ["a"]}], "has a cycle: a -> b -> a"),
        ([{"id": "a", "stage": "data_cleaning", "config": {"bogus": 1}}],
         "step 'a': data_cleaning: unknown config key 'bogus'"),
        ([{"id": "a", "stage": "data_cleaning", "after": ["ghost"]}], "after unknown step 'ghost'"),
        ([{"id": "a", "stage": "data_cleaning"}, {"id": "a", "stage": "data_validation"}],
         "step id 'a' is used twice"),
        ([{"id": "a", "stage": "data_cleaning", "when": "now"}], "unknown key 'when'"),
        ([], "has no steps"),
    ],
)  # fmt: skip
def test_bad_pipelines_are_refused_naming_the_problem(steps, message):
    with pytest.raises(StageConfigError, match=message):
        build(steps, registry=Registry())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pipelin]\n", "unknown table 'pipelin'"),
        ("[pipeline]\nstages = 3\n", "must be a list of stage names"),
        ("[pipeline]\nstages = ['data_cleaning']\n[config.data_cleanin]\nx = 1\n",
         "config given for 'data_cleanin', which is not a step"),
        ("[stages]\nx = 'no_such_module_here:f'\n", "cannot import 'no_such_module_here:f'"),
        ("[stages]\nx = 'nocolon'\n", "is not 'module:function'"),
        ("this is = not toml [", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_toml_is_refused(text, message):
    with pytest.raises(StageConfigError, match=message):
        load(text, registry=Registry())


def test_missing_pipeline_file_is_one_line(tmp_path):
    with pytest.raises(StageConfigError, match=r"pipeline file .*nope\.toml"):
        load(tmp_path / "nope.toml")


def test_pipeline_to_plain_data():
    data = build().to_dict()
    assert data["steps"][1] == {"id": "feature_engineering", "stage": "feature_engineering",
                                "config": {}, "after": ["data_cleaning"]}  # fmt: skip


def test_a_stage_used_twice_gives_both_steps_its_config():
    text = textwrap.dedent(
        """
        [pipeline]
        stages = ["data_validation", "data_validation"]
        [config.data_validation]
        rules = [{name = "r", rule = "row_count", min = 1}]
        """
    )
    p = load(text, registry=Registry())
    rules = [{"name": "r", "rule": "row_count", "min": 1}]
    assert [(s.id, s.config) for s in p.steps] == [
        ("data_validation", {"rules": rules}),
        ("data_validation_2", {"rules": rules}),
    ]


def test_a_step_id_entry_wins_over_the_stage_entry():
    configs = {"data_validation": {"examples": 1}, "data_validation_2": {"examples": 2}}
    p = build(["data_validation"] * 3, configs=configs, registry=Registry())
    assert [s.config for s in p.steps] == [{"examples": 1}, {"examples": 2}, {"examples": 1}]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: load('[[step]]\nid="a"\nstage="data_validation"\ninput=""\n'),
         "step 'a': 'input' must be a step id"),
        (lambda: build([Step(id="a", stage="data_validation", input="")], registry=Registry()),
         "step 'a': 'input' must be a step id"),
        (lambda: load(5), "pipeline must be a TOML file, TOML text or a table, got int"),
        (lambda: build(configs=5), "configs must map step or stage names to tables, got int"),
        (lambda: build(5), "steps must be a list of stages or steps, got int"),
        (lambda: load('[stages]\nx = ".foo:bar"\n'), "stage 'x': cannot import '.foo:bar'"),
    ],
)  # fmt: skip
def test_more_bad_pipelines_are_one_line(make, message):
    with pytest.raises(StageConfigError, match=message):
        make()


def test_a_custom_stage_config_must_be_a_table(plugin):
    registry = Registry()
    registry.import_stage("head", "porch_test_plugin:plain")
    with pytest.raises(StageConfigError, match="step 'head': stage 'head': config must be a table"):
        build(["head"], configs={"head": 5}, registry=registry)


def test_a_module_failing_at_import_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "porch_test_raises.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(StageConfigError, match="cannot import 'porch_test_raises:f': boom"):
        Registry().import_stage("x", "porch_test_raises:f")


def _waves(steps):
    """The order by its definition: wave after wave, declaration order within one."""
    done, ordered, pending = set(), [], list(steps)
    while pending:
        ready = [s for s in pending if all(a in done for a in s.after)]
        assert ready, "a cycle"
        done |= {s.id for s in ready}
        ordered += ready
        pending = [s for s in pending if s.id not in done]
    return ordered


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_planning_order_is_waves_in_declaration_order(data):
    from stages.pipeline import _order

    count = data.draw(st.integers(1, 30))
    ids = [f"s{i}" for i in range(count)]
    rank = data.draw(st.permutations(ids))  # edges only go down this rank: no cycle
    steps = [
        Step(id=i, stage="noop", after=tuple(data.draw(st.lists(
            st.sampled_from(rank[: rank.index(i)]), max_size=3)) if rank.index(i) else ()))
        for i in ids
    ]  # fmt: skip
    assert [s.id for s in _order("p", steps)] == [s.id for s in _waves(steps)]


def test_a_long_chain_plans_and_a_cycle_is_named():
    from stages.pipeline import _order

    chain = [Step(id=f"s{i}", stage="noop", after=(f"s{i - 1}",) if i else ()) for i in range(5000)]
    assert [s.id for s in _order("p", chain)] == [f"s{i}" for i in range(5000)]
    loop = [Step(id="a", stage="noop", after=("c",)), Step(id="b", stage="noop", after=("a",)),
            Step(id="c", stage="noop", after=("b",)), Step(id="d", stage="noop")]  # fmt: skip
    with pytest.raises(StageConfigError, match="has a cycle: "):
        _order("p", loop)
