"""``porch orchestrator``: folds the log into executions, decides, and hands tasks to workers.

Startup reads the whole log through the hub and folds it before acting, so a restarted
orchestrator continues every running execution where the log left it. Then, live:

1. fold each event in seq order;
2. decide, per execution touched, and send the decisions as events (ids derived from what is
   decided, so a repeat is a duplicate the hub drops);
3. act only on what came back durable: a ``StageDispatched`` is pushed to the workers then;
4. leases: a pushed task must show signs of life (started, progress, or its worker's heartbeat
   naming it) within ``lease_ms``, or it fails as retryable and runs again as a new attempt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import zmq

from actors.decide import decide, decision_id, refused
from actors.errors import ActorError
from actors.planning import PlanRefusedError, plan_execution
from bus.client import Client, Record
from bus.endpoints import Endpoints, run_dir
from bus.errors import BusError
from bus.events import Event, ExecutionFailed, StageFailed, encode, set_source
from bus.wire import MAX_MESSAGE_BYTES
from stages.registry import Registry
from store.projections import executions as folds

log = logging.getLogger("porch.orchestrator")
WORKER_TYPES: Final = ("WorkerStarted", "WorkerHeartbeat", "WorkerStopped", "StageProgress")
WORKER_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestratorConfig:
    data_dir: Path
    endpoints: Endpoints
    tasks: str
    checkpoint_dir: Path
    lease_ms: int = 10_000
    prefetch: int = 4
    hybrid_min_rows: int = 250_000
    default_workers: int = 2

    def __post_init__(self) -> None:
        if not 100 <= self.lease_ms <= 3_600_000:
            raise ValueError(f"lease_ms must be 100..3600000, got {self.lease_ms}")


@dataclass(slots=True)
class _Lease:
    deadline: float
    execution_id: str
    fields: dict[str, Any]


@dataclass(slots=True)
class _Runtime:
    """What the orchestrator keeps beside the fold: never needed to rebuild state."""

    outbox: deque[tuple[str, bytes]] = field(default_factory=deque)
    leases: dict[str, _Lease] = field(default_factory=dict)
    payloads: dict[str, bytes] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)
    workers: dict[str, float] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)


class Orchestrator:
    def __init__(self, config: OrchestratorConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.state = folds.ExecutionsState()
        self.rt = _Runtime()
        self._stop = False
        self.live = False

    def stop(self, *_: object) -> None:
        self._stop = True

    # --- the loop ----------------------------------------------------------------------------

    def _lock(self) -> int:
        """Hold the data dir's orchestrator lock: two orchestrators would both dispatch."""
        path = run_dir(self.config.data_dir) / "orchestrator.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ActorError(
                f"another orchestrator (pid {holder}) runs for data dir {self.config.data_dir}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    def run(self) -> None:
        set_source("orchestrator")
        self._lock_fd = self._lock()
        ctx = zmq.Context()
        self.client = Client(self.config.endpoints, context=ctx)
        tasks = ctx.socket(zmq.PUSH)
        tasks.setsockopt(zmq.SNDHWM, 1)
        tasks.setsockopt(zmq.LINGER, 0)
        tasks.bind(self.config.tasks)
        types = set(folds.TYPES) | set(WORKER_TYPES)
        sub = self.client.subscribe(from_seq=1, types=types)
        try:
            self._catch_up(sub)
            while not self._stop:
                poller = zmq.Poller()
                poller.register(sub.socket, zmq.POLLIN)
                if self.rt.outbox and self._room():
                    poller.register(tasks, zmq.POLLOUT)
                events = dict(poller.poll(50))
                if events.get(sub.socket):
                    for record in sub.receive(0):
                        self._on_record(record)
                self._decide()
                if events.get(tasks) or (self.rt.outbox and self._room()):
                    self._push(tasks)
                self._check_leases()
        finally:
            sub.close()
            tasks.close(linger=0)
            self.client.close()
            ctx.term()

    def _catch_up(self, sub: Any) -> None:
        head = self.client.head()
        while sub.position < head and not self._stop:
            for record in sub.receive(1000):
                self._on_record(record)
        self.live = True
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
                    self.rt.outbox.append((task.task_id, payload))
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
        self.rt.sent.pop(fields.get("id", ""), None)
        eid = fields.get("execution_id")
        if eid:
            self.rt.dirty.add(eid)
        now = time.monotonic()
        if kind == "StageDispatched":
            ex = self.state.executions.get(eid or "")
            task = (
                ex.tasks.get((fields["step"], fields["phase"], fields["partition"])) if ex else None
            )
            if (
                task is not None
                and task.task_id == fields["task_id"]
                and task.status == "dispatched"
            ):
                self.rt.payloads[fields["task_id"]] = record.payload
                if self.live:
                    self.rt.outbox.append((fields["task_id"], record.payload))
        elif kind in ("StageStarted", "StageProgress"):
            self._renew(fields.get("task_id", ""), now)
        elif kind == "ExecutionCompleted" and self.live:
            self._drop_checkpoints(self.state.executions.get(eid or ""))
        elif kind in ("StageCompleted", "StageFailed"):
            self.rt.leases.pop(fields.get("task_id", ""), None)
            self.rt.payloads.pop(fields.get("task_id", ""), None)
        if kind in WORKER_TYPES and "worker" in fields:
            if kind == "WorkerStopped":
                self.rt.workers.pop(fields["worker"], None)
            else:
                self.rt.workers[fields["worker"]] = now
            if kind == "WorkerHeartbeat":
                for task_id in [fields.get("task_id"), *fields.get("queued", [])]:
                    if task_id:
                        self._renew(task_id, now)

    @staticmethod
    def _drop_checkpoints(ex: folds.ExecutionState | None) -> None:
        """``save_checkpoints=False``: keep the outputs, remove the intermediate artifacts."""
        if ex is None or ex.request.get("save_checkpoints", True) or not ex.plan:
            return
        root = Path(ex.plan["dir"])
        for step in ex.plan["steps"]:
            shutil.rmtree(root / step["id"], ignore_errors=True)

    def _renew(self, task_id: str, now: float) -> None:
        lease = self.rt.leases.get(task_id)
        if lease is not None:
            lease.deadline = now + self.config.lease_ms / 1000

    # --- deciding ----------------------------------------------------------------------------

    def _live_workers(self) -> int:
        now = time.monotonic()
        return sum(1 for seen in self.rt.workers.values() if now - seen < WORKER_TIMEOUT_S)

    def _room(self) -> bool:
        return len(self.rt.leases) < max(1, self._live_workers()) * self.config.prefetch

    def _decide(self) -> None:
        if not self.live or not self.rt.dirty:
            return
        dirty, self.rt.dirty = self.rt.dirty, set()
        workers = max(1, self._live_workers())
        in_flight = sum(
            len(ex.in_flight) for ex in self.state.executions.values() if ex.status == "running"
        )
        capacity = max(0, workers * self.config.prefetch * 2 - in_flight)
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
                    self._start(ex)
                    continue
                for event in decide(
                    ex, self.state, capacity=capacity, lease_ms=self.config.lease_ms
                ):
                    if event.TYPE == "StageDispatched":
                        capacity -= 1
                    self._send(event)
            except Exception:  # one execution's bug must not stop the others
                log.exception("orchestrator: deciding for execution %s failed", eid)

    def _start(self, ex: folds.ExecutionState) -> None:
        try:
            event = plan_execution(
                ex.request,
                registry=self.registry,
                checkpoint_dir=self.config.checkpoint_dir,
                workers=max(self._live_workers(), self.config.default_workers),
                hybrid_min_rows=self.config.hybrid_min_rows,
            )
        except PlanRefusedError as exc:
            self._send(refused(ex.execution_id, str(exc)))
            return
        except Exception as exc:
            log.exception("orchestrator: planning execution %s failed", ex.execution_id)
            self._send(refused(ex.execution_id, f"cannot plan it: {type(exc).__name__}: {exc}"))
            return
        self._send(dataclasses.replace(event, id=decision_id(ex.execution_id, "started")))

    def _send(self, event: Event) -> None:
        if event.id in self.rt.sent:
            return
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
        try:
            self.client.publish(payload)
        except BusError as exc:
            log.error("orchestrator: could not send %s: %s", event.TYPE, exc)
            return
        self.rt.sent[event.id] = time.monotonic()

    # --- acting ------------------------------------------------------------------------------

    def _push(self, tasks: zmq.Socket[Any]) -> None:
        now = time.monotonic()
        while self.rt.outbox and self._room():
            task_id, payload = self.rt.outbox[0]
            try:
                tasks.send(payload, zmq.NOBLOCK)
            except zmq.Again:
                return
            self.rt.outbox.popleft()
            eid = task_id.split("/", 1)[0]
            ex = self.state.executions.get(eid)
            if ex is None or ex.status not in ("running", "paused"):
                continue
            task = next((t for t in ex.tasks.values() if t.task_id == task_id), None)
            if task is not None:
                self.rt.leases[task_id] = _Lease(
                    now + self.config.lease_ms / 1000, eid, self._lease_fields(ex, task)
                )

    @staticmethod
    def _lease_fields(ex: folds.ExecutionState, task: folds.TaskState) -> dict[str, Any]:
        step, phase, part = task.key
        return {
            "execution_id": ex.execution_id,
            "stage": next(s["stage"] for s in ex.plan["steps"] if s["id"] == step),
            "step": step,
            "phase": phase,
            "partition": part,
            "attempt": task.attempt,
            "task_id": task.task_id,
            "worker": task.worker,
        }

    def _check_leases(self) -> None:
        now = time.monotonic()
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
        if stale:
            self.rt.dirty.update(
                e.execution_id for e in self.state.executions.values() if e.status in folds.ACTIVE
            )


def run_orchestrator(config: OrchestratorConfig, registry: Registry) -> int:
    orchestrator = Orchestrator(config, registry)
    signal.signal(signal.SIGTERM, orchestrator.stop)
    signal.signal(signal.SIGINT, orchestrator.stop)
    with contextlib.suppress(KeyboardInterrupt):
        orchestrator.run()
    return 0
