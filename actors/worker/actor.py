"""``porch worker``: pulls stage tasks, runs them in its runner process, reports every step.

The loop is the only place with I/O. It hands tasks to the runner, at most `RUNNER_DEPTH` at
once (the next one waits in the pipe, so the runner never idles for a round trip through this
loop), announces ``StageStarted`` when a task reaches the front (its runner begins it then), and
turns the runner's answers, which come in order, into ``StageCompleted`` or ``StageFailed`` (and
what a stage says of its progress into ``StageProgress``). Heartbeats (with psutil figures of the worker, its runner
and the host) go out every second whatever the stage is doing, since the stage computes in
another process. A cancel of the running task's execution kills the runner; a runner that dies
is reported as a retryable failure and replaced. A stage that raises is a failed task, never a
dead worker. Its local stages, and their reload, are `StageSwap`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil
import zmq

from actors.shared import loop
from actors.shared.lifeline import tie
from actors.shared.loop import Actor, LoopConfig, Now, Watched
from actors.shared.stagecfg import StageLoader, StageSet, stage_names
from actors.worker.pipes import HEADER, FrameError, FrameReader, pack_frame
from actors.worker.runner import PLAIN_FRAMES_ENV
from actors.worker.stageswap import RELOAD, StageSwap
from bus.client import Client, Record
from bus.curve import secure
from bus.endpoints import Endpoints, run_dir
from bus.errors import MalformedEventError
from bus.events import (
    Event,
    StageCompleted,
    StageDispatched,
    StageFailed,
    StageProgress,
    StageStarted,
    WorkerHeartbeat,
    WorkerStarted,
    WorkerStopped,
)
from bus.protocol import SOCKET_MAX_BYTES
from bus.schema import check_map, from_map, to_map
from bus.wire import unpack_map
from store.projections.task import TaskRef

log = logging.getLogger("porch.worker")
CONTROL: Final = ("CancelRequested", "ExecutionCancelled")
RUNNER_DEPTH: Final = 2  # tasks handed to the runner at once: the one it runs and the next
START_DELAY_S: Final = 0.02  # StageStarted waits this long for the task's result: a task that
# ends sooner says when it started in its StageCompleted (one event, not two: less for the hub,
# every fold and the log to carry), and a longer one's start goes out with its ts still the
# moment the runner was handed it
# a runner keeps the memory a task freed for the next one (sequential steps allocate frames as
# big again; memory faulted in afresh cost a third more system time): glibc serves arrays up to
# 32 MB from its heap and does not give the heap's top back; the runner trims itself once idle
# (`actors.worker.runner._trim`). What the environment sets instead wins.
RUNNER_MALLOC: Final = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(4 << 30),
}
PIPELINE_MAX_BYTES: Final = 16 * 1024  # a bigger task waits for an idle runner: the pipe
# holds 64 KiB, and a blocked write would stop this loop (and its heartbeats)


def compression_env(*, compress: bool) -> dict[str, str]:
    """What tells a runner whether to compress big frames (`artifacts.write_frame`)."""
    return {} if compress else {PLAIN_FRAMES_ENV: "1"}


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


class Runner:
    """The child process that runs tasks; restartable."""

    def __init__(self, stages: StageSet, env: Mapping[str, str] | None = None) -> None:
        self.stages = stages
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: FrameReader | None = None
        self.ready = False
        self.start()

    def start(self) -> None:
        args = [sys.executable, "-m", "actors.worker.runner", *self.stages.runner_args()]
        tied = tie()
        # the object store's settings, if any
        tied["env"] = {**RUNNER_MALLOC, **tied["env"], **self.env}
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, **tied)
        assert self.proc.stdout is not None
        self.reader = FrameReader(self.proc.stdout.fileno())
        self.ready = False

    @property
    def fd(self) -> int:
        assert self.proc is not None
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def send(self, frame: bytes) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(frame)
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            for stream in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()

    def restart(self) -> None:
        self.kill()
        self.start()

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0


@dataclass(slots=True)
class _Busy:
    """A task handed to the runner; the first of them is the one it runs."""

    task: dict[str, Any]
    started: float
    cancelled: bool = False


@dataclass(slots=True)
class WorkerStats:
    tasks: int = 0
    failed: int = 0
    malformed: int = 0
    restarts: int = 0
    cancelled: set[str] = field(default_factory=set)


class Worker(Actor):
    """A worker on the shared actor loop: it folds nothing of the past (it follows control
    events from the hub's head) and does not read its results back."""

    kind = "worker"
    lock = "process"
    types = frozenset({*CONTROL, RELOAD})
    follow_only = True
    reads_back = False
    batch_markers = False  # cancels and reloads are rare: no wake-up at every batch of the hub

    def __init__(self, config: WorkerConfig, reload: StageLoader | None = None) -> None:
        self.config = config
        self.name = config.name or f"worker-{socket.gethostname()}-{os.getpid()}"
        self.swap = StageSwap(worker=self.name, reload=reload)
        self.stats = WorkerStats()
        self._running: deque[_Busy] = deque()  # handed to the runner, in order
        self._queue: deque[dict[str, Any]] = deque()
        self._frames: dict[str, bytes] = {}  # task id -> its frame for the runner, as it came
        self._proc = psutil.Process()
        self._out: list[Event] = []  # events of this turn of the loop
        self._starts: list[Event] = []  # StageStarted held back until `_starts_due`
        self._starts_due = 0.0
        self._next_beat = 0.0
        self.pull: zmq.Socket[Any] | None = None
        self.runner: Runner | None = None

    # --- the loop's hooks --------------------------------------------------------------------

    def open(self, ctx: zmq.Context[Any], client: Client) -> None:
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 1)
        pull.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.MAXMSGSIZE, SOCKET_MAX_BYTES)
        secure(pull, self.config.tasks, self.config.endpoints.curve, server=False)
        pull.connect(self.config.tasks)
        self.pull = pull
        self.runner = Runner(self.config.stages, self.config.runner_env)

    def apply(self, record: Record, fields: dict[str, Any], now: Now) -> None:
        assert self.runner is not None
        if fields["type"] == RELOAD:
            self._say(self.swap.requested(str(fields["id"]), self.runner))
            return
        self._on_control(fields, self.runner)

    def went_live(self, position: int, now: Now) -> list[Event]:
        self._next_beat = now.mono
        return [
            WorkerStarted(
                worker=self.name,
                host=socket.gethostname(),
                pid=os.getpid(),
                capacity={
                    "cpus": psutil.cpu_count() or 1,
                    "memory_bytes": psutil.virtual_memory().total,
                },
                stages=stage_names(self.config.stages),
            )
        ]

    def watch(self) -> Iterable[tuple[Watched, int]]:
        assert self.runner is not None
        assert self.pull is not None
        things: list[tuple[Watched, int]] = [(self.runner.fd, zmq.POLLIN)]
        if len(self._queue) < self.config.prefetch:
            things.append((self.pull, zmq.POLLIN))
        return things

    def act(self, ready: dict[Any, int], now: Now) -> None:
        runner, pull = self.runner, self.pull
        assert runner is not None
        assert pull is not None
        if ready.get(runner.fd):
            self._on_runner(runner)
        if ready.get(pull):
            while len(self._queue) < self.config.prefetch:
                try:  # a message may hold several tasks: all are taken at once
                    payloads = pull.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                for payload in payloads:
                    self._on_task(payload)
        self.swap.swap_if_idle(runner, idle=not self._running)
        if runner.ready and self._queue and not self.swap.holding:
            self._hand_over(runner)
        if runner.proc is not None and runner.proc.poll() is not None:
            self._runner_died(runner)
        # results first: the heartbeat's psutil figures take a while, so a turn with results
        # leaves the heartbeat to the next one, at once; never more than a beat late, though
        late = now.mono - self._next_beat
        if late >= 0 and (not self._out or late >= self.config.heartbeat_s):
            self._heartbeat(runner)
            self._next_beat = now.mono + self.config.heartbeat_s

    def decide(self, now: Now) -> list[Event]:
        """This turn's events, with the held-back starts once they are due (a task that ended
        meanwhile took its own start into its completion)."""
        if self._starts and now.mono >= self._starts_due:
            self._out[:0] = self._starts
            self._starts = []
        out, self._out = self._out, []
        return out

    def next_due(self, now: Now) -> float:
        if self._out:
            return now.mono
        return min(self._next_beat, self._starts_due) if self._starts else self._next_beat

    def stopping(self, now: Now) -> list[Event]:
        for busy in reversed(self._running):
            if not busy.cancelled:
                self._queue.appendleft(busy.task)
        self._running.clear()
        for task in self._queue:
            self._fail(task, "the worker stopped before finishing", "WorkerStopped", retryable=True)
        self._queue.clear()
        if self.runner is not None:
            self.runner.kill()
        self._out[:0] = self._starts
        self._starts = []
        self._send(WorkerStopped(worker=self.name, reason="stopped"))
        out, self._out = self._out, []
        return out

    def close(self) -> None:
        if self.runner is not None:
            self.runner.kill()
        if self.pull is not None:
            self.pull.close(linger=0)

    # --- events in ---------------------------------------------------------------------------

    def _on_task(self, payload: bytes) -> None:
        try:
            schema, task = check_map(unpack_map(payload), payload)
            if schema.cls is not StageDispatched:
                raise MalformedEventError(f"a task must be StageDispatched, got {schema.type}")
            whole = task.keys() == schema.allowed  # as the orchestrator sends it: every field
            if not whole:  # an older version, or defaults left out: the fields as declared
                task = to_map(from_map(task, payload))
            TaskRef.of(task)  # what every event of its run names
        except Exception as exc:  # anything a message can provoke is a refusal, never a crash
            self.stats.malformed += 1
            log.warning("worker %s: refused a task: %s", self.name, exc)
            return
        if whole:  # the runner gets the bytes as checked: no second packing
            self._frames[task["task_id"]] = HEADER.pack(len(payload)) + payload
        if task["execution_id"] in self.stats.cancelled:
            self._fail(task, "the execution was cancelled", "Cancelled", retryable=False)
            return
        self._queue.append(task)

    def _hand_over(self, runner: Runner) -> None:
        """Give the runner queued tasks up to `RUNNER_DEPTH`; announce the one it starts."""
        while self._queue and len(self._running) < RUNNER_DEPTH:
            task = self._queue[0]
            frame = self._frames.get(task["task_id"]) or pack_frame(task)
            if self._running and len(frame) > PIPELINE_MAX_BYTES:
                return
            self._queue.popleft()
            self._frames.pop(task["task_id"], None)
            self._running.append(_Busy(task=task, started=time.monotonic()))
            try:
                runner.send(frame)
            except OSError:
                self._runner_died(runner)
                return
            if len(self._running) == 1:  # after the send: the runner begins it meanwhile
                self._announce(task)

    def _announce(self, task: dict[str, Any]) -> None:
        if not self._starts:
            self._starts_due = time.monotonic() + START_DELAY_S
        self._starts.append(StageStarted(**TaskRef.of(task).fields(), worker=self.name))

    def _on_runner(self, runner: Runner) -> None:
        assert runner.reader is not None
        try:
            frames, closed = runner.reader.read()
        except FrameError as exc:
            log.error("worker %s: runner sent garbage (%s); restarting it", self.name, exc)
            frames, closed = [], True
        for frame in frames:
            if isinstance(frame, dict) and "ready" in frame:
                self._say(self.swap.runner_said(runner, frame))
                continue
            if isinstance(frame, dict) and "progress" in frame:
                self._progress(frame)
                continue
            if not self._running:
                continue
            busy = self._running.popleft()
            if not busy.cancelled and isinstance(frame, dict):
                self.stats.tasks += 1
                if frame.get("ok"):
                    self._complete(busy.task, frame)
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
            if self._running:  # the runner goes on with the next one now
                self._running[0].started = time.monotonic()
                if not self._running[0].cancelled:
                    self._announce(self._running[0].task)
        if closed:
            self._runner_died(runner)

    def _on_control(self, fields: dict[str, Any], runner: Runner) -> None:
        execution = fields.get("execution_id", "")
        self.stats.cancelled.add(execution)
        for task in [t for t in self._queue if t["execution_id"] == execution]:
            self._queue.remove(task)
            self._fail(task, "the execution was cancelled", "Cancelled", retryable=False)
        for busy in list(self._running)[1:]:  # waiting in the pipe: its result will be dropped
            if busy.task["execution_id"] == execution and not busy.cancelled:
                busy.cancelled = True
                self._fail(busy.task, "the execution was cancelled", "Cancelled", retryable=False)
        head = self._running[0] if self._running else None
        if head is not None and head.task["execution_id"] == execution and not head.cancelled:
            self._running.popleft()
            self._requeue()
            runner.restart()
            self.stats.restarts += 1
            self._fail(head.task, "cancelled while running", "Cancelled", retryable=False)

    def _requeue(self) -> None:
        """Tasks handed to a runner that is going away and not begun: back to the queue."""
        while self._running:
            busy = self._running.pop()
            if not busy.cancelled:
                self._queue.appendleft(busy.task)

    def _runner_died(self, runner: Runner) -> None:
        code = runner.proc.poll() if runner.proc is not None else None
        busy = self._running.popleft() if self._running else None
        self._requeue()
        if busy is not None and not busy.cancelled:
            self._fail(
                busy.task,
                f"the runner process died (exit {code}) while running the task",
                "RunnerDied",
                retryable=True,
            )
        runner.restart()
        self.stats.restarts += 1

    # --- events out --------------------------------------------------------------------------

    def _send(self, event: Event) -> None:
        self._out.append(event)

    def _say(self, event: Event | None) -> None:
        if event is not None:
            self._out.append(event)

    def _complete(self, task: dict[str, Any], result: dict[str, Any]) -> None:
        self._send(
            StageCompleted(
                started_ts=self._take_held_start(task["task_id"]),
                **TaskRef.of(task).fields(),
                worker=self.name,
                artifact=str(result["artifact"]),
                rows_in=int(result["rows_in"]),
                rows_out=int(result["rows_out"]),
                bytes=int(result["bytes"]),
                sha256=str(result["sha256"]),
                duration_s=float(result["duration_s"]),
                report=result.get("report", {}),
                extra={str(k): str(v) for k, v in result.get("extra", {}).items()},
                reused=bool(result.get("reused", False)),
            )
        )

    def _take_held_start(self, task_id: str) -> float:
        """A task that ended while its StageStarted was still held back: the start goes in
        its completion instead (one event, not two); its time, or 0.0 if it was sent."""
        for index, start in enumerate(self._starts):
            if getattr(start, "task_id", None) == task_id:
                del self._starts[index]
                return start.ts
        return 0.0

    def _progress(self, frame: dict[str, Any]) -> None:
        """The running task's stage said how far it is (the runner keeps these rare)."""
        head = self._running[0] if self._running else None
        if head is None or head.cancelled:
            return
        with contextlib.suppress(TypeError, ValueError):
            self._send(
                StageProgress(
                    **TaskRef.of(head.task).fields(),
                    worker=self.name,
                    fraction=min(1.0, max(0.0, float(frame["progress"]))),
                    message=str(frame.get("message", ""))[:200],
                )
            )

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
        self._frames.pop(task["task_id"], None)
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
                task_id=self._running[0].task["task_id"] if self._running else None,
                queued=[b.task["task_id"] for b in list(self._running)[1:] if not b.cancelled]
                + [t["task_id"] for t in self._queue],
                malformed=self.stats.malformed,
            )
        )


def run_worker(config: WorkerConfig, reload: StageLoader | None = None) -> int:
    """Run until SIGTERM or SIGINT; ``reload`` reads the local config's stages again."""
    return loop.run(
        Worker(config, reload), LoopConfig(data_dir=config.data_dir, endpoints=config.endpoints)
    )
