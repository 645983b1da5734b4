"""``porch orchestrator``: folds the log into executions, decides, and hands tasks to workers.

Startup reads the whole log through the hub and folds it before acting, so a restarted
orchestrator continues every running execution where the log left it. Then, live:

1. fold each event in seq order;
2. decide, per execution touched, and send the decisions as events (ids derived from what is
   decided, so a repeat is a duplicate the hub drops);
3. act only on what came back durable: a ``StageDispatched`` is pushed to the workers then;
4. leases: a pushed task must show signs of life (started, progress, or its worker's heartbeat
   naming it) within ``lease_ms``, or it fails as retryable and runs again as a new attempt;
5. retention: every ``interval_s`` and after each execution ends, the retention policy names
   artifacts of finished executions to remove; each removal is logged as ``ArtifactsRemoved``
   and the files go when that event comes back durable (at start, deletions the log has and
   the disk does not yet are redone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import zmq

from actors.errors import ActorError
from actors.orchestrator.decide import decide, decision_id, refused
from actors.read import model as readmodel
from actors.read.model import HubSource, SnapshotPolicy
from actors.shared.snapshotter import Snapshotter
from actors.shared.stagecfg import registry_from
from bus.client import Client, Record
from bus.curve import Authenticator, needs_auth, secure
from bus.endpoints import Endpoints, check, run_dir
from bus.envelope import set_source
from bus.errors import BusError
from bus.events import (
    ArtifactsRemoved,
    Event,
    ExecutionFailed,
    StageDispatched,
    StageFailed,
    WorkerLost,
    WorkerReturned,
)
from bus.protocol import MAX_MESSAGE_BYTES
from bus.schema import encode
from store import pidlock, retention
from store.projections import executions as folds
from store.projections import plan as plans
from store.projections.plan import TaskKey

if TYPE_CHECKING:
    from stages.registry import Registry

log = logging.getLogger("porch.orchestrator")
WORKER_TYPES: Final = (
    "WorkerStarted", "WorkerStopped", "WorkerLost", "WorkerReturned", "StageProgress"
)  # fmt: skip
LIVE_TYPES: Final = ("WorkerHeartbeat",)
WORKER_TIMEOUT_S: Final = 5.0
REMOVALS_PER_PASS: Final = 64
FINISHING: Final = frozenset(
    {"ExecutionCompleted", "ExecutionFailed", "ExecutionCancelled", "ExecutionTimedOut"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestratorConfig:
    data_dir: Path
    endpoints: Endpoints
    tasks: str
    checkpoint_dir: Path
    lease_ms: int = 10_000
    prefetch: int = 4
    # tasks decided and not finished, across executions: a wide window lets many
    # StageDispatched share one group commit of the hub, while pushes still wait for room
    dispatch_window: int = 256
    hybrid_min_rows: int = 250_000
    default_workers: int = 2
    insecure: bool = False
    snapshots: SnapshotPolicy = field(default_factory=SnapshotPolicy)
    retention: retention.RetentionPolicy = field(default_factory=retention.RetentionPolicy)

    def __post_init__(self) -> None:
        if not 100 <= self.lease_ms <= 3_600_000:
            raise ValueError(f"lease_ms must be 100..3600000, got {self.lease_ms}")
        check(self.tasks, bind=True, insecure=self.insecure, curve=self.endpoints.curve)


@dataclass(slots=True)
class _Lease:
    deadline: float
    execution_id: str
    fields: dict[str, Any]


@dataclass(slots=True)
class _Seen:
    """When a worker was last heard of: monotonic here, and the wall clock of its event."""

    at: float
    ts: float


@dataclass(slots=True)
class _Runtime:
    """What the orchestrator keeps beside the fold: never needed to rebuild state."""

    outbox: deque[tuple[str, TaskKey, bytes]] = field(default_factory=deque)
    leases: dict[str, _Lease] = field(default_factory=dict)
    payloads: dict[str, bytes] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)
    workers: dict[str, _Seen] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)  # worker -> times counted out (the log's)
    out: set[str] = field(default_factory=set)  # counted out by the log, not logged back yet
    dirty: set[str] = field(default_factory=set)
    # dispatches sent and not yet back, by execution (so they are not decided again) and by
    # event id (so a stale one is forgotten with its event)
    pending: dict[str, dict[TaskKey, str]] = field(default_factory=dict)
    pending_ids: dict[str, tuple[str, TaskKey]] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)
    # executions that found no room to dispatch: decided again when room frees up, as nothing
    # of their own may come to make them dirty
    starved: set[str] = field(default_factory=set)
    # decisions of this turn of the loop, sent to the hub as one message by `_flush`
    out_ids: list[str] = field(default_factory=list)
    out_payloads: list[bytes] = field(default_factory=list)
    # the next retention pass (monotonic), and whether one is due now (an execution ended)
    next_retention: float = 0.0
    retention_due: bool = True
    # removals sent and not back yet, and the executions waiting to start until they are: what
    # was decided to go before a start is gone before it (its space is the new one's)
    removing: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)


class Orchestrator:
    """Plans executions and dispatches their tasks; its state is the executions fold.

    The stage registry (the built-in stages' pandas, any custom stage's code) is loaded once
    the orchestrator is live: folding the log and following the running executions need none
    of it, only planning a new execution does.
    """

    def __init__(self, config: OrchestratorConfig, stages: Sequence[str] = ()) -> None:
        self.config = config
        self.stages = tuple(stages)
        self.registry: Registry | None = None
        self.state = folds.ExecutionsState()
        self.rt = _Runtime()
        self.snapshots = Snapshotter(config.data_dir, *readmodel.ORCHESTRATOR, config.snapshots)
        self._stop = False
        self.live = False
        self._auth: Authenticator | None = None

    def stop(self, *_: object) -> None:
        self._stop = True

    # --- the loop ----------------------------------------------------------------------------

    def _lock(self) -> int:
        """Hold the data dir's orchestrator lock: two orchestrators would both dispatch."""
        fd, holder = pidlock.hold(run_dir(self.config.data_dir) / "orchestrator.lock")
        if fd is None:
            raise ActorError(
                f"another orchestrator (pid {holder}) runs for data dir {self.config.data_dir}"
            )
        return fd

    def run(self) -> None:
        set_source("orchestrator")
        self._lock_fd = self._lock()
        ctx = zmq.Context()
        self.client = Client(self.config.endpoints, context=ctx)
        tasks = ctx.socket(zmq.PUSH)
        tasks.setsockopt(zmq.SNDHWM, 1)
        tasks.setsockopt(zmq.LINGER, 0)
        curve = self.config.endpoints.curve
        try:
            if needs_auth([self.config.tasks], curve):
                assert curve is not None
                self._auth = Authenticator(ctx, curve)
            secure(tasks, self.config.tasks, curve, server=True)
            tasks.bind(self.config.tasks)
        except (zmq.ZMQError, BusError) as exc:
            tasks.close(linger=0)
            self.client.close()
            if self._auth is not None:
                self._auth.stop()
            ctx.term()
            raise ActorError(
                f"orchestrator: cannot bind tasks at {self.config.tasks}: {exc}"
            ) from None
        types = set(folds.TYPES) | set(WORKER_TYPES) | set(LIVE_TYPES)
        try:
            start = self._restore()
            sub = self.client.subscribe(from_seq=start + 1, types=types)
        except BaseException:
            tasks.close(linger=0)
            self.client.close()
            ctx.term()
            raise
        try:
            self._catch_up(sub)
            self.registry = registry_from(self.stages)
            listen = zmq.Poller()
            listen.register(sub.socket, zmq.POLLIN)
            both = zmq.Poller()
            both.register(sub.socket, zmq.POLLIN)
            both.register(tasks, zmq.POLLOUT)
            next_check = 0.0
            while not self._stop:
                poller = both if self.rt.outbox and self._room() else listen
                events = dict(poller.poll(50))
                if events.get(sub.socket):
                    for record in sub.receive(0):
                        self._on_record(record)
                    for record in sub.take_live():
                        self._on_live(record)
                # tasks whose dispatch just came back go out before anything is decided
                if events.get(tasks) or (self.rt.outbox and self._room()):
                    self._push(tasks)
                self._decide()
                now = time.monotonic()
                if now >= next_check:  # leases count in seconds: a check every 50 ms is plenty
                    self._check_leases()
                    next_check = now + 0.05
                if self.rt.retention_due or now >= self.rt.next_retention:
                    self.rt.retention_due = self._apply_retention()
                    self.rt.next_retention = now + self.config.retention.interval_s
                self._flush()
                if self.snapshots.due():
                    self.snapshots.save(sub.position, self._snapshot_body())
        finally:
            sub.close()
            tasks.close(linger=0)
            self.client.close()
            if self._auth is not None:
                self._auth.stop()
            ctx.term()

    # --- snapshots ---------------------------------------------------------------------------

    def _snapshot_body(self) -> dict[str, Any]:
        return {
            "executions": folds.dump_lazy(self.state),
            "payloads": dict(self.rt.payloads),
            "workers": {w: seen.ts for w, seen in self.rt.workers.items()},
            "lost": dict(self.rt.lost),
            "out": sorted(self.rt.out),
        }

    def _restore(self) -> int:
        """Load the newest snapshot, if any usable; the seq to fold on from."""
        snap = self.snapshots.load(HubSource(self.client))
        if snap is None:
            return 0
        try:
            body = snap.body
            state = folds.load_lazy(body["executions"])
            payloads = {str(k): bytes(v) for k, v in body["payloads"].items()}
            workers = {str(w): float(ts) for w, ts in body["workers"].items()}
            lost = {str(w): int(n) for w, n in body["lost"].items()}
            out = {str(w) for w in body["out"]}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("snapshot %s ignored: %s; folding the whole log", snap.path, exc)
            return 0
        self.state = state
        self.rt.payloads = payloads
        now = time.monotonic()
        self.rt.workers = {w: _Seen(now, ts) for w, ts in workers.items()}
        self.rt.lost = lost
        self.rt.out = out
        self.rt.active = {eid for eid, ex in state.executions.items() if ex.status in folds.ACTIVE}
        return snap.seq

    def _catch_up(self, sub: Any) -> None:
        head = self.client.head()
        while sub.position < head and not self._stop:
            for record in sub.receive(1000):
                self._on_record(record)
        self.live = True
        for record in sub.take_live():  # heard while catching up: a lost worker is back
            self._on_live(record)
        log.info(
            "orchestrator: live at seq %d with %d executions (from snapshot at seq %d)",
            sub.position, len(self.state.executions), self.snapshots.loaded_seq,
        )  # fmt: skip
        self._redo_removals()
        now = time.monotonic()
        # tasks dispatched before a restart: send again those no worker took up (a duplicate
        # run of the same attempt writes the same artifact and is counted once); the rest get
        # a fresh lease from now
        for ex in self.state.executions.values():
            if ex.status not in folds.ACTIVE:
                continue
            self.rt.dirty.add(ex.execution_id)
            for task in ex.tasks.values():
                payload = self.rt.payloads.get(task.task_id)
                if task.status == "dispatched" and payload is not None:
                    self.rt.outbox.append((task.task_id, task.key, payload))
                elif task.status == "running":
                    self.rt.leases[task.task_id] = _Lease(
                        now + self.config.lease_ms / 1000,
                        ex.execution_id,
                        self._lease_fields(ex, task),
                    )

    def _on_record(self, record: Record) -> None:
        fields = record.fields()
        kind = fields.get("type")
        try:
            folds.evolve(record.seq, fields, self.state)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("orchestrator: cannot fold seq %s (%s): %s", record.seq, kind, exc)
            return
        event_id = fields.get("id", "")
        self.snapshots.folded(record.seq, event_id)
        self.rt.sent.pop(event_id, None)
        self._forget_pending(event_id)
        if event_id in self.rt.removing:
            self._removal_back(event_id)
        eid = fields.get("execution_id")
        if eid:
            self.rt.dirty.add(eid)
            ex = self.state.executions.get(eid)
            if ex is not None and ex.status in folds.ACTIVE:
                self.rt.active.add(eid)
            else:
                self.rt.active.discard(eid)
        now = time.monotonic()
        if kind == "StageDispatched":
            ex = self.state.executions.get(eid or "")
            key = (fields["step"], fields["phase"], fields["partition"])
            task = ex.tasks.get(key) if ex else None
            if (
                task is not None
                and task.task_id == fields["task_id"]
                and task.status == "dispatched"
            ):
                self.rt.payloads[fields["task_id"]] = record.payload
                if self.live:
                    self.rt.outbox.append((fields["task_id"], key, record.payload))
        elif kind in ("StageStarted", "StageProgress"):
            self._renew(fields.get("task_id", ""), now)
        elif kind in FINISHING and self.live:
            self.rt.retention_due = True
            if kind == "ExecutionCompleted":
                self._drop_checkpoints(self.state.executions.get(eid or ""))
        elif kind == "ArtifactsRemoved" and self.live:
            self._remove_files(self.state.executions.get(eid or ""))
        elif kind in ("StageCompleted", "StageFailed"):
            self.rt.leases.pop(fields.get("task_id", ""), None)
            self.rt.payloads.pop(fields.get("task_id", ""), None)
        if kind in WORKER_TYPES and "worker" in fields:
            worker = fields["worker"]
            if kind in ("WorkerStopped", "WorkerLost"):
                self.rt.workers.pop(worker, None)
                if kind == "WorkerLost":
                    self.rt.lost[worker] = self.rt.lost.get(worker, 0) + 1
                    self.rt.out.add(worker)
                else:
                    self.rt.out.discard(worker)
            else:
                self.rt.workers[worker] = _Seen(now, float(fields.get("ts", 0.0)))
                if kind in ("WorkerStarted", "WorkerReturned"):
                    self.rt.out.discard(worker)

    def _on_live(self, record: Record) -> None:
        """A heartbeat (live, never in the log): the worker is alive, its tasks' leases renew."""
        try:
            fields = record.fields()
            worker = fields["worker"]
            if record.type != "WorkerHeartbeat" or type(worker) is not str:
                return
        except (BusError, KeyError):
            return
        now = time.monotonic()
        if worker in self.rt.out and self.live:
            # counted out, and heard again: the log says so, as it said it was lost (sent again
            # after a while until it is back: `_send` drops a repeat while one is on its way)
            self._send(
                WorkerReturned(
                    id=decision_id(worker, "returned", self.rt.lost[worker]),
                    worker=worker,
                    host=str(fields.get("host", "")),
                )
            )
        self.rt.workers[worker] = _Seen(now, float(fields.get("ts", 0.0)))
        for task_id in [fields.get("task_id"), *fields.get("queued", [])]:
            if task_id:
                self._renew(task_id, now)

    # --- retention -------------------------------------------------------------------------

    def _drop_checkpoints(self, ex: folds.ExecutionState | None) -> None:
        """``save_checkpoints=False``: keep the outputs, remove the intermediate artifacts
        (logged first, deleted when the log has it)."""
        if ex is None:
            return
        removal = retention.without_checkpoints(ex, retention.protected(self.state))
        if removal is not None:
            self._remove(removal)

    def _apply_retention(self) -> bool:
        """Decide what retention removes now (the wall clock: executions end in wall time)
        and log it; with the automatic pass off, only ``save_checkpoints=False`` leftovers.
        At most `REMOVALS_PER_PASS` go out at once (each is measured on disk): True when more
        are left for the next turn."""
        policy = self.config.retention
        if policy.enabled:
            removals = retention.decide(self.state, policy, time.time())
        else:
            keep = retention.protected(self.state)
            found = (
                retention.without_checkpoints(ex, keep) for ex in self.state.executions.values()
            )
            removals = [r for r in found if r is not None]
        sent = 0
        for removal in removals:
            if sent == REMOVALS_PER_PASS:
                return True
            sent += self._remove(removal)
        return False

    def _remove(self, removal: retention.Removal) -> bool:
        """Log the removal (deleting comes when it is back durable); False if it is on its way."""
        event_id = decision_id(
            removal.execution_id, "artifacts-removed", *removal.steps, removal.finals
        )
        if event_id in self.rt.sent:
            return False  # measured and sent already
        from store import artifacts  # pyarrow and pandas: loaded with the registry once live

        self.rt.removing.add(event_id)
        return self._send(
            ArtifactsRemoved(
                id=event_id,
                execution_id=removal.execution_id,
                steps=list(removal.steps),
                bytes=artifacts.disk_bytes(removal.paths),
                reason=removal.reason,
                finals=removal.finals,
            )
        )

    def _removal_back(self, event_id: str) -> None:
        """A removal came back (or was given up): the executions held for it may start."""
        self.rt.removing.discard(event_id)
        if not self.rt.removing and self.rt.held:
            self.rt.dirty |= self.rt.held
            self.rt.held = set()

    def _remove_files(self, ex: folds.ExecutionState | None) -> None:
        """Delete what the log says is removed of `ex` (again, harmlessly, if it is gone)."""
        if ex is None or not ex.plan:
            return
        paths = retention.removed_paths(ex)
        if not paths:
            return
        from store import artifacts

        try:
            gone = artifacts.remove_paths(paths, inside=ex.plan["dir"])
        except (artifacts.ArtifactError, OSError) as exc:
            log.error("orchestrator: cannot remove artifacts of %s: %s", ex.execution_id, exc)
            return
        if gone:
            names = ", ".join(Path(p).name for p in gone)
            log.info("orchestrator: removed artifacts of %s: %s", ex.execution_id, names)

    def _redo_removals(self) -> None:
        """Removals the log has whose files are still there (a crash between the event and the
        deletion, or a `porch gc` cut short): delete them now."""
        for ex in self.state.executions.values():
            if ex.removed_steps or ex.outputs_removed_ts:
                self._remove_files(ex)

    def _forget_pending(self, event_id: str) -> None:
        where = self.rt.pending_ids.pop(event_id, None)
        if where is not None:
            keys = self.rt.pending.get(where[0])
            if keys is not None:
                keys.pop(where[1], None)
                if not keys:
                    del self.rt.pending[where[0]]

    def _renew(self, task_id: str, now: float) -> None:
        lease = self.rt.leases.get(task_id)
        if lease is not None:
            lease.deadline = now + self.config.lease_ms / 1000

    # --- deciding ----------------------------------------------------------------------------

    def _live_workers(self) -> int:
        now = time.monotonic()
        return sum(1 for seen in self.rt.workers.values() if now - seen.at < WORKER_TIMEOUT_S)

    def _room(self) -> bool:
        return len(self.rt.leases) < max(1, self._live_workers()) * self.config.prefetch

    def _decide(self) -> None:
        if not self.live or not self.rt.dirty:
            return
        dirty, self.rt.dirty = self.rt.dirty, set()
        workers = max(1, self._live_workers())
        executions = self.state.executions
        in_flight = sum(
            len(executions[e].in_flight)
            for e in self.rt.active
            if executions[e].status == "running"
        ) + len(self.rt.pending_ids)
        window = max(self.config.dispatch_window, workers * self.config.prefetch * 2)
        capacity = max(0, window - in_flight)
        if capacity > 0 and self.rt.starved:
            dirty |= self.rt.starved
            self.rt.starved = set()
        for eid in sorted(
            dirty,
            key=lambda e: (
                self.state.executions[e].requested_seq if e in self.state.executions else 0
            ),
        ):
            ex = self.state.executions.get(eid)
            if ex is None:
                continue
            try:
                if ex.status == "requested":
                    if self.rt.removing:
                        self.rt.held.add(eid)
                    else:
                        self._start(ex)
                    continue
                for event in decide(
                    ex,
                    self.state,
                    capacity=capacity,
                    lease_ms=self.config.lease_ms,
                    pending=self.rt.pending.get(eid, {}),
                ):
                    if isinstance(event, StageDispatched):
                        capacity -= 1
                        if self._send(event):
                            key = (event.step, event.phase, event.partition)
                            self.rt.pending.setdefault(eid, {})[key] = event.id
                            self.rt.pending_ids[event.id] = (eid, key)
                    else:
                        self._send(event)
                if capacity <= 0 and ex.status in folds.ACTIVE:
                    self.rt.starved.add(eid)
            except Exception:  # one execution's bug must not stop the others
                log.exception("orchestrator: deciding for execution %s failed", eid)

    def _start(self, ex: folds.ExecutionState) -> None:
        from actors.orchestrator.planning import PlanRefusedError, plan_execution

        assert self.registry is not None, "planning before the registry is loaded"
        try:
            event = plan_execution(
                ex.request,
                registry=self.registry,
                checkpoint_dir=self.config.checkpoint_dir,
                workers=max(self._live_workers(), self.config.default_workers),
                hybrid_min_rows=self.config.hybrid_min_rows,
                earlier=self.state.executions.get(str(ex.request.get("resume_from") or "")),
            )
        except PlanRefusedError as exc:
            self._send(refused(ex.execution_id, str(exc)))
            return
        except Exception as exc:
            log.exception("orchestrator: planning execution %s failed", ex.execution_id)
            self._send(refused(ex.execution_id, f"cannot plan it: {type(exc).__name__}: {exc}"))
            return
        for note in getattr(event, "plan", {}).get("notes", []):
            log.warning("orchestrator: execution %s: %s", ex.execution_id, note)
        self._send(dataclasses.replace(event, id=decision_id(ex.execution_id, "started")))

    def _send(self, event: Event) -> bool:
        """Queue a decision for `_flush`; False if it is already on its way."""
        if event.id in self.rt.sent:
            return False
        payload = encode(event)
        if len(payload) > MAX_MESSAGE_BYTES:
            # the hub would refuse it and the execution would wait forever: fail it instead
            eid = getattr(event, "execution_id", "")
            log.error(
                "orchestrator: %s for %s is %d bytes, over the limit", event.TYPE, eid, len(payload)
            )
            payload = encode(
                ExecutionFailed(
                    id=decision_id(eid, "too-big"),
                    execution_id=eid,
                    error=f"{event.TYPE} would be {len(payload)} bytes, over the {MAX_MESSAGE_BYTES}-byte event limit",
                )
            )
        self.rt.out_ids.append(event.id)
        self.rt.out_payloads.append(payload)
        self.rt.sent[event.id] = time.monotonic()
        return True

    def _flush(self) -> None:
        """Send this turn's decisions to the hub, as one message."""
        if not self.rt.out_payloads:
            return
        ids, payloads = self.rt.out_ids, self.rt.out_payloads
        self.rt.out_ids, self.rt.out_payloads = [], []
        try:
            self.client.publish_many(payloads)
        except BusError as exc:
            log.error("orchestrator: could not send %d decisions: %s", len(ids), exc)
            # not sent: forget them, so they are decided again
            for event_id in ids:
                self.rt.sent.pop(event_id, None)
                self._forget_pending(event_id)
                self._removal_back(event_id)
            self.rt.dirty.update(self.rt.active)

    # --- acting ------------------------------------------------------------------------------

    def _push(self, tasks: zmq.Socket[Any]) -> None:
        now = time.monotonic()
        outbox = self.rt.outbox
        workers = max(1, self._live_workers())
        room = workers * self.config.prefetch - len(self.rt.leases)
        while outbox and room > 0:
            # a message holds several tasks when there are plenty for every worker (one
            # wakeup of a worker per message), a single one otherwise (spread over workers)
            size = max(1, min(room, self.config.prefetch, len(outbox) // (2 * workers)))
            bundle: list[tuple[str, TaskKey, bytes]] = []
            while outbox and len(bundle) < size:
                item = outbox.popleft()
                if self._wanted(item[0], item[1]):
                    bundle.append(item)
            if not bundle:
                return
            try:
                tasks.send_multipart([payload for _, _, payload in bundle], zmq.NOBLOCK)
            except zmq.Again:
                outbox.extendleft(reversed(bundle))
                return
            room -= len(bundle)
            for task_id, key, _ in bundle:
                eid = task_id.split("/", 1)[0]
                ex = self.state.executions.get(eid)
                if ex is None or ex.status not in ("running", "paused"):
                    continue
                task = ex.tasks.get(key)
                if task is not None and task.task_id == task_id:
                    self.rt.leases[task_id] = _Lease(
                        now + self.config.lease_ms / 1000, eid, self._lease_fields(ex, task)
                    )

    def _wanted(self, task_id: str, key: TaskKey) -> bool:
        """Is this dispatched task still to be run? Not once a cancel of its execution is asked
        (the workers fail what they hold of it at once, which frees room the rest must not take)
        or it has ended, nor once a newer attempt has replaced it or a worker has started it."""
        ex = self.state.executions.get(task_id.split("/", 1)[0])
        if ex is None or ex.status not in ("running", "paused") or ex.cancel_requested:
            return False
        task = ex.tasks.get(key)
        return task is not None and task.task_id == task_id and task.status == "dispatched"

    @staticmethod
    def _lease_fields(ex: folds.ExecutionState, task: folds.TaskState) -> dict[str, Any]:
        step, phase, part = task.key
        return {
            "execution_id": ex.execution_id,
            "stage": plans.steps_by_id(ex.plan)[step]["stage"],
            "step": step,
            "phase": phase,
            "partition": part,
            "attempt": task.attempt,
            "task_id": task.task_id,
            "worker": task.worker,
        }

    def _check_workers(self, now: float) -> None:
        """Count out the workers heard of for `WORKER_TIMEOUT_S` no more, in the log: their
        heartbeats are not history, but this decision is."""
        for worker, seen in list(self.rt.workers.items()):
            if now - seen.at < WORKER_TIMEOUT_S:
                continue
            # it stays counted until the WorkerLost is back (`_on_record`): a send that fails
            # is sent again, and a repeat while one is on its way is dropped by `_send`
            self._send(
                WorkerLost(
                    id=decision_id(worker, "lost", self.rt.lost.get(worker, 0)),
                    worker=worker,
                    last_seen_ts=seen.ts,
                    silent_s=WORKER_TIMEOUT_S,
                )
            )

    def _check_leases(self) -> None:
        now = time.monotonic()
        self._check_workers(now)
        for task_id, lease in list(self.rt.leases.items()):
            if now < lease.deadline:
                continue
            del self.rt.leases[task_id]
            f = lease.fields
            self._send(
                StageFailed(
                    id=decision_id(task_id, "lease"),
                    execution_id=f["execution_id"],
                    stage=f["stage"],
                    worker=f["worker"] or "unknown",
                    error=f"lease expired: no sign of the task for {self.config.lease_ms} ms",
                    partition=f["partition"],
                    attempt=f["attempt"],
                    error_type="LeaseExpired",
                    retryable=True,
                    step=f["step"],
                    phase=f["phase"],
                    task_id=task_id,
                )
            )
        # decisions that never came back (the hub was away): forget them so they are retaken
        stale = [event_id for event_id, sent in self.rt.sent.items() if now - sent > 5.0]
        for event_id in stale:
            del self.rt.sent[event_id]
            self._forget_pending(event_id)
            self._removal_back(event_id)
        if stale:
            self.rt.dirty.update(
                e.execution_id for e in self.state.executions.values() if e.status in folds.ACTIVE
            )


def run_orchestrator(config: OrchestratorConfig, stages: Sequence[str] = ()) -> int:
    """Run until SIGTERM or SIGINT; ``stages`` are ``NAME=module:function`` local stages."""
    orchestrator = Orchestrator(config, stages)
    signal.signal(signal.SIGTERM, orchestrator.stop)
    signal.signal(signal.SIGINT, orchestrator.stop)
    with contextlib.suppress(KeyboardInterrupt):
        orchestrator.run()
    return 0
