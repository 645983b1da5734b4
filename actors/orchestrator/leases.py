"""The orchestrator core's leases, workers and pushes: who holds which task until when, which
workers are alive, and the tasks waiting to go out.

A task's lease starts when it is pushed (or, for a task a runner went on to by itself, when
its dispatch is decided or seen: `actors.orchestrator.chains`) and is renewed by any event of
its worker naming it. A lease that ends fails the attempt as retryable, unless nobody ever
claimed the task: then it is pushed again, the same attempt, at most `PUSH_AGAIN_MAX` times.
A claimed task whose worker stopped, restarted or was counted out fails at once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from actors.shared.ids import decision_id
from actors.shared.now import Now
from bus.events import Event, StageFailed, WorkerLost
from store.projections import executions as folds
from store.projections.task import TaskKey, TaskRef

log = logging.getLogger("porch.orchestrator")
WORKER_TIMEOUT_S: Final = 5.0
PUSH_AGAIN_MAX: Final = 2  # then an unclaimed task's attempt fails, as a retryable one
# a worker's stop is remembered this long (its clock): a claim older than that held a task
# whose lease has long ended; with workers named per process, the record stays bounded
STOPPED_KEPT_S: Final = 3600.0


@dataclass(slots=True)
class Lease:
    """A pushed task's lease. ``worker`` and ``claimed_ts`` say who last claimed the task
    (started it, reported progress, or named it in a heartbeat) and when, by its own clock."""

    deadline: float  # monotonic
    task: TaskRef
    worker: str
    claimed_ts: float = 0.0


@dataclass(slots=True)
class Seen:
    """When a worker was last heard of: monotonic here, and the wall clock of its event."""

    at: float
    ts: float


Push = tuple[str, TaskKey, bytes]  # task id, task key, the StageDispatched payload


class LeaseSettings(Protocol):
    """What of the core's config its leases and pushes read."""

    @property
    def lease_ms(self) -> int: ...

    @property
    def prefetch(self) -> int: ...


class Leases:
    """The leases part of `OrchestratorCore` (which sets these attributes)."""

    state: folds.ExecutionsState
    live: bool
    leases: dict[str, Lease]
    payloads: dict[str, bytes]
    pushed_again: dict[str, int]
    early: dict[str, TaskRef]
    pushes: deque[Push]
    workers: dict[str, Seen]
    lost: dict[str, int]
    out: set[str]
    incarnations: dict[str, float]
    stopped: dict[str, float]
    config: LeaseSettings
    _send: Callable[[Event], bool]  # the core's: decide an event, False if on its way

    def live_workers(self, now: Now) -> int:
        return sum(1 for seen in self.workers.values() if now.mono - seen.at < WORKER_TIMEOUT_S)

    # --- leases and workers ------------------------------------------------------------------

    @staticmethod
    def _lease_of(ex: folds.ExecutionState, task: folds.TaskState) -> tuple[TaskRef, str]:
        step, phase, part = task.key
        assert ex.plan is not None, "a lease of an execution with no plan"
        stage = ex.plan.steps_by_id[step].stage
        ref = TaskRef(ex.execution_id, stage, step, phase, part, task.attempt, task.task_id)
        return ref, task.worker

    def _check_workers(self, now: Now) -> None:
        """Count out the workers heard of for `WORKER_TIMEOUT_S` no more, in the log: their
        heartbeats are not history, but this decision is."""
        for worker, seen in list(self.workers.items()):
            if now.mono - seen.at < WORKER_TIMEOUT_S:
                continue
            # it stays counted until the WorkerLost is back (`apply`): one given up is decided
            # again, and a repeat while one is on its way is dropped by `_send`
            self._send(
                WorkerLost(
                    id=decision_id(worker, "lost", self.lost.get(worker, 0)),
                    worker=worker,
                    last_seen_ts=seen.ts,
                    silent_s=WORKER_TIMEOUT_S,
                )
            )

    def _check_leases(self, now: Now) -> None:
        self._check_workers(now)
        for task_id, lease in list(self.leases.items()):
            error = self._holder_gone(lease)
            if not error and now.mono >= lease.deadline:
                if self._push_again(task_id, lease):
                    continue
                error = f"lease expired: no sign of the task for {self.config.lease_ms} ms"
            if not error:
                continue
            del self.leases[task_id]
            # one id however the attempt is given up: a second reason is the same decision
            self._send(
                StageFailed(
                    **lease.task.fields(),
                    id=decision_id(task_id, "lease"),
                    worker=lease.worker or "unknown",
                    error=error,
                    error_type="LeaseExpired",
                    retryable=True,
                )
            )

    def _push_again(self, task_id: str, lease: Lease) -> bool:
        """A pushed task no worker ever claimed may never have reached one (it waited in the
        socket of a runner that was killed, or of a worker that stopped): it is pushed again,
        the same attempt (a duplicate run writes the same artifact and is counted once), at
        most `PUSH_AGAIN_MAX` times; False if it is not (its attempt fails then)."""
        if lease.worker or self.pushed_again.get(task_id, 0) >= PUSH_AGAIN_MAX:
            return False
        payload = self.payloads.get(task_id)
        if payload is None or not self._wanted(task_id, lease.task.key):
            return False
        del self.leases[task_id]
        self.pushed_again[task_id] = self.pushed_again.get(task_id, 0) + 1
        self.pushes.append((task_id, lease.task.key, payload))
        log.warning("orchestrator: task %s was claimed by no worker; pushed again", task_id)
        return True

    def _holder_gone(self, lease: Lease) -> str:
        """Why the worker that claimed the task cannot finish it, without waiting out the
        lease: it stopped, was counted out, or started anew (a new process that does not claim
        the task) since it claimed it. Empty if it may still."""
        worker = lease.worker
        if not worker or not self.live:
            return ""
        if worker in self.out:
            return f"worker {worker} counted out (silent) while it held the task"
        # not "not heard of": a runner may claim a task before its worker's start is logged
        if self.stopped.get(worker, float("-inf")) >= lease.claimed_ts:
            return f"worker {worker} stopped while it held the task"
        if self.incarnations.get(worker, 0.0) > lease.claimed_ts:
            return f"worker {worker} restarted while it held the task"
        return ""

    # --- pushing tasks -----------------------------------------------------------------------

    def room(self, now: Now) -> int:
        """How many more tasks the workers may hold (``prefetch`` each)."""
        return max(1, self.live_workers(now)) * self.config.prefetch - len(self.leases)

    def take_bundle(self, now: Now) -> list[Push]:
        """The next tasks to push as one message: several when there are plenty for every
        worker (one wakeup of a worker per message), a single one otherwise (spread over
        workers). Empty when there is no room or nothing wanted."""
        room = self.room(now)
        workers = max(1, self.live_workers(now))
        size = max(1, min(room, self.config.prefetch, len(self.pushes) // (2 * workers)))
        bundle: list[Push] = []
        while self.pushes and room > 0 and len(bundle) < size:
            item = self.pushes.popleft()
            if self._wanted(item[0], item[1]):
                bundle.append(item)
        return bundle

    def put_back(self, bundle: list[Push]) -> None:
        """A bundle the socket would not take now: first in line again."""
        self.pushes.extendleft(reversed(bundle))

    def pushed(self, bundle: list[Push], now: Now) -> None:
        """A bundle went to a worker: its leases count from now."""
        deadline = now.mono + self.config.lease_ms / 1000
        for task_id, key, _ in bundle:
            early = self.early.get(task_id)
            if early is not None:
                self.leases[task_id] = Lease(deadline, early, "")
                continue
            eid = task_id.split("/", 1)[0]
            ex = self.state.executions.get(eid)
            if ex is None or ex.status not in ("running", "paused"):
                continue
            task = ex.tasks.get(key)
            if task is not None and task.task_id == task_id:
                self.leases[task_id] = Lease(deadline, *self._lease_of(ex, task))

    def _wanted(self, task_id: str, key: TaskKey) -> bool:
        """Is this dispatched task still to be run? Not once a cancel of its execution is asked
        (the workers fail what they hold of it at once, which frees room the rest must not take)
        or it has ended, nor once a newer attempt has replaced it or a worker has started it."""
        ex = self.state.executions.get(task_id.split("/", 1)[0])
        if ex is None or ex.status not in ("running", "paused") or ex.cancel_requested:
            return False
        task = ex.tasks.get(key)
        if task is None:
            return False
        early = self.early.get(task_id)
        if early is not None:  # its dispatch is on its way: unless it is done or superseded
            return task.attempt < early.attempt and task.status != "completed"
        return task.task_id == task_id and task.status == "dispatched"
