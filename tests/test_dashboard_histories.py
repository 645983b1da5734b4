"""The execution histories the dashboard keeps for its pages: bounded however many progress
reports come, folded to the same state at their last event as the whole log, and a list that a
page follows piece by piece (`from` and `epoch`) stays the list the dashboard holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.dashboard import views
from actors.dashboard.histories import Histories, History
from store.projections import plan as plans

EID = "e"
PARTS = 24  # tasks of the execution's one step, each of which may report progress


def _plan() -> dict:
    plan = plans.make_plan(
        execution_id=EID, mode="parallel", kinds={"feat": "row_local"}, columns={},
        steps=[{"id": "feat", "stage": "feature_engineering", "source": "source"}],
        input_info={"path": "/in.parquet", "bytes": 10, "mtime_ns": 1, "rows": PARTS},
        parts=[[i, i + 1] for i in range(PARTS)], directory=f"/ck/{EID}", outputs=["feat"],
    )  # fmt: skip
    return plan.to_map()


class Log:
    """An execution's events as plain maps with increasing seqs and times."""

    def __init__(self) -> None:
        self.events: list[tuple[int, dict]] = []
        self.add("ExecutionRequested", stages=["feature_engineering"], input_data="/in.parquet")
        self.add("ExecutionStarted", mode="parallel", plan=_plan())

    def add(self, kind: str, **fields) -> tuple[int, dict]:
        seq = len(self.events) + 1
        event = {"type": kind, "v": 2, "id": f"i{seq}", "ts": float(seq), "src": "t",
                 "execution_id": EID, **fields}  # fmt: skip
        self.events.append((seq, event))
        return seq, event

    def task(self, kind: str, part: int, **fields) -> tuple[int, dict]:
        return self.add(kind, stage="feature_engineering", step="feat", phase="run",
                        partition=part, attempt=1, task_id=f"t{part}", **fields)  # fmt: skip

    def dispatch_all(self) -> None:
        for part in range(PARTS):
            self.task("StageDispatched", part)
            self.task("StageStarted", part, worker="w")


def _kept(log: Log, history: History) -> None:
    for seq, fields in log.events:
        history.add(seq, fields)


def _same_state_at_the_end(log: Log, history: History) -> None:
    last = log.events[-1][0]
    assert history.records[-1][0] == last
    assert views.state_at(history.records, EID, last) == views.state_at(log.events, EID, last)


def test_one_task_reporting_without_end_keeps_a_bounded_history():
    # given a task that reports progress 50 times the number kept
    log = Log()
    log.dispatch_all()
    for n in range(50 * 20):
        log.task("StageProgress", 3, worker="w", fraction=n / 1000, message=f"row {n}")
    log.task("StageCompleted", 3, worker="w", rows_out=1)
    # when its history keeps 20 progress reports
    history = History(EID, progress_kept=20, tail=4)
    epoch = history.epoch
    _kept(log, history)
    # then it holds every other event, and 20 reports: the first ones, then the last
    progress = [f["message"] for _, f in history.records if f["type"] == "StageProgress"]
    assert progress == [f"row {n}" for n in range(19)] + ["row 999"]
    others = [(s, f) for s, f in log.events if f["type"] != "StageProgress"]
    assert [(s, f) for s, f in history.records if f["type"] != "StageProgress"] == others
    # and the state at its last event is the whole log's, with no list started over
    _same_state_at_the_end(log, history)
    assert history.epoch == epoch
    assert history.timeline() == views.timeline(log.events)


def test_many_tasks_reporting_in_turn_are_thinned_to_their_last_reports():
    # given more tasks reporting in turn than the last events a report may replace one among
    log = Log()
    log.dispatch_all()
    for n in range(30):
        for part in range(PARTS):
            log.task("StageProgress", part, worker="w", fraction=n / 30)
    # when its history keeps 20 progress reports, replacing among the last 4 events
    history = History(EID, progress_kept=20, tail=4)
    epoch = history.epoch
    _kept(log, history)
    # then the reports kept stay under four times 20, and the list started over
    progress = [f for _, f in history.records if f["type"] == "StageProgress"]
    assert PARTS <= len(progress) < 4 * 20
    assert history.epoch != epoch
    # and the state at the last event is still the whole log's (each task's last report)
    _same_state_at_the_end(log, history)
    assert len([s for s, f in history.records if f["type"] != "StageProgress"]) == 2 + 2 * PARTS


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("report"), st.integers(0, PARTS - 1)),
            st.tuples(st.just("start"), st.integers(0, PARTS - 1)),
            st.tuples(st.just("read"), st.just(0)),
        ),
        max_size=400,
    )
)
def test_a_page_following_the_list_holds_the_list_the_dashboard_holds(steps):
    # given an execution's history, extended event by event
    log = Log()
    history = History(EID, progress_kept=5, tail=3)
    _kept(log, history)
    page: list[dict] = []
    known = (0, 0)
    for what, part in [*steps, ("read", 0)]:
        if what == "report":
            history.add(*log.task("StageProgress", part, worker="w", fraction=0.5))
        elif what == "start":
            history.add(*log.task("StageDispatched", part))
        else:
            # when a page asks for the list from where it may have changed since it last asked
            start, events = history.listing(*known)
            page[start:] = events
            known = (history.frozen(), history.epoch)
            # then it holds what the dashboard holds, in seq order
            assert page == views.events_list(history.records)
    assert [s for s, _ in history.records] == sorted({s for s, _ in history.records})
    _same_state_at_the_end(log, history)


def test_the_executions_viewed_last_are_kept_and_extended():
    # given histories kept for 2 executions, and 3 executions viewed in turn
    histories = Histories(kept=2)
    for eid in ("a", "b", "c"):
        histories.open(eid)
    histories.get("b")
    # when an event of each comes
    for seq, eid in enumerate(("a", "b", "c"), start=1):
        histories.add(seq, {"type": "ExecutionRequested", "execution_id": eid, "ts": 1.0})
    # then the 2 viewed last hold theirs, and the one viewed first is no longer kept
    assert histories.get("a") is None
    assert [s for s, _ in histories.get("b").records] == [2]
    assert [s for s, _ in histories.get("c").records] == [3]
    # and an event of an execution no page looks at, or without an id, is not kept anywhere
    histories.add(4, {"type": "ExecutionRequested", "execution_id": "d", "ts": 1.0})
    histories.add(5, {"type": "ExecutionRequested", "execution_id": ["c"], "ts": 1.0})
    assert len(histories) == 2
    assert [s for s, _ in histories.get("c").records] == [3]


def test_the_histories_viewed_longest_ago_go_when_all_hold_too_many_events():
    # given histories kept for 3 executions, 20 events in all, viewed a, b, c in turn
    histories = Histories(kept=3, events_kept=20)
    for eid in ("a", "b", "c"):
        histories.open(eid)
    # when a and b get 9 events each, then c gets 9
    for seq in range(1, 28):
        eid = "a" if seq <= 9 else "b" if seq <= 18 else "c"
        histories.add(seq, {"type": "ExecutionRequested", "execution_id": eid, "ts": 1.0})
    # then a, viewed longest ago, went; b and c hold all of theirs
    histories.trim()
    assert histories.get("a") is None
    assert len(histories.get("b").records) == len(histories.get("c").records) == 9
    # and one history alone over the bound is kept: it is the one a page looks at
    for seq in range(28, 60):
        histories.add(seq, {"type": "ExecutionRequested", "execution_id": "c", "ts": 1.0})
    histories.trim()
    assert histories.get("b") is None
    assert len(histories.get("c").records) == 41
