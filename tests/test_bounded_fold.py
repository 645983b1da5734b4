"""The execution fold stays bounded: finished executions beyond the newest KEEP_FINISHED leave
it once retention has nothing left to remove of them, and a query still finds them in the log."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.log import EventLog
from store.projections import executions
from store.reader import LogReader

GOLDEN_LOG = Path(__file__).parent / "golden" / "full" / "log"
TEMPLATE = [
    f for _, p in LogReader(GOLDEN_LOG).read(1)
    if (f := msgpack.unpackb(p)).get("execution_id") == "seq"
]  # fmt: skip
STEPS = ["data_cleaning", "feature_engineering", "data_aggregation", "data_validation"]


def run_events(eid: str, ts: float) -> list[dict]:
    """The events of one completed run of the default pipeline (a real one, renamed)."""
    out = []
    for i, event in enumerate(TEMPLATE):
        fields = copy.deepcopy(event)
        fields.update(execution_id=eid, id=f"{eid}-{i}", ts=ts + i)
        if "task_id" in fields:
            fields["task_id"] = eid + fields["task_id"][3:]
        out.append(fields)
    return out


def removed(eid: str, ts: float) -> dict:
    return {"type": "ArtifactsRemoved", "v": 1, "id": f"{eid}-gone", "ts": ts, "src": "t",
            "execution_id": eid, "steps": STEPS, "bytes": 1000, "reason": "retention"}  # fmt: skip


def fold(events: list[dict], state: executions.ExecutionsState | None = None):
    state = state or executions.ExecutionsState()
    for fields in events:
        executions.evolve(state.last_seq + 1, fields, state)
    return state


def plain(state: executions.ExecutionsState) -> executions.ExecutionsState:
    return executions.CODEC.load(
        msgpack.unpackb(msgpack.packb(executions.CODEC.dump(state)), strict_map_key=False)
    )


@pytest.fixture
def keep_five(monkeypatch):
    monkeypatch.setattr(executions, "KEEP_FINISHED", 5)


def test_finished_executions_leave_the_fold_once_retention_is_done_with_them(keep_five):
    # given 8 finished runs: beyond the newest 5, none is dropped while it has artifacts
    events = [e for n in range(8) for e in run_events(f"run-{n}", 1000.0 * n)]
    state = fold(events)
    assert len(state.executions) == 8
    assert state.evicted == 0
    # when retention removed the artifacts of the first two, and of the newest
    fold([removed("run-0", 9000), removed("run-1", 9001), removed("run-7", 9002)], state)
    # then the two oldest leave, the newest stays (it is among the newest five), one unsettled
    # old one stays above the bound
    assert sorted(state.executions) == [f"run-{n}" for n in range(2, 8)]
    assert list(state.order) == [f"run-{n}" for n in range(2, 8)]
    assert state.evicted == 2
    fold([removed("run-2", 9003)], state)
    assert sorted(state.executions) == [f"run-{n}" for n in range(3, 8)]


@settings(max_examples=30, deadline=None)
@given(
    runs=st.integers(1, 12),
    gone=st.sets(st.integers(0, 11)),
    cut=st.floats(0, 1),
)
def test_a_bounded_fold_resumed_from_a_snapshot_is_the_whole_fold(runs, gone, cut):
    executions.KEEP_FINISHED, saved = 4, executions.KEEP_FINISHED
    try:
        events = [e for n in range(runs) for e in run_events(f"r{n}", 100.0 * n)]
        events += [removed(f"r{n}", 5000.0 + n) for n in sorted(gone) if n < runs]
        at = int(cut * len(events))
        whole = fold(events)
        body = msgpack.unpackb(msgpack.packb(executions.CODEC.dump(fold(events[:at]))),
                               strict_map_key=False)  # fmt: skip
        resumed = fold(events[at:], executions.CODEC.load(body))
        assert plain(resumed) == plain(whole)  # caches inside plans dropped from both
        older = [e for e, rank in whole.finished.items() if rank < whole.finishes - 4]
        assert not any(executions._settled(whole.executions[e]) for e in older)
    finally:
        executions.KEEP_FINISHED = saved


def test_porch_status_finds_an_execution_the_fold_let_go_in_the_log(tmp_path, keep_five):
    # given a log of 8 runs, 3 of them collected and let go by the fold
    from actors.read.model import execution_from_log
    from actors.read.model import executions as read_executions
    from actors.shared.sources import FileSource

    data_dir = tmp_path / "porch"
    events = [e for n in range(8) for e in run_events(f"run-{n}", 1000.0 * n)]
    events += [removed(f"run-{n}", 9000.0 + n) for n in range(3)]
    with EventLog(data_dir / "log", fsync="never") as log:
        log.append([msgpack.packb(e) for e in events])
    with FileSource(data_dir) as source:
        state = read_executions(source)
        assert "run-0" not in state.executions
        assert state.evicted == 3
        # when a query asks for it, then it is folded from its own events in the log
        old = execution_from_log(source, "run-0")
    assert old is not None
    assert old.status == "completed"
    assert sorted(old.removed_steps) == sorted(STEPS)
    assert json.dumps(old.step_summary(), default=str)


def test_a_snapshot_is_read_in_part_for_a_query_and_whole_for_an_actor(tmp_path):
    from actors.read.model import executions as read_executions
    from actors.shared.snapshotter import ORCHESTRATOR
    from actors.shared.sources import FileSource
    from store.snapshots import SnapshotStore

    # given a log of 6 runs and a snapshot of the first 4, as the orchestrator writes it
    events = [e for n in range(6) for e in run_events(f"run-{n}", 1000.0 * n)]
    first = [e for e in events if int(e["execution_id"][4:]) < 4]
    state = fold(first)
    body = executions.dump_lazy(state)
    assert plain(executions.load_lazy(body)) == plain(state)
    assert sorted(executions.load_lazy(body, ["run-2", "nope"]).executions) == ["run-2"]
    data_dir = tmp_path / "porch"
    with EventLog(data_dir / "log", fsync="never") as log:
        log.append([msgpack.packb(e) for e in events])
    name, version = ORCHESTRATOR
    SnapshotStore(data_dir / "snapshots").save(
        name, len(first), version, {"executions": body},
        last_id=first[-1]["id"], last_seq=len(first),
    )  # fmt: skip
    with FileSource(data_dir) as source:
        # when a query wants one execution, then it gets it and what the tail touched, folded
        part = read_executions(source, lambda s: ["run-1"])
        whole = read_executions(source)
    assert sorted(part.executions) == ["run-1", "run-4", "run-5"]
    assert list(part.order) == list(whole.order) == [f"run-{n}" for n in range(6)]
    assert plain(whole) == plain(fold(events))
    assert part.executions["run-5"].status == whole.executions["run-5"].status == "completed"


def test_porch_stats_counts_every_kept_execution_without_decoding_them(tmp_path):
    from actors.read.executions import stage_statistics
    from actors.read.model import executions as read_executions
    from actors.shared.snapshotter import ORCHESTRATOR
    from actors.shared.sources import FileSource
    from store.snapshots import SnapshotStore

    events = [e for n in range(6) for e in run_events(f"run-{n}", 1000.0 * n)]
    first = [e for e in events if int(e["execution_id"][4:]) < 4]
    data_dir = tmp_path / "porch"
    with EventLog(data_dir / "log", fsync="never") as log:
        log.append([msgpack.packb(e) for e in events])
    name, version = ORCHESTRATOR
    SnapshotStore(data_dir / "snapshots").save(
        name, len(first), version, {"executions": executions.dump_lazy(fold(first))},
        last_id=first[-1]["id"], last_seq=len(first),
    )  # fmt: skip
    rows: dict = {}
    with FileSource(data_dir) as source:
        part = read_executions(source, lambda s: (), rows=rows)
    # the snapshot's rows stand in for the four executions not decoded; the tail's two are folded
    assert sorted(rows) == [f"run-{n}" for n in range(4)]
    assert sorted(part.executions) == ["run-4", "run-5"]
    quick = stage_statistics(part.executions.values(), (r for rs in rows.values() for r in rs))
    assert quick == stage_statistics(fold(events).executions.values())
    assert quick["data_cleaning"]["runs"] == 6


def test_time_travel_shows_an_execution_the_fold_let_go(tmp_path):
    """`porch replay --state ID --at SEQ` folds the execution's own events, so it answers for
    one that left the bounded fold long before SEQ."""
    from tests.conftest import run_porch

    data_dir = tmp_path / "porch"
    runs = executions.KEEP_FINISHED + 2
    events = [e for n in range(runs) for e in run_events(f"run-{n}", 10.0 * n)]
    events.append(removed("run-0", 99_999.0))
    with EventLog(data_dir / "log", fsync="never") as log:
        log.append([msgpack.packb(e) for e in events])
    assert "run-0" not in fold(events).executions  # the fold let it go
    result = run_porch("replay", "--state", "run-0", "--at", str(len(events)), "--json",
                       data_dir=data_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["status"] == "completed"
    assert all(step["removed"] for step in view["steps"].values() if step["stage"] != "output")
