"""The runner's loop: tasks in, one at a time, and what became of each out to its worker.

Tasks come from two places. With a `Lane` (how a worker starts its runner) the runner's
intake thread takes them from the orchestrator's tasks socket as they come
(`actors.worker.intake`); this loop runs them in order and sends each completion to the hub
itself. The worker hears only of what waits or runs a while, and of failures. The worker also
writes tasks on stdin (those a killed runner took and did not begin): they run first. Without
a lane (a runner started on its own) stdin is the only source, and each task is answered with
its whole result, as `taskexec.execute` gives it.

A task that names tasks to follow it (``then``: `actors.orchestrator.chains`) is completed with
the hub's acknowledgement, and the next one is run right after, ahead of any other: nobody
pushes it to this runner. Not when the runner is held, or the execution cancelled or asked to
pause, nor when the hub did not acknowledge (the orchestrator then sees the next task's lease
end, and runs it again).

Control frames on stdin: ``{"control": "cancel", "execution_ids": [...]}`` (a task of these
taken and not begun is skipped: its worker fails those it knows of) and ``{"control":
"hold"}`` (begin no more tasks; answered ``{"held": true}`` once the running one ended), which
a worker sends before it replaces the runner with one of reloaded stages, and ``{"control":
"go"}`` (a runner started gated takes tasks from now on: its worker's start is sent), and
``{"control": "pause" | "resume", "execution_ids": [...]}`` (no chain of these goes on here,
or again).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgpack
import zmq

from actors.worker.intake import Intake, Ledger
from actors.worker.lane import Lane, RecentIds
from actors.worker.nowslot import NowSlot
from actors.worker.output import OutputPump
from actors.worker.pipes import FrameError, FrameReader, pack_frame
from stages import progress
from store.projections.task import follow_on

if TYPE_CHECKING:
    from stages.registry import Registry

PROGRESS_EVERY_S: Final = 0.5
MESSAGE_MAX_CHARS: Final = 200
IDLE_TRIM_S: Final = 30.0  # with no task for this long, the runner returns its free memory
# (long enough for the steps of a sequential execution, which go to one worker after another)
STDIN: Final = 0


class TaskLoop:
    def __init__(
        self,
        results: int,
        registry: Registry,
        output: OutputPump,
        *,
        lane: Lane | None = None,
        slot: NowSlot | None = None,
        execute: Callable[[dict[str, Any], Registry], dict[str, Any]],
        trim: Callable[[], None],
        log_path: Callable[[object], Any],
        say_failure: Callable[[dict[str, Any]], None],
        control: int = STDIN,
        idle_trim_s: float = IDLE_TRIM_S,
    ) -> None:
        self.results = results
        self.registry = registry
        self.output = output
        self.lane = lane
        self.slot = slot
        self.execute = execute
        self.trim = trim
        self.log_path = log_path
        self.say_failure = say_failure
        self.control = FrameReader(control)
        self.idle_trim_s = idle_trim_s
        self.handed: deque[dict[str, Any]] = deque()  # written by the worker: they run first
        self.cancelled = RecentIds()
        self.paused = RecentIds()  # executions whose chains stop here (their worker says so)
        self.holding = False
        self.held = False  # said so
        self.ran = False  # a task ran since the runner last trimmed its memory
        self.closed = False
        self._write = threading.Lock()  # frames from the intake thread and this one, whole
        self.poller = zmq.Poller()
        self.poller.register(control, zmq.POLLIN)
        self.ledger: Ledger | None = None
        self.intake: Intake | None = None
        if lane is not None:
            self.ledger = Ledger(self._say, lane.args.prefetch, lane.started, gated=lane.args.gated)
            self.intake = Intake(lane, self.ledger, lambda why: self._say({"refused": why}))
            self.poller.register(self.intake.wake, zmq.POLLIN)

    def run(self) -> int:
        """Run tasks until the worker closes stdin."""
        if self.intake is not None:
            self.intake.start()
        try:
            while not self.closed:
                self._gather()
                task, payload, known = self._next()
                if task is not None:
                    self._run(task, payload, known=known)
        finally:
            if self.intake is not None:
                self.intake.stop()
        return 0

    # --- tasks in ----------------------------------------------------------------------------

    def _gather(self) -> None:
        """Wait for work when there is none (or when held); then read stdin without waiting."""
        taken = self.ledger.taken if self.ledger is not None else ()
        idle = self.holding or (not self.handed and not taken)
        if idle and not self.poller.poll(self.idle_trim_s * 1000 if self.ran else None):
            self.trim()
            self.ran = False
            return
        if self.intake is not None:
            with contextlib.suppress(BlockingIOError):
                os.read(self.intake.wake, 4096)
        self._read_control()

    def _read_control(self) -> None:
        try:
            frames, self.closed = self.control.read()
        except FrameError as exc:
            self._say({"ok": False, "error": str(exc), "error_type": "FrameError"})
            return
        for frame in frames:
            if not isinstance(frame, dict):
                self._say(
                    {"ok": False, "error": "a frame must be a map", "error_type": "FrameError"}
                )
            elif "control" in frame:
                self._on_control(frame)
            else:
                self.handed.append(frame)

    def _on_control(self, frame: dict[str, Any]) -> None:
        what = frame["control"]
        if what == "cancel":
            self.cancelled.add(str(e) for e in frame.get("execution_ids", ()))
        elif what == "hold":
            self.holding = True
        elif what == "go" and self.ledger is not None:
            self.ledger.go()
        elif what == "pause":
            self.paused.add(str(e) for e in frame.get("execution_ids", ()))
        elif what == "resume":
            for execution in frame.get("execution_ids", ()):
                self.paused.discard(str(execution))

    def _next(self) -> tuple[dict[str, Any] | None, bytes, bool]:
        """The next task to run, its bytes (empty: not known), and whether the worker knows of
        it: one the worker handed, else one taken (of an execution not cancelled); None when
        there is none, or when held."""
        if self.holding:
            if not self.held:
                self.held = True
                if self.ledger is not None:
                    self.ledger.hold()
                else:
                    self._say({"held": True})
            return None, b"", False
        if self.handed:
            return self.handed.popleft(), b"", True
        while self.ledger is not None and (taken := self.ledger.pop()) is not None:
            task, payload = taken
            if task["execution_id"] not in self.cancelled:
                return task, payload, False
            self.ledger.end(task["task_id"], {"skipped": True}, task)
        return None, b"", False

    # --- running one -------------------------------------------------------------------------

    def _run(self, task: dict[str, Any], payload: bytes, *, known: bool) -> None:
        task_id = str(task.get("task_id"))
        ledger = self.ledger
        if self.slot is not None:  # what its worker reads should this runner die in the task
            self.slot.set(payload or msgpack.packb(task, use_bin_type=True))
        started = ledger.begin(task, known=known) if ledger is not None else time.time()
        self.output.begin(self.log_path(task))
        lane = self.lane
        tell = (
            self._say
            if lane is None
            else lambda f: lane.progress(task, f["progress"], f["message"])
        )
        with progress.listening(ProgressFrames(tell, task_id)):
            result = self.execute(task, self.registry)
        if ledger is not None:
            ledger.stop()
        if not result.get("ok"):
            self.say_failure(result)
        self.output.end()  # the log is whole before the result goes back
        self.ran = True
        if ledger is None:
            self._say({**result, "done": task_id})
        elif result.get("ok") and self.lane is not None:
            nxt, nxt_payload = self._follow_on(task, result)
            if self.lane.complete(task, result, started, nxt):
                ledger.end(task_id, {"ok": True, "sent": True}, task, quiet=True)
                if nxt is not None:
                    ledger.first(nxt, nxt_payload)
            else:
                ledger.end(task_id, {**result, "started_ts": started}, task)
        else:
            ledger.end(task_id, {**result, "started_ts": started}, task)
        if self.slot is not None:
            self.slot.clear()

    def _follow_on(
        self, task: dict[str, Any], result: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, bytes]:
        """The task this runner goes on to after ``task`` (its map and bytes), or ``(None,
        b"")``: none follows, or this runner may not go on."""
        lane = self.lane
        if lane is None or not lane.chains or not task.get("then"):
            return None, b""
        self._read_control()  # a pause, cancel or hold that came while the task ran
        execution = task["execution_id"]
        if self.holding or execution in self.cancelled or execution in self.paused:
            return None, b""
        # the chain was checked with the task (`lane.check_task`); only its input is filled in
        nxt = follow_on(task, str(result["artifact"]), str(result["sha256"]))
        if nxt is None:
            return None, b""
        return nxt, msgpack.packb(nxt, use_bin_type=True)

    # --- frames out --------------------------------------------------------------------------

    def _say(self, frame: dict[str, Any]) -> None:
        """A frame for the worker, written at once (from this thread or the intake's)."""
        view = memoryview(pack_frame(frame))
        with self._write:
            try:
                while view:
                    view = view[os.write(self.results, view) :]
            except BrokenPipeError:
                self.closed = True  # the worker is gone: so is this runner, by its lifeline


class ProgressFrames:
    """What the stage reports of its progress (with a lane, sent as ``StageProgress`` on the
    socket its completion takes; without one, as frames): at most one every
    `PROGRESS_EVERY_S`, none in a task's first one (a short task tells nothing), and only when
    something changed."""

    def __init__(self, tell: Callable[[dict[str, Any]], None], task_id: str) -> None:
        self.tell = tell
        self.task_id = task_id
        self.last = time.monotonic()
        self.said: tuple[float, str] = (0.0, "")

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        said = (round(fraction, 3), message[:MESSAGE_MAX_CHARS])
        if now - self.last < PROGRESS_EVERY_S or said == self.said:
            return
        self.last, self.said = now, said
        self.tell({"progress": said[0], "message": said[1], "task_id": self.task_id})
