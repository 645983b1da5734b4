"""The orchestrator's core: the executions fold, what it keeps beside it, and its decisions.

Beside the fold it keeps what is never needed to rebuild state: the leases of pushed tasks,
the workers heard of, the dispatches on their way, the tasks to push. No sockets and no clock:
time comes in as `Now` (``mono`` for leases and liveness, ``wall`` for retention, which
compares with events' times); files are read only by the planner and ``measure`` it is given.
Its effects wait in `pushes` (task payloads for the workers) and `deletions` (artifact files
whose removal is in the log) for the actor to carry out.

Every decision is an event with an id made from what it decides (`decide.decision_id`), so a
decision taken twice is one event. A decision is *on its way* from `decide` until it comes back
in the log (`apply`) or the actor gives it up (`forget`); it is not taken again meanwhile.
A dispatch's task is pushed as it is decided (`early`), not when it is back: the fold holds a
result logged first until its dispatch comes, and the same decision taken again is not pushed
again. A task a runner went on to by itself (`continued`: the completion before it named it,
`actors.orchestrator.chains`) is pushed to nobody: its lease starts as its dispatch is decided,
held by that runner's worker.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from actors.orchestrator.decide import decide
from actors.orchestrator.leases import (
    STOPPED_KEPT_S,
    Lease,
    Leases,
    Push,
    Seen,
)
from actors.orchestrator.removals import Deletion, Removals
from actors.shared.ids import decision_id
from actors.shared.now import Now
from bus.events import (
    Event,
    ExecutionFailed,
    StageDispatched,
    WorkerReturned,
)
from store import retention
from store.projections import executions as folds
from store.projections.task import TaskKey, TaskRef

log = logging.getLogger("porch.orchestrator")
CHECK_EVERY_S: Final = 0.05  # leases count in seconds: a check every 50 ms is plenty
FINISHING: Final = frozenset(
    {"ExecutionCompleted", "ExecutionFailed", "ExecutionCancelled", "ExecutionTimedOut"}
)
WORKER_TYPES: Final = frozenset(
    {"WorkerStarted", "WorkerStopped", "WorkerLost", "WorkerReturned", "StageProgress"}
)
LIVE_TYPES: Final = frozenset({"WorkerHeartbeat"})
TYPES: Final = frozenset(folds.TYPES) | WORKER_TYPES

# (the execution as folded, the workers to plan for, the execution it resumes) -> its
# ExecutionStarted, or an ExecutionFailed that refuses it
Planner = Callable[[folds.ExecutionState, int, folds.ExecutionState | None], Event]
Measure = Callable[[Sequence[str]], int]  # bytes on disk of artifact paths


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreConfig:
    lease_ms: int = 10_000
    prefetch: int = 8
    # tasks decided and not finished, across executions: a wide window lets many
    # StageDispatched share one group commit of the hub, while pushes still wait for room
    dispatch_window: int = 256
    default_workers: int = 2
    retention: retention.RetentionPolicy = field(default_factory=retention.RetentionPolicy)


def _refuse_all(ex: folds.ExecutionState, workers: int, earlier: object) -> Event:
    return ExecutionFailed(
        id=decision_id(ex.execution_id, "refused"),
        execution_id=ex.execution_id,
        error="refused: this orchestrator has no planner",
    )


class OrchestratorCore(Leases, Removals):
    """Folds the log, decides, and keeps the effects waiting; see the module docstring."""

    def __init__(
        self,
        config: CoreConfig,
        *,
        planner: Planner = _refuse_all,
        measure: Measure = lambda paths: 0,
    ) -> None:
        self.config = config
        self.planner = planner
        self.measure = measure
        self.retention_policy = config.retention
        self.state = folds.ExecutionsState()
        self.live = False
        self.pushes: deque[Push] = deque()
        self.deletions: list[Deletion] = []
        self.leases: dict[str, Lease] = {}
        self.payloads: dict[str, bytes] = {}  # task id -> its StageDispatched, until it ends
        self.pushed_again: dict[str, int] = {}  # task id -> pushes of it nobody claimed
        # tasks handed to the workers as their dispatch is sent, until it is back in the log:
        # what their leases are about meanwhile (DESIGN 4, Dispatch)
        self.early: dict[str, TaskRef] = {}
        self.handing: dict[str, TaskKey] = {}  # dispatch event id -> its task, until it is sent
        # task id -> (the worker whose runner went on to it, the time of the completion that
        # said so: its clock), until the task ends or its execution does
        self.continued: dict[str, tuple[str, float]] = {}
        self.workers: dict[str, Seen] = {}
        self.lost: dict[str, int] = {}  # worker -> times counted out (the log's)
        self.out: set[str] = set()  # counted out by the log, not logged back yet
        # worker -> the time (its clock) its newest incarnation started: a task it claimed
        # before then is held by a process that is gone
        self.incarnations: dict[str, float] = {}
        # worker -> the time (its clock) it last stopped: a task it claimed before then is held
        # by nobody (one claimed since is held by a new incarnation, heard of or not yet)
        self.stopped: dict[str, float] = {}
        self.dirty: set[str] = set()
        self.sent: set[str] = set()  # decisions on their way
        # dispatches on their way, by execution (so they are not decided again) and by
        # event id (so a given-up one is forgotten with its event)
        self.pending: dict[str, dict[TaskKey, str]] = {}
        self.pending_ids: dict[str, tuple[str, TaskKey]] = {}
        self.active: set[str] = set()
        # executions that found no room to dispatch: decided again when room frees up, as
        # nothing of their own may come to make them dirty
        self.starved: set[str] = set()
        self.next_check = 0.0
        self.next_retention = 0.0
        self.retention_due = True
        # removals on their way, and the executions waiting to start until they are back:
        # what was decided to go before a start is gone before it (its space is the new one's)
        self.removing: set[str] = set()
        self.held: set[str] = set()
        self._out: list[Event] = []

    # --- snapshots ---------------------------------------------------------------------------

    def snapshot_body(self) -> dict[str, Any]:
        return {
            "executions": folds.dump_lazy(self.state),
            "payloads": dict(self.payloads),
            "workers": {w: seen.ts for w, seen in self.workers.items()},
            "lost": dict(self.lost),
            "out": sorted(self.out),
            "incarnations": dict(self.incarnations),
            "stopped": dict(self.stopped),
            "continued": {t: list(held) for t, held in self.continued.items()},
        }

    def restore(self, body: dict[str, Any], now: Now) -> None:
        """Take a snapshot's body (all or nothing); raises KeyError, TypeError, ValueError."""
        state = folds.load_lazy(body["executions"])
        payloads = {str(k): bytes(v) for k, v in body["payloads"].items()}
        workers = {str(w): float(ts) for w, ts in body["workers"].items()}
        lost = {str(w): int(n) for w, n in body["lost"].items()}
        out = {str(w) for w in body["out"]}
        # a snapshot of an older porch has none: the leases then wait for a restart to show
        incarnations = {str(w): float(ts) for w, ts in body.get("incarnations", {}).items()}
        stopped = {str(w): float(ts) for w, ts in body.get("stopped", {}).items()}
        continued = {
            str(t): (str(w), float(ts)) for t, (w, ts) in body.get("continued", {}).items()
        }
        self.state = state
        self.payloads = payloads
        self.workers = {w: Seen(now.mono, ts) for w, ts in workers.items()}
        self.lost = lost
        self.out = out
        self.incarnations = incarnations
        self.stopped = stopped
        self.continued = continued
        self.active = {eid for eid, ex in state.executions.items() if ex.status in folds.ACTIVE}

    # --- folding -----------------------------------------------------------------------------

    def apply(self, seq: int, fields: dict[str, Any], payload: bytes, now: Now) -> None:
        """Fold one logged event; ``payload`` is its bytes (a dispatch is pushed as logged)."""
        kind = fields.get("type")
        event_id = fields.get("id", "")
        # back in the log, whether or not it folds: no longer on its way
        self.sent.discard(event_id)
        self._forget_pending(event_id)
        if event_id in self.removing:
            self._removal_back(event_id)
        folds.evolve(seq, fields, self.state)
        eid = fields.get("execution_id")
        if eid:
            self.dirty.add(eid)
            ex = self.state.executions.get(eid)
            if ex is not None and ex.status in folds.ACTIVE:
                self.active.add(eid)
            else:
                self.active.discard(eid)
        if kind == "StageDispatched":
            ex = self.state.executions.get(eid or "")
            key = (fields["step"], fields["phase"], fields["partition"])
            task = ex.tasks.get(key) if ex else None
            handed = self.early.pop(fields["task_id"], None) is not None
            held = self.continued.get(fields["task_id"])
            if (
                held is not None
                and self.live
                and task is not None
                and task.task_id == fields["task_id"]
                and task.status in ("dispatched", "running")
            ):
                # a runner went on to it (and logged the dispatch decided ahead for it): its
                # lease starts now, held by that runner's worker
                self.leases.setdefault(
                    fields["task_id"],
                    Lease(now.mono + self.config.lease_ms / 1000, TaskRef.of(fields), *held),
                )
            if (
                task is not None
                and task.task_id == fields["task_id"]
                and task.status == "dispatched"
            ):
                self.payloads[fields["task_id"]] = payload
                if self.live and not handed and fields["task_id"] not in self.continued:
                    self.pushes.append((fields["task_id"], key, payload))
            elif (
                task is not None and task.task_id == fields["task_id"] and task.status != "running"
            ):
                self._ended(fields["task_id"])  # its result came first, and is folded now
        elif kind in ("StageStarted", "StageProgress"):
            self._renew(fields.get("task_id", ""), now, fields)
        elif kind in FINISHING and self.live:
            self.retention_due = True
            prefix = f"{eid}/"
            for task_id in [t for t in self.early if t.startswith(prefix)]:
                del self.early[task_id]  # its dispatch never came back: it never will now
            for task_id in [t for t in self.pushed_again if t.startswith(prefix)]:
                del self.pushed_again[task_id]  # ended with its execution, not with an event
            for task_id in [t for t in self.continued if t.startswith(prefix)]:
                del self.continued[task_id]
            if kind == "ExecutionCompleted":
                self._drop_checkpoints(self.state.executions.get(eid or ""))
        elif kind == "ArtifactsRemoved" and self.live:
            self._delete_removed(self.state.executions.get(eid or ""))
        elif kind in ("StageCompleted", "StageFailed"):
            task_id = fields.get("task_id", "")
            self.leases.pop(task_id, None)
            self.payloads.pop(task_id, None)
            self.pushed_again.pop(task_id, None)
            ex = self.state.executions.get(eid or "")
            key = (fields.get("step", ""), fields.get("phase", "run"), fields.get("partition", 0))
            task = ex.tasks.get(key) if ex is not None else None
            if task is not None and task.task_id == task_id:  # folded, not held for its dispatch
                self.continued.pop(task_id, None)
            if fields.get("then") and eid in self.active:
                self.continued[fields["then"]] = (fields["worker"], float(fields["ts"]))
        if kind in WORKER_TYPES and "worker" in fields:
            self._worker_event(kind, fields, now)

    def _ended(self, task_id: str) -> None:
        """A task's results were folded as its dispatch came: nothing of it is left to watch."""
        self.leases.pop(task_id, None)
        self.payloads.pop(task_id, None)
        self.continued.pop(task_id, None)

    def _worker_event(self, kind: str, fields: dict[str, Any], now: Now) -> None:
        worker = fields["worker"]
        if kind in ("WorkerStopped", "WorkerLost"):
            self.workers.pop(worker, None)
            if kind == "WorkerLost":
                self.lost[worker] = self.lost.get(worker, 0) + 1
                self.out.add(worker)
            else:
                self.out.discard(worker)
                ts = float(fields.get("ts", 0.0))
                self.stopped = {w: t for w, t in self.stopped.items() if t > ts - STOPPED_KEPT_S}
                self.stopped[worker] = ts
            return
        self.workers[worker] = Seen(now.mono, float(fields.get("ts", 0.0)))
        if kind in ("WorkerStarted", "WorkerReturned"):
            self.out.discard(worker)
        if kind == "WorkerStarted":
            self.incarnations[worker] = float(fields.get("ts", 0.0))
            self.stopped.pop(worker, None)

    def heard(self, fields: dict[str, Any], now: Now) -> None:
        """A heartbeat (live, never in the log): the worker is alive, its tasks' leases renew."""
        worker = fields.get("worker")
        if fields.get("type") != "WorkerHeartbeat" or type(worker) is not str:
            return
        if worker in self.out and self.live:
            # counted out, and heard again: the log says so, as it said it was lost (decided
            # again after a while until it is back; not while one is on its way)
            self._send(
                WorkerReturned(
                    id=decision_id(worker, "returned", self.lost[worker]),
                    worker=worker,
                    host=str(fields.get("host", "")),
                )
            )
        self.workers[worker] = Seen(now.mono, float(fields.get("ts", 0.0)))
        for task_id in [fields.get("task_id"), *fields.get("queued", [])]:
            if task_id:
                self._renew(task_id, now, fields)

    def go_live(self, now: Now) -> None:
        """Caught up: redo the removals the disk has not seen, send again the tasks dispatched
        before a restart that no worker took up (a duplicate run of the same attempt writes the
        same artifact and is counted once), and give the running ones a fresh lease."""
        self.live = True
        for ex in self.state.executions.values():
            if ex.removed_steps or ex.outputs_removed_ts:
                self._delete_removed(ex)
        for ex in self.state.executions.values():
            if ex.status not in folds.ACTIVE:
                continue
            self.dirty.add(ex.execution_id)
            for task in ex.tasks.values():
                payload = self.payloads.get(task.task_id)
                held = self.continued.get(task.task_id)
                if task.status == "dispatched" and held is not None:
                    self.leases[task.task_id] = Lease(
                        now.mono + self.config.lease_ms / 1000,
                        self._lease_of(ex, task)[0],
                        *held,
                    )
                elif task.status == "dispatched" and payload is not None:
                    self.pushes.append((task.task_id, task.key, payload))
                elif task.status == "running":
                    self.leases[task.task_id] = Lease(
                        now.mono + self.config.lease_ms / 1000,
                        *self._lease_of(ex, task),
                        claimed_ts=task.started_ts,
                    )

    def _forget_pending(self, event_id: str) -> None:
        where = self.pending_ids.pop(event_id, None)
        if where is not None:
            keys = self.pending.get(where[0])
            if keys is not None:
                keys.pop(where[1], None)
                if not keys:
                    del self.pending[where[0]]

    def _renew(self, task_id: str, now: Now, claim: dict[str, Any]) -> None:
        """A worker's event names the task: its lease renews, and the worker holds it."""
        lease = self.leases.get(task_id)
        if lease is not None:
            lease.deadline = now.mono + self.config.lease_ms / 1000
            lease.worker = str(claim.get("worker", "")) or lease.worker
            lease.claimed_ts = float(claim.get("ts", 0.0))

    # --- deciding ----------------------------------------------------------------------------

    def decide(self, now: Now) -> list[Event]:
        """This turn's decisions: executions to start and to move on, leases expired, workers
        counted out, artifacts to remove."""
        if not self.live:
            return []
        self._decide_executions(now)
        if now.mono >= self.next_check:
            self._check_leases(now)
            self.next_check = now.mono + CHECK_EVERY_S
        if self.retention_due or now.mono >= self.next_retention:
            self.retention_due = self._apply_retention(now)
            self.next_retention = now.mono + self.config.retention.interval_s
        out, self._out = self._out, []
        return out

    def forget(self, event_ids: Sequence[str]) -> None:
        """Decisions given up (not back in time, or not sent): they are taken again."""
        for event_id in event_ids:
            self.sent.discard(event_id)
            self.handing.pop(event_id, None)
            self._forget_pending(event_id)
            self._removal_back(event_id)
        if event_ids:
            self.dirty.update(self.active)

    def next_due(self, now: Now) -> float:
        """The monotonic time of the next lease or liveness check, or retention pass."""
        if self.leases or self.workers or self.sent:
            return min(self.next_check, self.next_retention)
        return self.next_retention

    def _send(self, event: Event) -> bool:
        """Decide ``event``; False if it is on its way already."""
        if event.id in self.sent:
            return False
        self.sent.add(event.id)
        self._out.append(event)
        return True

    def _decide_executions(self, now: Now) -> None:
        if not self.dirty:
            return
        dirty, self.dirty = self.dirty, set()
        workers = max(1, self.live_workers(now))
        executions = self.state.executions
        in_flight = sum(
            len(executions[e].in_flight) for e in self.active if executions[e].status == "running"
        ) + len(self.pending_ids)
        window = max(self.config.dispatch_window, workers * self.config.prefetch * 2)
        capacity = max(0, window - in_flight)
        if capacity > 0 and self.starved:
            dirty |= self.starved
            self.starved = set()
        order = sorted(dirty, key=lambda e: executions[e].requested_seq if e in executions else 0)
        for eid in order:
            ex = executions.get(eid)
            if ex is None:
                continue
            try:
                if ex.status == "requested":
                    if self.removing:
                        self.held.add(eid)
                    else:
                        self._start(ex, now)
                    continue
                for event in decide(
                    ex,
                    self.state,
                    capacity=capacity,
                    lease_ms=self.config.lease_ms,
                    pending=self.pending.get(eid, {}),
                    continued=self.continued,
                ):
                    if isinstance(event, StageDispatched):
                        capacity -= 1
                        if self._send(event):
                            key = (event.step, event.phase, event.partition)
                            self.pending.setdefault(eid, {})[key] = event.id
                            self.pending_ids[event.id] = (eid, key)
                            self._hand_early(event, key, now)
                    else:
                        self._send(event)
                if capacity <= 0 and ex.status in folds.ACTIVE:
                    self.starved.add(eid)
            except Exception:  # one execution's bug must not stop the others
                log.exception("orchestrator: deciding for execution %s failed", eid)

    def _hand_early(self, event: StageDispatched, key: TaskKey, now: Now) -> None:
        """Push the task as its dispatch is sent (`going`), not when it is back: its results
        wait in the fold for the dispatch, and a dispatch decided again (given up, or after a
        restart) is the same task. Once only: a resent dispatch is not pushed again. A task a
        runner went on to is pushed to nobody: its lease starts now, held by that worker."""
        if event.task_id in self.early:
            return
        ref = TaskRef(
            event.execution_id, event.stage, event.step, event.phase, event.partition,
            event.attempt, event.task_id,
        )  # fmt: skip
        held = self.continued.get(event.task_id)
        if held is not None:
            if event.task_id not in self.leases:
                self.leases[event.task_id] = Lease(
                    now.mono + self.config.lease_ms / 1000, ref, *held
                )
            return
        self.early[event.task_id] = ref
        self.handing[event.id] = key

    def going(self, event: Event, payload: bytes) -> None:
        """A decision goes to the hub as ``payload``: a dispatch's task goes to the workers as
        the same bytes."""
        key = self.handing.pop(event.id, None)
        if key is not None and isinstance(event, StageDispatched):
            self.pushes.append((event.task_id, key, payload))

    def _start(self, ex: folds.ExecutionState, now: Now) -> None:
        earlier = self.state.executions.get(str(ex.request.get("resume_from") or ""))
        workers = max(self.live_workers(now), self.config.default_workers)
        event = self.planner(ex, workers, earlier)
        if not isinstance(event, ExecutionFailed):
            event = dataclasses.replace(event, id=decision_id(ex.execution_id, "started"))
        self._send(event)

    def too_big(self, event: Event, size: int, limit: int) -> Event:
        """An execution's decision the hub would refuse: the execution fails instead of
        waiting for it forever."""
        eid = getattr(event, "execution_id", "")
        return ExecutionFailed(
            id=decision_id(eid, "too-big"),
            execution_id=eid,
            error=f"{event.TYPE} would be {size} bytes, over the {limit}-byte event limit",
        )
