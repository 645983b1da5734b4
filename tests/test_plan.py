"""The execution plan at the door: `Plan.of` reads what ``ExecutionStarted.plan`` carries (and
refuses a bad one, naming the key), `Plan.to_map` writes it back byte for byte, and the
execution fold reads it once and keeps it typed, in its state and in its snapshots."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import msgpack
import pytest

from bus.wire import unpack_map
from store.projections import executions as folds
from store.projections import plan as plans
from store.projections.plan import Phase, Plan, PlanStep
from store.reader import LogReader

GOLDEN_LOG = Path(__file__).parent / "golden" / "full" / "log"
EVENTS = [(seq, unpack_map(payload)) for seq, payload in LogReader(GOLDEN_LOG).read(1)]
RAW = {f["execution_id"]: f["plan"] for _, f in EVENTS if f["type"] == "ExecutionStarted"}


def made(mode: str, parts: int = 3) -> Plan:
    steps = [
        {"id": "clean", "stage": "data_cleaning", "config": {"drop": True}, "source": "source"},
        {"id": "feat", "stage": "feature_engineering", "after": [], "source": "clean"},
        {"id": "check", "stage": "data_validation", "after": ["feat"], "source": "clean"},
    ]
    kinds = {"clean": "global_stats", "feat": "row_local", "check": "global"}
    return plans.make_plan(
        execution_id=f"e-{mode}", mode=mode, steps=steps, kinds=kinds, columns={"check": ["a"]},
        input_info={"path": "/in.parquet", "bytes": 10, "mtime_ns": 1, "rows": 30},
        parts=[[i, i + 1] for i in range(parts)], directory=f"/ck/e-{mode}",
        outputs=["feat", "check"],
    )  # fmt: skip


@pytest.mark.parametrize("eid", sorted(RAW))
def test_a_recorded_plan_reads_and_writes_back_to_the_same_bytes(eid):
    # given a plan as a real run recorded it
    raw = RAW[eid]
    # when it is read at the door and written back
    plan = Plan.of(raw)
    # then nothing of the event's format changed, and its fingerprints are what it recorded
    assert msgpack.packb(plan.to_map()) == msgpack.packb(raw)
    assert plans.fingerprints(plan) == raw["fingerprints"]
    assert Plan.of(plan.to_map()) == plan


@pytest.mark.parametrize("mode", plans.MODES)
def test_a_made_plan_is_typed_and_round_trips(mode):
    # given a plan made for a mode
    plan = made(mode)
    # then its steps are typed, phases are Phase members and data holds their values
    split = plan.steps_by_id["clean"]
    assert isinstance(split, PlanStep)
    assert split.phases == (plans.SPLIT if mode != "sequential" else plans.WHOLE)
    assert all(isinstance(phase, Phase) for phase in split.phases)
    assert plan.steps_by_id["check"].columns == ("a",)
    assert plan.to_map()["steps"][0]["phases"] == [p.value for p in split.phases]
    assert all(type(key[1]) is str for key in plans.tasks(plan))
    # and it reads back from its map equal, index and all
    back = Plan.of(msgpack.unpackb(msgpack.packb(plan.to_map())))
    assert back == plan
    assert back.steps_by_id == plan.steps_by_id
    assert "steps_by_id" not in repr(plan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.mode = "parallel"  # type: ignore[misc]


def test_notes_are_written_only_when_there_are_some():
    plan = made("sequential")
    assert "notes" not in plan.to_map()
    noted = dataclasses.replace(plan, notes=("artifacts of x were removed",))
    assert noted.to_map()["notes"] == ["artifacts of x were removed"]
    assert Plan.of(noted.to_map()) == noted
    assert noted.steps_by_id == plan.steps_by_id


def _set(path: tuple, value):
    def change(raw: dict) -> None:
        where = raw
        for key in path[:-1]:
            where = where[key]
        if value is KeyError:
            del where[path[-1]]
        else:
            where[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(("colour",), "red"), "plan: unknown key 'colour'"),
        (_set(("dir",), KeyError), "plan: dir is missing"),
        (_set(("dir",), 7), "plan: dir must be str, not int"),
        (_set(("mode",), "eventually"), "plan: mode 'eventually' is not one of"),
        (_set(("parts",), [[0, 1, 2]]), r"plan: parts must be \[first, end\] pairs of ints"),
        (_set(("parts",), [[0, True]]), r"plan: parts must be \[first, end\] pairs of ints"),
        (_set(("parts",), []), "plan: parts is empty"),
        (_set(("steps",), {"a": 1}), "plan: steps must be list, not dict"),
        (_set(("steps", 0), "clean"), "plan step 0 must be a map, not str"),
        (_set(("steps", 1, "colour"), 1), "plan step 1: unknown key 'colour'"),
        (_set(("steps", 1, "stage"), KeyError), "plan step 1: stage is missing"),
        (_set(("steps", 1, "parts"), True), "plan step 1: parts must be int, not bool"),
        (_set(("steps", 1, "columns"), "a"), "plan step 1: columns must be list or null"),
        (_set(("steps", 1, "columns"), [1]), "plan step 'feat': columns must be a list of str"),
        (_set(("steps", 1, "kind"), "odd"), "plan step 'feat': kind 'odd' is not one of"),
        (_set(("steps", 1, "parts"), 0), "plan step 'feat': parts must be >= 1, not 0"),
        (_set(("steps", 1, "parts"), 2), "plan step 'feat': parts must be 1 or 3"),
        (_set(("steps", 1, "phases"), ["run", "map"]), "plan step 'feat': phases"),
        (_set(("steps", 1, "id"), "clean"), "plan step 'clean': its id is taken"),
        (_set(("steps", 1, "source"), "check"), "plan step 'feat': source 'check' is not"),
        (_set(("steps", 2, "after"), ["later"]), "plan step 'check': after 'later' is not"),
        (_set(("outputs",), ["nowhere"]), "plan: output 'nowhere' is not a step"),
        (_set(("notes",), [3]), "plan: notes must be a list of strings"),
    ],
)
def test_a_bad_plan_is_refused_with_the_key_that_is_wrong(change, message):
    # given a plan's map with one thing wrong
    raw = copy.deepcopy(made("parallel").to_map())
    change(raw)
    # when it is read at the door, then the error names it
    with pytest.raises(ValueError, match=message):
        Plan.of(raw)


def test_a_map_in_another_key_order_or_without_defaults_reads_the_same():
    plan = made("hybrid")
    raw = plan.to_map()
    shuffled = {k: raw[k] for k in reversed(raw)}
    shuffled["steps"] = [{k: s[k] for k in reversed(s)} for s in raw["steps"]]
    assert Plan.of(shuffled) == plan
    bare = copy.deepcopy(raw)
    for step in bare["steps"]:
        for key, default in (("config", {}), ("after", []), ("columns", None)):
            if step[key] == default:
                del step[key]
    assert Plan.of(bare) == plan


def _started(plan: object) -> list[tuple[int, dict]]:
    base = {"v": 1, "src": "t", "execution_id": "e"}
    return [
        (1, {**base, "type": "ExecutionRequested", "id": "r", "ts": 1.0, "stages": ["x"],
             "input_data": "/in.parquet"}),
        (2, {**base, "type": "ExecutionStarted", "id": "s", "ts": 2.0, "mode": "parallel",
             "plan": plan}),
    ]  # fmt: skip


def test_the_fold_reads_the_plan_once_and_a_bad_one_changes_nothing():
    # given an execution started with a good plan, and one with a bad plan
    good = made("parallel")
    state = folds.fold(_started(good.to_map()))
    bad = good.to_map() | {"steps": [{"id": "x"}]}
    refused = folds.fold(_started(bad)[:1])
    # when the bad one is folded, then the fold refuses it and the execution is as it was
    with pytest.raises(ValueError, match="plan step 0: kind is missing"):
        folds.evolve(2, _started(bad)[1][1], refused)
    assert refused.executions["e"].status == "requested"
    assert refused.executions["e"].plan is None
    # and the good one is typed in the state, with its tasks
    ex = state.executions["e"]
    assert ex.status == "running"
    assert ex.plan == good
    assert set(ex.tasks) == set(plans.tasks(good))


def test_a_snapshot_holds_the_plan_as_the_event_carried_it():
    # given the fold of a real log
    state = folds.fold(EVENTS)
    ex = state.executions["par"]
    # when an execution is written down as a snapshot
    data = folds.EXECUTION_CODEC.dump(ex)
    # then its plan is the event's map, and it comes back typed
    assert RAW["par"] in data
    back = folds.EXECUTION_CODEC.load(msgpack.unpackb(msgpack.packb(data), strict_map_key=False))
    assert back.plan == ex.plan
    assert back.plan.steps_by_id.keys() == ex.plan.steps_by_id.keys()
    # and an execution never started has no plan, written as nothing
    never = folds.ExecutionState(execution_id="n")
    assert None in folds.EXECUTION_CODEC.dump(never)
