"""``porch worker``: supervises a runner process that runs stage tasks, and reports every step.

The runner takes its tasks from the orchestrator and sends their events (start, progress,
completion) to the hub itself (`actors.worker.lane`): a task's path does not pass through this
loop. The runner tells it, over a pipe, of the tasks that wait or run a while, and of failures
(`actors.worker.intake`); the worker sends the failures, names the tasks in its heartbeats, and
hands a new runner the tasks an old one took and did not begin. Heartbeats (with psutil figures
of the worker, its runner and the host) go out every second whatever the stage is doing, since
the stage computes in another process. A cancel of the running task's execution kills the
runner; a runner that dies is reported as a retryable failure and replaced. A stage that
raises is a failed task, never a dead worker. Its local stages, and their reload, are
`StageSwap`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil
import zmq

from actors.shared import loop
from actors.shared.loop import Actor, LoopConfig, Now, Watched
from actors.shared.stagecfg import StageLoader, StageSet, stage_names
from actors.worker.child import Runner
from actors.worker.lane import LaneArgs, RecentIds, completion
from actors.worker.pipes import FrameError, pack_frame
from actors.worker.stageswap import RELOAD, StageSwap
from bus.client import Client, Record
from bus.endpoints import Endpoints, run_dir
from bus.events import (
    Event,
    StageFailed,
    WorkerHeartbeat,
    WorkerStarted,
    WorkerStopped,
)
from store.projections.task import TaskRef

log = logging.getLogger("porch.worker")
CONTROL: Final = ("CancelRequested", "ExecutionCancelled")
# a paused execution's chains stop at the runner: it goes on to no next task of it until resumed
PAUSES: Final = ("PauseRequested", "ExecutionResumed")


def tasks_endpoint(data_dir: Path) -> str:
    """Where the orchestrator hands out tasks on this host."""
    return f"ipc://{run_dir(data_dir) / 'tasks.sock'}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    data_dir: Path
    endpoints: Endpoints
    tasks: str
    name: str = ""
    heartbeat_s: float = 1.0
    stages: StageSet = field(default_factory=StageSet)
    prefetch: int = 8
    runner_env: Mapping[str, str] = field(default_factory=dict)  # the object store's settings

    def __post_init__(self) -> None:
        if not 0.05 <= self.heartbeat_s <= 60:
            raise ValueError(f"heartbeat_s must be 0.05..60, got {self.heartbeat_s}")


@dataclass(slots=True)
class _Busy:
    """A task the runner holds: taken or handed, begun or waiting."""

    task: dict[str, Any]
    cancelled: bool = False


@dataclass(slots=True)
class WorkerStats:
    tasks: int = 0
    failed: int = 0
    malformed: int = 0
    restarts: int = 0
    cancelled: RecentIds = field(default_factory=RecentIds)  # executions, the newest


class Worker(Actor):
    """A worker on the shared actor loop: it folds nothing of the past (it follows control
    events from the hub's head) and does not read its results back."""

    kind = "worker"
    lock = "process"
    types = frozenset({*CONTROL, *PAUSES, RELOAD})
    follow_only = True
    reads_back = False
    batch_markers = False  # cancels and reloads are rare: no wake-up at every batch of the hub

    def __init__(self, config: WorkerConfig, reload: StageLoader | None = None) -> None:
        self.config = config
        self.name = config.name or f"worker-{socket.gethostname()}-{os.getpid()}"
        self.swap = StageSwap(worker=self.name, reload=reload)
        self.stats = WorkerStats()
        self._held: dict[str, _Busy] = {}  # the runner's tasks by id, in the order it got them
        self._head: str | None = None  # the one it runs
        self._queue: deque[dict[str, Any]] = deque()  # for the next runner: taken, not begun
        self._hold = ""  # "asked" the runner to begin no more tasks (a reload waits), "held"
        self._proc = psutil.Process()
        self._out: list[Event] = []  # events of this turn of the loop
        self._next_beat = 0.0
        self.runner: Runner | None = None
        self._paused = RecentIds()  # executions asked to pause, not resumed since

    # --- the loop's hooks --------------------------------------------------------------------

    def open(self, ctx: zmq.Context[Any], client: Client) -> None:
        lane = LaneArgs(
            tasks=self.config.tasks,
            ingest=self.config.endpoints.ingest,
            worker=self.name,
            prefetch=self.config.prefetch,
            curve=self.config.endpoints.curve,
            gated=True,  # until `went_live`: no task is claimed before this worker's start
            request=self.config.endpoints.request,
        )
        self.runner = Runner(self.config.stages, self.config.runner_env, lane)

    def apply(self, record: Record, fields: dict[str, Any], now: Now) -> None:
        assert self.runner is not None
        if fields["type"] == RELOAD:
            self._say(self.swap.requested(str(fields["id"]), self.runner))
            return
        if fields["type"] in PAUSES:
            self._on_pause(fields, self.runner)
            return
        self._on_control(fields, self.runner)

    def went_live(self, position: int, now: Now) -> list[Event]:
        assert self.runner is not None
        self._next_beat = now.mono
        started = WorkerStarted(
            worker=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            capacity={
                "cpus": psutil.cpu_count() or 1,
                "memory_bytes": psutil.virtual_memory().total,
            },
            stages=stage_names(self.config.stages),
        )
        # the runner claims tasks only from now on: later than this start (its `ts`), so the
        # orchestrator never takes a claim of this process for one of a process before it
        try:
            self.runner.go()
        except OSError:
            self._runner_died(self.runner)
        return [started]

    def watch(self) -> Iterable[tuple[Watched, int]]:
        assert self.runner is not None
        things: list[tuple[Watched, int]] = [(self.runner.fd, zmq.POLLIN)]
        if self.runner.pending:
            things.append((self.runner.stdin_fd, zmq.POLLOUT))
        return things

    def act(self, ready: dict[Any, int], now: Now) -> None:
        runner = self.runner
        assert runner is not None
        if ready.get(runner.fd):
            self._on_runner(runner)
        if self.swap.holding and not self._hold and runner.ready:
            self._hold = "asked"
            self._control(runner, {"control": "hold"})
        if self._hold == "held" and self.swap.holding:
            # it runs nothing and takes no more: what it took goes to the one with new stages
            self._on_frames(runner.kill())
            self._requeue()
            self._hold = ""
            self.swap.swap_if_idle(runner, idle=True)
        if runner.ready and self._queue and not self.swap.holding:
            self._hand_over(runner)
        if runner.pending:
            try:
                runner.flush()
            except OSError:
                self._runner_died(runner)
        if runner.proc is not None and runner.proc.poll() is not None:
            self._runner_died(runner)
        # results first: the heartbeat's psutil figures take a while, so a turn with results
        # leaves the heartbeat to the next one, at once; never more than a beat late, though
        late = now.mono - self._next_beat
        if late >= 0 and (not self._out or late >= self.config.heartbeat_s):
            self._heartbeat(runner)
            self._next_beat = now.mono + self.config.heartbeat_s

    def decide(self, now: Now) -> list[Event]:
        out, self._out = self._out, []
        return out

    def next_due(self, now: Now) -> float:
        if self._out:
            return now.mono
        return self._next_beat

    def stopping(self, now: Now) -> list[Event]:
        if self.runner is not None:
            ended = self._on_frames(self.runner.kill())
            current = self.runner.current()  # ran when it was stopped, told of or not
            if current is not None and current["task_id"] not in ended:
                self._held.setdefault(current["task_id"], _Busy(task=current))
        for busy in self._held.values():
            if not busy.cancelled:
                self._queue.append(busy.task)
        self._held.clear()
        self._head = None
        for task in self._queue:
            self._fail(task, "the worker stopped before finishing", "WorkerStopped", retryable=True)
        self._queue.clear()
        self._send(WorkerStopped(worker=self.name, reason="stopped"))
        out, self._out = self._out, []
        return out

    def close(self) -> None:
        if self.runner is not None:
            self.runner.kill()
            self.runner.slot.close()

    # --- the runner --------------------------------------------------------------------------

    def _hand_over(self, runner: Runner) -> None:
        """Give a new runner the tasks an old one took and did not begin (they run first)."""
        while self._queue:
            task = self._queue.popleft()
            self._held[task["task_id"]] = _Busy(task=task)
            try:
                runner.send(pack_frame(task))
            except OSError:
                self._runner_died(runner)
                return

    def _control(self, runner: Runner, frame: dict[str, Any]) -> None:
        try:
            runner.send(pack_frame(frame))
        except OSError:
            self._runner_died(runner)

    def _on_runner(self, runner: Runner) -> None:
        assert runner.reader is not None
        try:
            frames, closed = runner.reader.read()
        except FrameError as exc:
            log.error("worker %s: runner sent garbage (%s); restarting it", self.name, exc)
            frames, closed = [], True
        self._on_frames(frames, runner)
        if closed:
            self._runner_died(runner)

    def _on_frames(self, frames: list[Any], runner: Runner | None = None) -> set[str]:
        """What the runner said; ``runner`` None: it is gone (only what it did counts). The ids
        of the tasks it said ended."""
        ended: set[str] = set()
        for frame in frames:
            if not isinstance(frame, dict):
                continue
            if "ready" in frame:
                if runner is not None:
                    self._runner_ready(runner, frame)
            elif "took" in frame or "begin" in frame:
                for task in frame.get("took", ()):
                    self._took(task)
                if "begin" in frame:  # of a runner gone too: it died running that one
                    self._begun(str(frame["begin"]))
            elif "done" in frame:
                ended.add(str(frame["done"]))
                self._done(str(frame["done"]), frame)
            elif "held" in frame:
                self._hold = "held" if runner is not None else ""
            elif "refused" in frame:
                self.stats.malformed += 1
                log.warning("worker %s: refused a task: %s", self.name, frame["refused"])
            else:
                log.error("worker %s: its runner said %s", self.name, str(frame)[:300])
        return ended

    def _runner_ready(self, runner: Runner, frame: dict[str, Any]) -> None:
        self._hold = ""  # a new runner: it holds nothing back
        self._say(self.swap.runner_said(runner, frame))
        if runner.ready and self.stats.cancelled:
            self._control(
                runner, {"control": "cancel", "execution_ids": self.stats.cancelled.ids()}
            )
        if runner.ready and self._paused:
            self._control(runner, {"control": "pause", "execution_ids": self._paused.ids()})

    def _took(self, task: dict[str, Any]) -> None:
        """A task the runner took from the orchestrator."""
        busy = _Busy(task=task)
        self._held[task["task_id"]] = busy
        if task["execution_id"] in self.stats.cancelled:  # the runner skips it
            busy.cancelled = True
            self._fail(task, "the execution was cancelled", "Cancelled", retryable=False)

    def _begun(self, task_id: str) -> None:
        """The runner has run the task a while (a short one is never told of); it sent the
        task's StageStarted itself, on the socket its completion takes."""
        self._head = task_id

    def _done(self, task_id: str, frame: dict[str, Any]) -> None:
        """A task ended: told of before, or (with its map) one that failed, or whose completion
        the runner could not send, or that it skipped."""
        busy = self._held.pop(task_id, None)
        if self._head == task_id:
            self._head = None
        if busy is None and isinstance(frame.get("task"), dict):
            busy = _Busy(task=frame["task"])
        if busy is None or busy.cancelled:
            return
        if frame.get("skipped"):  # of an execution cancelled before the worker heard of it
            self._fail(busy.task, "the execution was cancelled", "Cancelled", retryable=False)
            return
        self.stats.tasks += 1
        if frame.get("sent"):
            return
        if frame.get("ok"):
            self._send(completion(busy.task, frame, self.name, float(frame.get("started_ts", 0.0))))
        else:
            self._fail(
                busy.task,
                str(frame.get("error", "failed")),
                str(frame.get("error_type", "")),
                retryable=bool(frame.get("retryable", False)),
                permanent=bool(frame.get("permanent", False)),
                traceback_path=str(frame.get("traceback_path", "")),
                report=frame.get("report") or {},
                lost=str(frame.get("lost", "")),
            )

    def _on_pause(self, fields: dict[str, Any], runner: Runner) -> None:
        """A pause asked (or a resume done): the runner goes on to no next task of it (a
        chain's, `actors.orchestrator.chains`) until it is resumed."""
        execution = str(fields.get("execution_id", ""))
        if fields["type"] == "PauseRequested":
            self._paused.add([execution])
            self._control(runner, {"control": "pause", "execution_ids": [execution]})
        else:
            self._paused.discard(execution)
            self._control(runner, {"control": "resume", "execution_ids": [execution]})

    def _on_control(self, fields: dict[str, Any], runner: Runner) -> None:
        """A cancel: what the worker holds of the execution fails as cancelled, the runner skips
        what it took of it, and the runner is killed if it runs a task of it."""
        execution = fields.get("execution_id", "")
        self.stats.cancelled.add([execution])
        self._control(runner, {"control": "cancel", "execution_ids": [execution]})
        for task in [t for t in self._queue if t["execution_id"] == execution]:
            self._queue.remove(task)
            self._fail(task, "the execution was cancelled", "Cancelled", retryable=False)
        current = runner.current()
        running = current["task_id"] if current is not None else None
        for task_id, busy in self._held.items():  # waiting: the runner skips it
            mine = busy.task["execution_id"] == execution
            if mine and task_id != running and not busy.cancelled:
                busy.cancelled = True
                self._fail(busy.task, "the execution was cancelled", "Cancelled", retryable=False)
        if current is None or current["execution_id"] != execution:
            return
        ended = self._on_frames(runner.kill())
        killed = runner.current()  # what it ran when it died: that one, or the next
        if killed is not None and killed["task_id"] not in ended:
            busy = self._held.pop(killed["task_id"], None) or _Busy(task=killed)
            if killed["execution_id"] == execution:
                if not busy.cancelled:
                    self._fail(busy.task, "cancelled while running", "Cancelled", retryable=False)
            elif not busy.cancelled:
                self._queue.appendleft(busy.task)  # cut short by the kill, not by its fault
        self._head = None
        self._requeue()
        runner.start()
        self.stats.restarts += 1

    def _requeue(self) -> None:
        """Tasks a runner that is gone took and did not begin: for the next one."""
        waiting = [b.task for b in self._held.values() if not b.cancelled]
        self._held.clear()
        self._queue.extendleft(reversed(waiting))

    def _runner_died(self, runner: Runner) -> None:
        """The task it ran failed (retryable: an attempt); what it took, to the next one."""
        ended = self._on_frames(runner.kill())
        code = runner.proc.returncode if runner.proc is not None else None
        current = runner.current()
        busy = None
        if current is not None and current["task_id"] not in ended:
            busy = self._held.pop(current["task_id"], None) or _Busy(task=current)
        self._head = None
        self._requeue()
        if busy is not None and not busy.cancelled:
            self._fail(
                busy.task,
                f"the runner process died (exit {code}) while running the task",
                "RunnerDied",
                retryable=True,
            )
        runner.start()
        self.stats.restarts += 1

    # --- events out --------------------------------------------------------------------------

    def _send(self, event: Event) -> None:
        self._out.append(event)

    def _say(self, event: Event | None) -> None:
        if event is not None:
            self._out.append(event)

    def _fail(
        self,
        task: dict[str, Any],
        error: str,
        error_type: str,
        *,
        retryable: bool,
        permanent: bool = False,
        traceback_path: str = "",
        report: dict[str, Any] | None = None,
        lost: str = "",
    ) -> None:
        self.stats.failed += 1
        self._send(
            StageFailed(
                **TaskRef.of(task).fields(),
                worker=self.name,
                error=error,
                error_type=error_type,
                retryable=retryable,
                permanent=permanent,
                traceback_path=traceback_path,
                report=dict(report or {}),
                lost=lost,
            )
        )

    def _heartbeat(self, runner: Runner) -> None:
        try:
            procs = [self._proc]
            with contextlib.suppress(psutil.Error):
                if runner.pid:
                    procs.append(psutil.Process(runner.pid))
            cpu = sum(p.cpu_percent() for p in procs)
            rss = sum(p.memory_info().rss for p in procs)
            memory = sum(p.memory_percent() for p in procs)
            disk = (
                psutil.disk_usage(str(self.config.data_dir)).percent
                if self.config.data_dir.exists()
                else 0.0
            )
        except psutil.Error:
            cpu = memory = disk = 0.0
            rss = 0
        self._send(
            WorkerHeartbeat(
                worker=self.name,
                host=socket.gethostname(),
                cpu_percent=float(cpu),
                memory_percent=float(memory),
                rss_bytes=int(rss),
                host_cpu_percent=float(psutil.cpu_percent()),
                host_memory_percent=float(psutil.virtual_memory().percent),
                disk_percent=float(disk),
                task_id=self._head,
                queued=[i for i, b in self._held.items() if i != self._head and not b.cancelled]
                + [t["task_id"] for t in self._queue],
                malformed=self.stats.malformed,
            )
        )


def run_worker(config: WorkerConfig, reload: StageLoader | None = None) -> int:
    """Run until SIGTERM or SIGINT; ``reload`` reads the local config's stages again."""
    return loop.run(
        Worker(config, reload), LoopConfig(data_dir=config.data_dir, endpoints=config.endpoints)
    )
