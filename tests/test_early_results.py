"""A worker may be handed a task as its dispatch is sent (DESIGN 4, Dispatch), so the log may
hold a task's start, progress and end before its ``StageDispatched``. The folds wait for the
dispatch: whatever the order, they end where the log in dispatch order would take them."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.projections import executions, metrics
from tests.test_snapshots import EVENTS, FOLDS, fold_all, plain

TASK_EVENTS = ("StageStarted", "StageProgress", "StageCompleted", "StageFailed")
DISPATCHES = [i for i, (_, f) in enumerate(EVENTS) if f["type"] == "StageDispatched"]


def dispatched_late(moved: set[int]) -> list[tuple[int, dict]]:
    """The golden log with the chosen dispatches logged after their task's events (as if the
    orchestrator's StageDispatched reached the hub after the worker's), seqs anew. A dispatch
    stays before the orchestrator's next event: one socket delivers in order."""
    order = [f for _, f in EVENTS]
    for index in sorted(moved, reverse=True):
        dispatch = EVENTS[index][1]
        position = order.index(dispatch)
        end = position + 1
        while end < len(order) and not order[end].get("src", "").startswith("orchestrator@"):
            end += 1
        task = [j for j in range(position + 1, end)
                if order[j]["type"] in TASK_EVENTS and order[j].get("task_id") == dispatch["task_id"]]  # fmt: skip
        if task:
            order.insert(task[-1], order.pop(position))  # after its last event up to there
    return [(seq, fields) for seq, fields in enumerate(order, start=1)]


def comparable(name: str, state: object) -> object:
    """The state as data. A held result adds its samples to a metric's series when its dispatch
    folds, after samples other tasks added meanwhile: the same samples, in another order."""
    module, _ = FOLDS[name]
    state = plain(module, state)
    if name != "metrics":
        return state
    series = {key: (s.count, sorted(zip(s.raw_ts, s.raw_values, strict=True)), s.minutes, s.hours)
              for key, s in state.series.items()}  # fmt: skip
    state.series, state.by_name = {}, {}
    return state, series


def test_the_golden_log_has_tasks_to_move():
    assert len(DISPATCHES) > 20
    moved = dispatched_late(set(DISPATCHES))
    assert [f["type"] for _, f in moved] != [f["type"] for _, f in EVENTS]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(moved=st.sets(st.sampled_from(DISPATCHES)), name=st.sampled_from(["executions", "metrics"]))
def test_results_logged_before_their_dispatch_fold_as_if_it_came_first(moved, name):
    module, make = FOLDS[name]
    # given the log in dispatch order, and the same log with some dispatches logged late
    in_order = fold_all(module, make(), EVENTS)
    late = fold_all(module, make(), dispatched_late(moved))
    # then both folds end in the same state
    assert comparable(name, late) == comparable(name, in_order)


def test_every_dispatch_late_folds_the_same_and_holds_nothing_back_at_the_end():
    for name in ("executions", "metrics"):
        module, make = FOLDS[name]
        late = fold_all(module, make(), dispatched_late(set(DISPATCHES)))
        assert comparable(name, late) == comparable(name, fold_all(module, make(), EVENTS))
    state = fold_all(executions, executions.ExecutionsState(), dispatched_late(set(DISPATCHES)))
    assert all(not ex.early for ex in state.executions.values())
    assert not fold_all(metrics, metrics.MetricsState(), dispatched_late(set(DISPATCHES))).early


def test_results_of_a_dispatch_that_never_comes_go_when_the_execution_ends():
    # given a task's result logged, and its dispatch never (an orchestrator that died)
    index = DISPATCHES[0]
    task = EVENTS[index][1]["task_id"]
    log = [(s, f) for i, (s, f) in enumerate(EVENTS) if i != index]
    eid = EVENTS[index][1]["execution_id"]
    cut = max(i for i, (_, f) in enumerate(log) if f.get("task_id") == task) + 1
    state = fold_all(executions, executions.ExecutionsState(), log[:cut])
    # then it is held while the execution runs, and dropped once it ends
    assert task in state.executions[eid].early
    fold_all(executions, state, log[cut:])
    ex = state.executions.get(eid)
    assert ex is None or not ex.early


def test_a_completion_that_carries_its_start_folds_as_a_start_and_a_completion():
    # given the golden log with each run task's StageStarted taken into its completion, as a
    # worker does for a task that ends within its start delay
    completed = {f["task_id"] for _, f in EVENTS if f["type"] == "StageCompleted"}
    started = {f["task_id"]: f for _, f in EVENTS
               if f["type"] == "StageStarted" and f["task_id"] in completed}  # fmt: skip
    merged = []
    for _, f in EVENTS:
        if f["type"] == "StageStarted" and f["task_id"] in started:
            continue
        if f["type"] == "StageCompleted" and f.get("task_id") in started:
            f = {**f, "v": 3, "started_ts": started[f["task_id"]]["ts"]}
        merged.append(f)
    log = [(seq, f) for seq, f in enumerate(merged, start=1)]
    # then every task ends with the start and worker the two events gave it
    whole = fold_all(executions, executions.ExecutionsState(), EVENTS)
    one = fold_all(executions, executions.ExecutionsState(), log)
    for eid, ex in whole.executions.items():
        for key, task in ex.tasks.items():
            other = one.executions[eid].tasks[key]
            assert (other.status, other.started_ts, other.worker) == (
                task.status,
                task.started_ts,
                task.worker,
            ), (eid, key)
