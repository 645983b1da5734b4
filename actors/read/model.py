"""Folds for reading: the newest snapshot plus the log's tail, from the hub or from the files.

Every query (``porch status``, ``history``, ``stats``, ``schedule list``, ``alerts``, the Python
API's getters) and every actor at start needs the same thing: a fold of the log up to its head.
Folding all of it costs in proportion to all history, so it starts from the newest snapshot of
that fold (an actor's, or one a query wrote), reads only the events after it, and writes a
snapshot of its own when the tail was long, so the next query is quick too.

When no hub runs for a local data dir, the log's segment files are read directly: a query
answers with or without a running system.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import msgpack

from bus.client import Client
from bus.endpoints import log_dir
from bus.errors import BusError, MalformedEventError
from bus.wire import unpack_map
from store.errors import StoreError
from store.projections import alerts as alert_folds
from store.projections import executions as execution_folds
from store.projections import metrics as metric_folds
from store.projections import schedules as schedule_folds
from store.reader import LogReader
from store.snapshots import Snapshot, SnapshotStore, snapshot_dir
from store.statecodec import StateCodec

log = logging.getLogger("porch.readmodel")

EVERY_EVENTS: Final = 10_000
EVERY_S: Final = 300.0

# Each actor's snapshot: its name and version (the fold codecs inside it, and the shape of the
# body around them: bump the tag when that changes). Queries read these too.
ORCHESTRATOR: Final = ("orchestrator", f"orchestrator3+{execution_folds.LAZY_VERSION}")
SCHEDULER: Final = ("scheduler", f"scheduler1+{schedule_folds.CODEC.version}")
MONITOR: Final = (
    "monitor",
    f"monitor1+{metric_folds.CODEC.version}+{alert_folds.CODEC.version}",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotPolicy:
    """When an actor writes a snapshot: after ``every_events`` folded events, or ``every_s``
    seconds after the last one if anything was folded since. 0 events turns snapshots off."""

    every_events: int = EVERY_EVENTS
    every_s: float = EVERY_S

    def __post_init__(self) -> None:
        if self.every_events < 0:
            raise ValueError(f"snapshots: every_events must be >= 0, got {self.every_events}")
        if self.every_s <= 0:
            raise ValueError(f"snapshots: every_s must be > 0, got {self.every_s}")

    @property
    def enabled(self) -> bool:
        return self.every_events > 0


class LogSource(Protocol):
    """Where a read model reads the log from: the hub, or the segment files."""

    def head(self) -> int | None: ...

    def records(
        self, from_seq: int, types: Iterable[str]
    ) -> Iterator[tuple[int, dict[str, Any]]]: ...

    def event_id(self, seq: int) -> str | None: ...

    def execution_records(
        self, execution_id: str, types: Iterable[str]
    ) -> Iterator[tuple[int, dict[str, Any]]]: ...


class HubSource:
    """The log as the running hub serves it."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def head(self) -> int | None:
        return self.client.head()

    def records(self, from_seq: int, types: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        for record in self.client.read(from_seq, types=types):
            try:
                yield record.seq, record.fields()
            except MalformedEventError:
                continue

    def execution_records(
        self, execution_id: str, types: Iterable[str]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        for record in self.client.read(1, types=types, execution_id=execution_id):
            yield record.seq, record.fields()

    def event_id(self, seq: int) -> str | None:
        try:
            records, _, head = self.client.read_chunk(seq, seq, max_events=1)
        except BusError:
            return None
        if records:
            return str(records[0].fields().get("id", ""))
        # none there: past the head (the snapshot is ahead of this log), or a range that log
        # retention deleted (cannot tell which log it was: taken as this one)
        return "" if seq > head else None


class FileSource:
    """The log read from its segment files: for queries while no hub runs (reads only)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.reader = LogReader(log_dir(data_dir))

    def close(self) -> None:
        return None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def head(self) -> int | None:
        return None  # unknown without a scan; `event_id` tells a snapshot ahead of the log

    def records(self, from_seq: int, types: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        for seq, payload in self.reader.read(from_seq, types=types):
            try:
                yield seq, unpack_map(payload)
            except MalformedEventError:
                continue

    def execution_records(
        self, execution_id: str, types: Iterable[str]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        for seq, payload in self.reader.read(1, types=types, execution_id=execution_id):
            yield seq, unpack_map(payload)

    def event_id(self, seq: int) -> str | None:
        try:
            for _, payload in self.reader.read(seq, seq):
                return str(unpack_map(payload).get("id", ""))
            for _ in self.reader.read(seq + 1, limit=1 << 62):
                return None  # a later record is there: seq was deleted by log retention
        except (StoreError, MalformedEventError):
            return None
        return ""  # no record at or after that seq: the log is shorter than the snapshot


@dataclass(frozen=True, slots=True)
class Part:
    """One fold inside a snapshot: its key in the body and its codec."""

    key: str
    codec: StateCodec


Reader = Client | HubSource | FileSource


def source_of(reader: Reader) -> tuple[LogSource, SnapshotStore | None]:
    """Where to read the log, and the data dir's snapshots (None for a hub on another host:
    its snapshots are not here, so the whole log is folded through the hub)."""
    if isinstance(reader, FileSource):
        return reader, SnapshotStore(snapshot_dir(reader.data_dir))
    client = reader.client if isinstance(reader, HubSource) else reader
    endpoints = client.endpoints
    source = reader if isinstance(reader, HubSource) else HubSource(client)
    if not endpoints.is_local() or not endpoints.ingest.startswith("ipc://"):
        return source, None
    data_dir = Path(endpoints.ingest[len("ipc://") :]).parent.parent
    return source, SnapshotStore(snapshot_dir(data_dir))


def newest_snapshot(
    store: SnapshotStore, candidates: Iterable[tuple[str, str]], source: LogSource
) -> Snapshot | None:
    """The newest usable snapshot among ``(name, version)`` candidates, for this log."""
    head = source.head()

    def same_log(seq: int, event_id: str) -> bool | None:
        found = source.event_id(seq)
        if found is None:
            return None  # cannot tell (the hub is away): take it
        return found == event_id

    best: Snapshot | None = None
    for name, version in candidates:
        snap = store.newest(name, version, head=head, same_log=same_log)
        if snap is not None and (best is None or snap.seq > best.seq):
            best = snap
    return best


@dataclass(slots=True)
class Folded:
    """A read model's state, the seq it covers, and the last event folded into it."""

    state: Any
    seq: int
    last_id: str
    last_seq: int
    tail: int  # events folded after the snapshot


def read_model(
    source: LogSource,
    store: SnapshotStore | None,
    *,
    part: Part,
    fresh: Callable[[], Any],
    types: Iterable[str],
    evolve: Callable[[int, dict[str, Any], Any], Any],
    snapshots: Iterable[tuple[str, str, str]] = (),
    own: str = "",
    every_events: int = EVERY_EVENTS,
) -> Folded:
    """Fold ``part`` of the log: from the newest snapshot among its own (``own``, written by
    earlier queries) and ``snapshots`` (``(name, version, key)``: actors' compound snapshots
    that hold this fold under ``key``), then the tail. Writes its own snapshot when the tail
    was at least ``every_events`` long (and the data dir is writable)."""
    candidates = [(n, v) for n, v, _ in snapshots]
    keys = {n: k for n, _, k in snapshots}
    if own:
        candidates.append((own, part.codec.version))
    snap = newest_snapshot(store, candidates, source) if store is not None else None
    state, seq, last_id, last_seq = fresh(), 0, "", 0
    if snap is not None:
        try:
            key = keys.get(snap.name, "")
            body = snap.body if snap.name == own or not key else snap.body[key]
            state = part.codec.load(body)
            seq, last_id, last_seq = snap.seq, snap.last_id, snap.last_seq
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("snapshot %s ignored: %s; folding the whole log", snap.path, exc)
            state = fresh()
    tail = 0
    for at, fields in source.records(seq + 1, types):
        try:
            evolve(at, fields, state)
        except (KeyError, TypeError, ValueError) as exc:
            log.debug("read model: cannot fold seq %s: %s", at, exc)
        last_id, last_seq = str(fields.get("id", "")), at
        tail += 1
    seq = max(seq, last_seq)
    if store is not None and own and every_events and tail >= every_events:
        try:
            store.save(
                own, seq, part.codec.version, part.codec.dump(state),
                last_id=last_id, last_seq=last_seq,
            )  # fmt: skip
        except OSError as exc:  # a read-only data dir: the next query folds the tail again
            log.debug("read model: no snapshot written: %s", exc)
    return Folded(state, seq, last_id, last_seq, tail)


# --- the read models of the queries ---------------------------------------------------------


def executions(
    reader: Reader,
    wanted: Callable[[execution_folds.ExecutionsState], Iterable[str]] | None = None,
    *,
    rows: dict[str, list[list[Any]]] | None = None,
) -> execution_folds.ExecutionsState:
    """The execution fold, from the newest snapshot (the orchestrator's or a query's) and the
    events after it. With ``wanted`` (given the state's bookkeeping, the ids a query needs),
    only those executions and the ones the tail touches are decoded: a partial state, quick to
    get, to answer about them (``porch status ID``, the newest of ``porch history``). ``rows``
    receives the snapshot's `step_rows` of the executions not decoded (for statistics)."""
    source, store = source_of(reader)
    name = "executions"
    snap = None
    if store is not None:
        snap = newest_snapshot(store, [ORCHESTRATOR, (name, execution_folds.LAZY_VERSION)], source)
    state = execution_folds.ExecutionsState()
    seq = 0
    tail: list[tuple[int, dict[str, Any]]] | None = (
        None  # read once: a partial state is made for it
    )
    if snap is not None:
        seq = snap.seq
        tail = list(source.records(seq + 1, execution_folds.TYPES))
        try:
            body = snap.body if snap.name == name else snap.body["executions"]
            ids = None
            if wanted is not None:
                skeleton = execution_folds.load_lazy(body, wanted=())
                touched = {str(f.get("execution_id", "")) for _, f in tail}
                ids = set(wanted(skeleton)) | touched
            state = execution_folds.load_lazy(body, ids)
            if rows is not None and ids is not None:
                rows.update((e, r) for e, r in body.get("rows", {}).items() if e not in ids)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("snapshot %s ignored: %s; folding the whole log", snap.path, exc)
            state, seq = execution_folds.ExecutionsState(), 0
            tail = None
    records: Iterable[tuple[int, dict[str, Any]]] = (
        tail if tail is not None else source.records(seq + 1, execution_folds.TYPES)
    )
    last_id, last_seq, count = "", 0, 0
    for at, fields in records:
        try:
            execution_folds.evolve(at, fields, state)
        except (KeyError, TypeError, ValueError) as exc:
            log.debug("read model: cannot fold seq %s: %s", at, exc)
        last_id, last_seq, count = str(fields.get("id", "")), at, count + 1
    if rows is not None:  # not the ones the tail let go
        for eid in [e for e in rows if e not in state.order]:
            del rows[eid]
    whole = snap is None or wanted is None
    if store is not None and whole and count >= EVERY_EVENTS:  # the next query starts here
        try:
            store.save(
                name, max(seq, last_seq), execution_folds.LAZY_VERSION,
                execution_folds.dump_lazy(state), last_id=last_id, last_seq=last_seq,
            )  # fmt: skip
        except OSError as exc:
            log.debug("read model: no snapshot written: %s", exc)
    return state


def execution_from_log(reader: Reader, execution_id: str) -> execution_folds.ExecutionState | None:
    """One execution folded from its own events in the whole log (archive included): for one
    that finished long ago and is no longer kept in the fold (``ExecutionsState.evicted``).
    Slow on a long log: it reads every event with this execution's id."""
    source, _ = source_of(reader)
    state = execution_folds.ExecutionsState()
    for seq, fields in source.execution_records(execution_id, execution_folds.TYPES):
        try:
            execution_folds.evolve(seq, fields, state)
        except (KeyError, TypeError, ValueError) as exc:
            log.debug("read model: cannot fold seq %s: %s", seq, exc)
    return state.executions.get(execution_id)


def schedules(reader: Reader) -> schedule_folds.SchedulesState:
    """Every schedule and run, as the scheduler folds them."""
    source, store = source_of(reader)
    state = read_model(
        source,
        store,
        part=Part("schedules", schedule_folds.CODEC),
        fresh=schedule_folds.SchedulesState,
        types=schedule_folds.TYPES,
        evolve=schedule_folds.evolve,
        snapshots=[(SCHEDULER[0], SCHEDULER[1], "")],
        own="schedules",
    ).state
    state.take_touched()
    return state


def monitoring(
    reader: Reader, retention_hours: float = 24.0
) -> tuple[metric_folds.MetricsState, alert_folds.AlertsState]:
    """The metrics and alert folds as the monitor keeps them; the live samples (heartbeats,
    host figures) only as far as the monitor's newest snapshot holds them."""
    source, store = source_of(reader)
    live = _from_monitor(source, store, retention_hours)
    if live is not None:
        return live
    metrics = read_model(
        source,
        store,
        part=Part("metrics", metric_folds.CODEC),
        fresh=lambda: metric_folds.MetricsState(retention_s=retention_hours * 3600),
        types=metric_folds.TYPES,
        evolve=metric_folds.evolve,
        snapshots=[(*MONITOR, "metrics")],
        own="metrics",
    ).state
    metrics.retention_s = retention_hours * 3600
    alerts = read_model(
        source,
        store,
        part=Part("alerts", alert_folds.CODEC),
        fresh=alert_folds.AlertsState,
        types=alert_folds.TYPES,
        evolve=alert_folds.evolve,
        snapshots=[(*MONITOR, "alerts")],
        own="alerts",
    ).state
    return metrics, alerts


def _from_monitor(
    source: LogSource, store: SnapshotStore | None, retention_hours: float
) -> tuple[metric_folds.MetricsState, alert_folds.AlertsState] | None:
    """The running monitor's folds as they stand (live samples included) and the few events
    after them; None when no monitor runs here or it does not answer."""
    from actors.monitor import info as monitorinfo

    if store is None:
        return None
    hostport = monitorinfo.monitor_hostport(store.directory.parent)
    if hostport is None:
        return None
    try:
        # the monitor's own state on loopback, larger than any event: not the wire's bound
        body = msgpack.unpackb(monitorinfo.get(hostport, "/api/state"), strict_map_key=False)
        seq = int(body["seq"])
        metrics = metric_folds.CODEC.load(body["metrics"])
        alerts = alert_folds.CODEC.load(body["alerts"])
    except (OSError, ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        log.debug("read model: the monitor at %s gave no state: %s", hostport, exc)
        return None
    metrics.retention_s = retention_hours * 3600
    for at, fields in source.records(seq + 1, metric_folds.TYPES | alert_folds.TYPES):
        try:
            metric_folds.evolve(at, fields, metrics)
            if fields["type"] in alert_folds.TYPES:
                alert_folds.evolve(at, fields, alerts)
        except (KeyError, TypeError, ValueError) as exc:
            log.debug("read model: cannot fold seq %s: %s", at, exc)
    return metrics, alerts
