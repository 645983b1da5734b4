"""The event catalogue: every event declared once, round trips, and refusals that name the field."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus import envelope
from bus.errors import MalformedEventError
from bus.events import MetricRecorded, StageCompleted, WorkerStarted
from bus.schema import (
    CATALOGUE,
    SCHEMAS,
    build,
    check_map,
    coerce,
    decode,
    encode,
    fields_of,
    to_map,
    upcast,
)

DESIGN_EVENTS = [
    "ExecutionRequested",
    "ExecutionStarted",
    "StageDispatched",
    "StageStarted",
    "StageProgress",
    "StageCompleted",
    "StageFailed",
    "PauseRequested",
    "ExecutionPaused",
    "ResumeRequested",
    "ExecutionResumed",
    "CancelRequested",
    "ExecutionCancelled",
    "ExecutionCompleted",
    "ExecutionFailed",
    "ExecutionTimedOut",
    "WorkerStarted",
    "WorkerHeartbeat",
    "WorkerStopped",
    "ScheduleAdded",
    "ScheduleUpdated",
    "ScheduleRemoved",
    "SchedulePaused",
    "ScheduleResumed",
    "ScheduleFired",
    "ScheduleMissed",
    "ExecutionQueued",
    "RetryScheduled",
    "AlertRuleAdded",
    "AlertRuleRemoved",
    "AlertFired",
    "AlertAcknowledged",
    "AlertResolved",
    "MetricRecorded",
]


def completed(**overrides):
    values = {
        "execution_id": "e1", "stage": "data_cleaning", "worker": "w1", "artifact": "/a", "rows_in": 10,
        "rows_out": 9, "bytes": 100, "sha256": "ab", "duration_s": 0.5,
    }  # fmt: skip
    values.update(overrides)
    return StageCompleted(**values)


def test_catalogue_holds_every_design_event():
    assert set(DESIGN_EVENTS) <= set(CATALOGUE)
    for name, cls in CATALOGUE.items():
        assert name == cls.TYPE
        assert SCHEMAS[name].v >= 1


def test_round_trip_keeps_every_field():
    # given
    event = completed(report={"dropped": {"A": 1}}, partition=3)
    # when
    back = decode(encode(event))
    # then
    assert back == event


def test_wire_map_carries_envelope():
    obj = msgpack.unpackb(encode(completed()))
    assert obj["type"] == "StageCompleted"
    assert obj["v"] == 4  # StageCompleted v4: then, the task its runner went on to
    assert {"id", "ts", "src"} <= obj.keys()


def test_ids_are_unique():
    assert len({completed().id for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows_in": "ten"}, "StageCompleted: field 'rows_in' must be int, got str"),
        ({"rows_in": True}, "StageCompleted: field 'rows_in' must be int, got bool"),
        ({"duration_s": None}, "StageCompleted: field 'duration_s' must be float, got null"),
        ({"surprise": 1}, "StageCompleted: unknown field 'surprise'"),
        ({"type": "NoSuchEvent"}, "unknown event type 'NoSuchEvent'"),
        ({"v": 99}, "StageCompleted: schema version 99 is newer than this program knows (4)"),
        ({"id": ""}, "StageCompleted: field 'id' must be a str of 1 to 128 chars"),
        (
            {"report": {"k": object()}},
            "StageCompleted: field 'report' must be dict[str, Any] of plain data",
        ),
    ],
)
def test_refusals_name_the_type_and_field(change, message):
    obj = to_map(completed()) | change
    with pytest.raises(MalformedEventError) as err:
        check_map(obj)
    assert str(err.value) == message


def test_missing_required_field_is_named():
    obj = to_map(completed())
    del obj["sha256"]
    with pytest.raises(MalformedEventError, match="missing required field 'sha256'"):
        check_map(obj)


def test_float_field_takes_an_int_and_decodes_as_float():
    obj = to_map(completed()) | {"duration_s": 2}
    assert decode(msgpack.packb(obj)).duration_s == 2.0
    assert isinstance(decode(msgpack.packb(obj)).duration_s, float)


def test_list_items_are_checked():
    obj = to_map(
        build("ExecutionRequested", {"execution_id": "e", "stages": ["a"], "input_data": "x"})
    )
    obj["stages"] = ["a", 3]
    with pytest.raises(MalformedEventError, match="'stages' must be list"):
        check_map(obj)


def test_upcasters_run_one_version_at_a_time():
    # given: a v1 map and two steps to v3
    steps = {
        ("Thing", 1): lambda f: {**f, "b": 0},
        ("Thing", 2): lambda f: {**f, "c": f["b"] + 1},
    }
    # when
    out = upcast("Thing", {"type": "Thing", "v": 1, "a": 1}, 3, steps)
    # then
    assert out == {"type": "Thing", "v": 3, "a": 1, "b": 0, "c": 1}


def test_missing_upcaster_is_an_error():
    with pytest.raises(MalformedEventError, match="no upcaster from schema version 1"):
        upcast("Thing", {"type": "Thing", "v": 1}, 2, {})


def test_coerce_parses_by_field_type():
    assert coerce("MetricRecorded", "value", "3") == 3
    assert coerce("StageFailed", "retryable", "true") is True
    assert coerce("MetricRecorded", "labels", '{"a": 1}') == {"a": 1}
    assert coerce("MetricRecorded", "execution_id", "null") is None
    with pytest.raises(MalformedEventError, match="must be float"):
        coerce("MetricRecorded", "value", "abc")


def test_build_fills_the_envelope():
    event = build("MetricRecorded", {"name": "x", "value": 1.5})
    assert isinstance(event, MetricRecorded)
    assert event.src.startswith("client@") or "@" in event.src
    assert event.id


@given(
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(), st.none()), max_size=6)
)
def test_arbitrary_maps_are_refused_or_accepted_never_crash(obj):
    with contextlib.suppress(MalformedEventError):
        check_map(obj)


def test_source_names_the_actor():
    source = envelope.set_source("worker")
    assert source.startswith("worker@")
    assert completed().src == source


def test_unknown_fields_of_mixed_key_types_are_refused_not_crashed():
    obj = to_map(completed()) | {"zz": 1, b"b": 2}
    with pytest.raises(MalformedEventError, match="unknown field"):
        check_map(obj)


def test_the_type_is_read_from_the_first_key_without_unpacking_the_rest():
    from bus.wire import pack
    from store.sniff import payload_type

    for kind, schema in SCHEMAS.items():
        values = {
            name: _example(schema, name)
            for name in schema.required
            if name not in ("type", "v", "id", "ts", "src")
        }
        assert payload_type(encode(build(kind, values))) == kind
    assert payload_type(pack({"id": "x", "type": "StageStarted"})) is None  # not first: unknown
    assert payload_type(b"\x91\x01") is None
    assert payload_type(b"") is None
    assert len(CATALOGUE) == len(SCHEMAS)


def _example(schema, name):
    import typing

    hint = typing.get_type_hints(schema.cls)[name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        hint = args[0]
    origin = typing.get_origin(hint) or hint
    return {str: "x", int: 1, float: 1.0, bool: True, list: [], dict: {}}[origin]


@pytest.mark.parametrize(
    "kind", ["StageDispatched", "StageStarted", "StageProgress", "StageCompleted", "StageFailed"]
)
def test_a_v1_task_event_naming_its_step_by_its_stage_is_upcast(kind):
    # given a v1 task event as an older porch logged it: its step named only by its stage
    now = to_map(build(kind, _task_values(kind)))
    later = (
        ("step", "report", "lost") if kind == "StageFailed" else ("step",)
    )  # fields added since v1
    v1 = {k: v for k, v in now.items() if k not in later} | {"v": 1}
    # when it is read back, decoded or as a fold reads it
    event = decode(msgpack.packb(v1))
    fields = fields_of(msgpack.packb(v1))
    # then the step is its stage, at the current version
    assert event.step == "data_cleaning"
    assert (fields["step"], fields["v"]) == ("data_cleaning", SCHEMAS[kind].v)


def test_a_v2_stage_failure_is_read_with_an_empty_report():
    # given a StageFailed as porch logged it before failures carried the stage's report
    v3 = to_map(build("StageFailed", _task_values("StageFailed") | {"report": {"rows": 3}}))
    v2 = {k: v for k, v in v3.items() if k not in ("report", "lost")} | {"v": 2}
    # when it is read back, then it has no report, at the current version
    assert decode(msgpack.packb(v2)).report == {}
    assert fields_of(msgpack.packb(v2))["report"] == {}
    assert fields_of(msgpack.packb(v2))["v"] == SCHEMAS["StageFailed"].v == 4
    assert decode(msgpack.packb(v3)).report == {"rows": 3}


def test_a_v3_stage_failure_is_read_as_no_input_lost():
    # given a StageFailed as porch logged it before failures named a lost input
    v4 = to_map(build("StageFailed", _task_values("StageFailed") | {"lost": "/x.arrow"}))
    v3 = {k: v for k, v in v4.items() if k != "lost"} | {"v": 3}
    # when it is read back, decoded or as a fold reads it, then it lost nothing
    assert decode(msgpack.packb(v3)).lost == ""
    assert fields_of(msgpack.packb(v3))["lost"] == ""
    assert decode(msgpack.packb(v4)).lost == "/x.arrow"


def test_a_v2_dispatch_names_no_chain_and_a_v3_completion_went_on_to_nothing():
    # given a dispatch and a completion as porch logged them before chains
    dispatched = to_map(build("StageDispatched", _task_values("StageDispatched")))
    completed = to_map(build("StageCompleted", _task_values("StageCompleted") | {"then": "x"}))
    v2 = {k: v for k, v in dispatched.items() if k != "then"} | {"v": 2}
    v3 = {k: v for k, v in completed.items() if k != "then"} | {"v": 3}
    # when they are read back, then no task follows either, at the current version
    assert decode(msgpack.packb(v2)).then == []
    assert fields_of(msgpack.packb(v2))["v"] == SCHEMAS["StageDispatched"].v == 3
    assert decode(msgpack.packb(v3)).then == ""
    assert fields_of(msgpack.packb(v3))["v"] == SCHEMAS["StageCompleted"].v == 4
    assert decode(msgpack.packb(completed)).then == "x"


def test_a_v1_task_event_with_its_step_keeps_it():
    v2 = to_map(build("StageStarted", _task_values("StageStarted")))
    v1 = v2 | {"v": 1, "step": "clean-2"}
    assert fields_of(msgpack.packb(v1))["step"] == "clean-2"


def test_what_is_not_an_older_known_event_is_read_as_it_is():
    for raw in ({"type": "NoSuchEvent", "v": 1}, {"type": "StageStarted", "v": 9}, {"v": 1}):
        assert fields_of(msgpack.packb(raw)) == raw


def _task_values(kind: str) -> dict:
    values = {"execution_id": "e1", "stage": "data_cleaning", "step": "data_cleaning",
              "worker": "w1", "task_id": "e1/data_cleaning:run:0/1"}  # fmt: skip
    if kind == "StageDispatched":
        values = {"execution_id": "e1", "stage": "data_cleaning", "step": "data_cleaning",
                  "task_id": "e1/data_cleaning:run:0/1", "partition": 0, "partitions": 1,
                  "attempt": 1, "lease_ms": 1000, "inputs": [], "output": "/o"}  # fmt: skip
    if kind == "StageProgress":
        values["fraction"] = 0.5
    if kind == "StageCompleted":
        values |= {"artifact": "/a", "rows_in": 1, "rows_out": 1, "bytes": 1, "sha256": "",
                   "duration_s": 0.1}  # fmt: skip
    if kind == "StageFailed":
        values["error"] = "boom"
    return values


def test_an_older_event_an_upcaster_cannot_read_is_refused_as_malformed():
    steps = {("Thing", 1): lambda fields: {**fields, "b": fields["a"] + 1}}
    with pytest.raises(MalformedEventError, match="Thing: cannot upcast from schema version 1"):
        upcast("Thing", {"type": "Thing", "v": 1, "a": "x"}, 2, steps)
    with pytest.raises(MalformedEventError, match="missing required field 'stage'"):
        decode(msgpack.packb({"type": "StageStarted", "v": 1, "id": "x", "ts": 1.0, "src": "s",
                              "execution_id": "e", "worker": "w"}))  # fmt: skip


def test_a_v1_worker_started_is_read_as_announcing_no_stages():
    # given a WorkerStarted as porch logged it before workers named the stages they run
    v1 = to_map(WorkerStarted(worker="w1", host="h", pid=1, stages=["x"])) | {"v": 1}
    del v1["stages"]
    # when it is read back, decoded or as a fold reads it
    event = decode(msgpack.packb(v1))
    fields = fields_of(msgpack.packb(v1))
    # then it announced none, at the current version
    assert event.stages == []
    assert (fields["stages"], fields["v"]) == ([], 2)
