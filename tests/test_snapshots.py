"""Snapshots: every fold resumes from a snapshot of a prefix as if it had folded the whole log,
and a snapshot that is damaged, of another fold version, ahead of the log or of another log is
passed over for an older one or for the log itself."""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.wire import unpack_map
from store.projections import alerts, executions, metrics, schedules, summary
from store.reader import LogReader
from store.snapshots import SnapshotStore, read
from store.statecodec import StateCodec, StateShapeError

GOLDEN_LOG = Path(__file__).parent / "golden" / "full" / "log"
FOLDS = {
    "executions": (executions, executions.ExecutionsState),
    "schedules": (schedules, schedules.SchedulesState),
    "alerts": (alerts, alerts.AlertsState),
    "metrics": (metrics, lambda: metrics.MetricsState(retention_s=10 * 365 * 86400.0)),
    "summary": (summary, summary.SummaryState),
}


def golden_events() -> list[tuple[int, dict]]:
    return [(seq, unpack_map(payload)) for seq, payload in LogReader(GOLDEN_LOG).read(1)]


EVENTS = golden_events()


def fold_all(module, state, events):
    for seq, fields in events:
        # what an actor does with an event its fold refuses: log it and go on
        with contextlib.suppress(KeyError, TypeError, ValueError):
            module.evolve(seq, fields, state)
    return state


def through_disk(module, state):
    """A state written down as a snapshot body and read back."""
    body = msgpack.unpackb(msgpack.packb(module.CODEC.dump(state), use_bin_type=True),
                           strict_map_key=False)  # fmt: skip
    return module.CODEC.load(body)


def plain(module, state):
    """A state as comparable data: through the codec (caches dropped), sets still sets."""
    return through_disk(module, state)


@pytest.mark.parametrize("name", sorted(FOLDS))
def test_a_fold_resumed_from_a_snapshot_at_every_seq_equals_the_whole_fold(name):
    module, make = FOLDS[name]
    whole = plain(module, fold_all(module, make(), EVENTS))
    for cut in range(0, len(EVENTS) + 1, 7):
        # given a snapshot of the first `cut` events
        resumed = through_disk(module, fold_all(module, make(), EVENTS[:cut]))
        # when the rest is folded onto it
        fold_all(module, resumed, EVENTS[cut:])
        # then it is the fold of the whole log
        assert plain(module, resumed) == whole, f"{name} differs resumed at event {cut}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keep=st.lists(st.booleans(), min_size=len(EVENTS), max_size=len(EVENTS)),
    split=st.floats(0, 1),
    name=st.sampled_from(sorted(FOLDS)),
)
def test_any_log_and_any_split_point_resume_to_the_same_state(keep, split, name):
    # given a random log: the golden events with any of them left out, in their order
    module, make = FOLDS[name]
    log = [event for event, kept in zip(EVENTS, keep, strict=True) if kept]
    cut = int(split * len(log))
    # when it is folded whole, and through a snapshot taken after `cut` events
    whole = fold_all(module, make(), log)
    resumed = fold_all(module, through_disk(module, fold_all(module, make(), log[:cut])), log[cut:])
    # then both give the same state
    assert plain(module, resumed) == plain(module, whole)


@dataclass(slots=True)
class Inner:
    key: tuple[str, str, int]
    marks: deque[tuple[float, float]] = field(default_factory=deque)


@dataclass(slots=True)
class Outer:
    by_key: dict[tuple[str, str, int], Inner] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    maybe: Inner | None = None
    scratch: list[str] = field(default_factory=list)


@dataclass
class One:
    a: int


@dataclass
class Two:
    a: str


@dataclass
class Bad:
    both: int | list[tuple[int, int]] | set[int]


def test_the_codec_keeps_tuples_sets_deques_and_tuple_keys():
    codec = StateCodec(Outer, transient=("scratch",))
    inner = Inner(("a", "run", 0), deque([(1.0, 2.5)]))
    state = Outer({("a", "run", 0): inner}, {"x", "y"}, inner, ["temporary"])
    back = codec.load(msgpack.unpackb(msgpack.packb(codec.dump(state)), strict_map_key=False))
    assert back == Outer({("a", "run", 0): inner}, {"x", "y"}, inner, [])
    assert type(back.maybe.marks) is deque
    assert type(next(iter(back.by_key))) is tuple


@dataclass(frozen=True, slots=True)
class Door:
    """A class with a door of its own: written as its map, read back through ``of``."""

    name: str
    marks: tuple[int, ...]

    def to_map(self) -> dict:
        return {"name": self.name, "marks": list(self.marks)}

    @classmethod
    def of(cls, data) -> Door:
        if set(data) != {"name", "marks"}:
            raise ValueError(f"door: keys {sorted(data)}")
        return cls(data["name"], tuple(data["marks"]))


@dataclass(slots=True)
class Room:
    door: Door | None = None
    doors: dict[str, Door] = field(default_factory=dict)


def test_a_class_with_a_door_of_its_own_is_written_as_its_map_and_read_through_it():
    # given a state holding a class with `to_map` and `of`, named to the codec
    codec = StateCodec(Room, as_maps=[Door])
    state = Room(Door("front", (1, 2)), {"back": Door("back", ())})
    # when it is written down
    data = codec.dump(state)
    # then each is its plain map, and comes back through `of`
    assert data == [{"name": "front", "marks": [1, 2]}, {"back": {"name": "back", "marks": []}}]
    back = codec.load(msgpack.unpackb(msgpack.packb(data), strict_map_key=False))
    assert back == state
    assert codec.dump(Room()) == [None, {}]
    with pytest.raises(ValueError, match="door: keys"):
        codec.load([{"name": "x"}, {}])
    # and one not named is written field by field, as any dataclass
    assert StateCodec(Room).dump(state) == [["front", [1, 2]], {"back": ["back", []]}]


def test_a_change_of_shape_or_fold_version_changes_the_codec_version():
    assert StateCodec(One).version != StateCodec(One, fold_version=2).version
    assert StateCodec(One).version.split("-")[-1] != StateCodec(Two).version.split("-")[-1]


def test_a_field_the_codec_cannot_write_down_is_refused_when_the_codec_is_made():
    with pytest.raises(StateShapeError, match="cannot tell"):
        StateCodec(Bad)


# --- the store ----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return SnapshotStore(tmp_path / "snapshots", keep=2)


def test_the_newest_whole_snapshot_is_loaded_and_only_the_newest_two_are_kept(store):
    for seq in (10, 20, 30):
        store.save("orchestrator", seq, "v1", {"at": seq}, last_id=f"id-{seq}", last_seq=seq)
    assert [i.seq for i in store.list("orchestrator")] == [20, 30]
    snap = store.newest("orchestrator", "v1", head=30)
    assert (snap.seq, snap.body, snap.last_id) == (30, {"at": 30}, "id-30")


@pytest.mark.parametrize("damage", ["flip", "cut", "empty", "garbage"])
def test_a_damaged_snapshot_is_passed_over_for_the_one_before(store, damage, caplog):
    store.save("scheduler", 10, "v1", {"at": 10})
    path = store.save("scheduler", 20, "v1", {"at": 20, "pad": "x" * 100})
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-5] ^= 0xFF
    elif damage == "cut":
        raw = raw[: len(raw) // 2]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw = bytearray(b"not a snapshot at all")
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"cut short|checksum|not a porch|header|body"):
        read(path)
    snap = store.newest("scheduler", "v1", head=100)
    assert snap is not None
    assert snap.seq == 10
    assert "ignored" in caplog.text
    assert str(path) in caplog.text


def test_another_fold_version_a_seq_past_the_log_or_another_log_is_passed_over(store, caplog):
    store.save("monitor", 10, "v1", {"at": 10}, last_id="a", last_seq=10)
    store.save("monitor", 20, "v1", {"at": 20}, last_id="b", last_seq=20)
    assert store.newest("monitor", "v2") is None  # a new fold: rebuild from the log
    assert "fold version v1" in caplog.text
    assert store.newest("monitor", "v1", head=15).seq == 10  # the log ends before seq 20
    known = {10: "a", 20: "other"}
    snap = store.newest("monitor", "v1", same_log=lambda seq, eid: known[seq] == eid)
    assert snap.seq == 10  # at seq 20 this log holds another event: a new log in the data dir


def test_a_write_cut_short_leaves_no_snapshot_and_its_temp_file_goes(store):
    store.save("metrics", 10, "v1", {"at": 10})
    folder = store.directory / "metrics"
    (folder / ".00000000000000000020.snap.123.tmp").write_bytes(b"PORCHSNP\x00")  # a crash
    assert store.newest("metrics", "v1").seq == 10
    store.save("metrics", 30, "v1", {"at": 30})
    assert not list(folder.glob(".*.tmp"))


def test_deleting_every_snapshot_loses_nothing_a_fold_cannot_rebuild(store):
    module = executions
    state = fold_all(module, executions.ExecutionsState(), EVENTS)
    store.save("orchestrator", EVENTS[-1][0], module.CODEC.version, module.CODEC.dump(state))
    assert store.remove_all() == 1
    assert store.newest("orchestrator", module.CODEC.version) is None
    rebuilt = fold_all(module, executions.ExecutionsState(), EVENTS)
    assert plain(module, rebuilt) == plain(module, state)
