"""What a runner holds, and what its worker is told of it.

A thread of the runner (`Intake`) takes tasks from the orchestrator's socket as they come,
even while a stage runs, and checks each (a malformed one is refused, never run). The worker
hears of a task only once it has waited or run `TELL_AFTER_S`, or when it failed: a short task
goes from the orchestrator through the runner to the hub without waking the worker. What it
is told, it names in its heartbeats (so the task's lease holds however long the stage before
it runs) and hands to the next runner should this one be killed. A task that runs
`TELL_AFTER_S` has its ``StageStarted`` sent then, by this thread, on the socket its
completion takes after it. A task the runner took moments before it was killed is not lost either: nobody
claimed it, so the orchestrator pushes it again when its lease ends.

Frames to the worker: ``{"took": [task, ...], "begin": task_id, "ts": wall}`` (either part may
be missing), ``{"done": task_id, ...}`` (with ``"task"`` when the worker was not told of it),
``{"refused": reason}``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import zmq

from actors.worker.lane import Lane, check_task

TELL_AFTER_S: Final = 0.02  # a task that has waited or run this long is told to the worker
STOP_CHECK_S: Final = 0.5  # how often an idle intake thread looks whether the runner is ending


class Ledger:
    """The tasks the runner holds (taken, not begun), the one it runs, and which of them its
    worker knows of. Frames about them are written under its lock, so they reach the worker in
    the order things happened."""

    def __init__(
        self,
        write: Callable[[dict[str, Any]], None],
        prefetch: int,
        started: Callable[[dict[str, Any], float], object] | None = None,
        *,
        gated: bool = False,
    ) -> None:
        self.write = write
        self.started = started  # sends a task's StageStarted
        self.prefetch = max(1, prefetch)
        self.lock = threading.Lock()
        # (task, its bytes as they came, when it was taken: monotonic)
        self.taken: deque[tuple[dict[str, Any], bytes, float]] = deque()
        self.told: set[str] = set()  # task ids the worker knows of
        self.current: dict[str, Any] | None = None
        self.began = 0.0  # monotonic
        self.began_ts = 0.0  # wall
        self.begin_told = False
        self.freed = threading.Event()  # a task was taken off a full ledger
        self.holding = False  # the worker asked the runner to begin no more: take no more
        self.gated = gated  # the worker has not said go yet: take nothing

    def receive(self, pull: zmq.Socket[Any], refused: Callable[[str], None]) -> bool:
        """Take what waits on the socket (nothing once held); whether anything was taken."""
        now = time.monotonic()
        with self.lock:
            if self.holding or self.gated:
                return False
            took = 0
            while True:
                try:
                    payloads = pull.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return took > 0
                for payload in payloads:
                    try:
                        self.taken.append((check_task(payload), payload, now))
                        took += 1
                    except Exception as exc:  # anything a message can provoke is a refusal
                        refused(str(exc)[:500])

    def hold(self) -> None:
        """Take no more, tell the worker of every task held, and that it holds."""
        with self.lock:
            self.holding = True
            took = [t for t, _, _ in self.taken if t["task_id"] not in self.told]
            if took:
                self.told.update(t["task_id"] for t in took)
                self.write({"took": took})
            self.write({"held": True})

    def go(self) -> None:
        """The worker's start is sent: take tasks from now on."""
        with self.lock:
            self.gated = False
        self.freed.set()  # the intake thread waits for room

    def room(self) -> bool:
        return len(self.taken) < self.prefetch and not self.holding and not self.gated

    def begin(self, task: dict[str, Any], *, known: bool) -> float:
        """The runner begins ``task`` (``known``: its worker handed it); its start, wall."""
        with self.lock:
            self.current = task
            self.began, self.began_ts = time.monotonic(), time.time()
            self.begin_told = False
            if known:
                self.told.add(task["task_id"])
            return self.began_ts

    def first(self, task: dict[str, Any], payload: bytes) -> None:
        """A task the runner goes on to by itself (a chain's next): taken, and next to run."""
        with self.lock:
            self.taken.appendleft((task, payload, time.monotonic()))

    def pop(self) -> tuple[dict[str, Any], bytes] | None:
        """The next task taken, and its bytes."""
        with self.lock:
            if not self.taken:
                return None
            task, payload, _ = self.taken.popleft()
        self.freed.set()
        return task, payload

    def stop(self) -> None:
        """The running task ended: no StageStarted of it goes out after this (its completion
        follows), so the hub never gets a task's start after its end."""
        with self.lock:
            self.current = None

    def end(
        self, task_id: str, frame: dict[str, Any], task: dict[str, Any], *, quiet: bool = False
    ) -> None:
        """The task ended: ``frame`` goes to the worker if it knows of the task, and also (with
        the task) if it does not, unless ``quiet`` (its completion went to the hub)."""
        with self.lock:
            if self.current is not None and self.current.get("task_id") == task_id:
                self.current = None
            known = task_id in self.told
            self.told.discard(task_id)
            if known:
                self.write({"done": task_id, **frame})
            elif not quiet:
                self.write({"done": task_id, "task": task, **frame})

    def report(self) -> float:
        """Tell the worker what has waited or run `TELL_AFTER_S`; when the next is due."""
        now = time.monotonic()
        with self.lock:
            # while it holds or runs anything, a look every `TELL_AFTER_S`: the next task the
            # main thread begins is told on time (it begins it without waking this thread)
            busy = self.taken or self.current is not None
            due = now + (TELL_AFTER_S if busy else STOP_CHECK_S)
            took = []
            for task, _, at in self.taken:
                if task["task_id"] in self.told:
                    continue
                if now - at >= TELL_AFTER_S:
                    took.append(task)
                else:
                    due = min(due, at + TELL_AFTER_S)
            frame: dict[str, Any] = {}
            current = self.current
            if current is not None and not self.begin_told:
                if now - self.began >= TELL_AFTER_S:
                    if current["task_id"] not in self.told:
                        took.append(current)
                    self.begin_told = True
                    frame = {"begin": current["task_id"], "ts": self.began_ts}
                    if self.started is not None:  # on the socket its completion takes, before it
                        self.started(current, self.began_ts)
                else:
                    due = min(due, self.began + TELL_AFTER_S)
            if took:
                frame["took"] = took
                self.told.update(t["task_id"] for t in took)
            if frame:
                self.write(frame)
        return due


class Intake(threading.Thread):
    """Takes tasks from the lane's PULL as they come, up to ``prefetch`` not begun, into the
    `Ledger`, waking the main thread (a byte on ``wake``); tells the worker what is due."""

    def __init__(self, lane: Lane, ledger: Ledger, refused: Callable[[str], None]) -> None:
        super().__init__(name="porch-intake", daemon=True)
        self.lane = lane
        self.ledger = ledger
        self.refused = refused
        self.wake, self._wake_w = os.pipe()
        os.set_blocking(self.wake, False)
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()

    def run(self) -> None:
        pull = self.lane.pull
        try:
            while not self._stop.is_set():
                due = self.ledger.report()
                wait_ms = max(0, int((due - time.monotonic()) * 1000 + 0.999))
                if not self.ledger.room():
                    self.ledger.freed.clear()
                    if not self.ledger.room():  # not freed meanwhile
                        self.ledger.freed.wait(wait_ms / 1000)
                elif pull.poll(wait_ms):
                    self._take(pull)
        finally:
            pull.close(linger=0)

    def _take(self, pull: zmq.Socket[Any]) -> None:
        if self.ledger.receive(pull, self.refused):
            with contextlib.suppress(BlockingIOError):  # woken already
                os.write(self._wake_w, b"\0")

    def stop(self) -> None:
        self._stop.set()
        self.ledger.freed.set()
        self.join(2 * STOP_CHECK_S)
