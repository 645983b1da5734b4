"""The worker's handle on its runner: the child process, its pipes, its `NowSlot`.

What the worker writes to the runner (tasks, control) waits in `Runner.pending` while the pipe
is full, so the worker's loop never blocks on a runner deep in a stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any, Final

from actors.shared.lifeline import tie
from actors.shared.stagecfg import StageSet
from actors.worker.lane import LaneArgs, check_task
from actors.worker.nowslot import NowSlot
from actors.worker.pipes import FrameError, FrameReader, pack_frame
from actors.worker.runner import PLAIN_FRAMES_ENV

# a runner keeps the memory a task freed for the next one (sequential steps allocate frames as
# big again; memory faulted in afresh cost a third more system time): glibc serves arrays up to
# 32 MB from its heap and does not give the heap's top back; the runner trims itself once idle
# (`actors.worker.runner._trim`). What the environment sets instead wins.
RUNNER_MALLOC: Final = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(4 << 30),
}


def compression_env(*, compress: bool) -> dict[str, str]:
    """What tells a runner whether to compress big frames (`artifacts.write_frame`)."""
    return {} if compress else {PLAIN_FRAMES_ENV: "1"}


class Runner:
    """The child process that runs tasks; restartable. With `LaneArgs` it takes its tasks from
    the orchestrator itself."""

    def __init__(
        self, stages: StageSet, env: Mapping[str, str] | None = None, lane: LaneArgs | None = None
    ) -> None:
        self.stages = stages
        self.env = dict(env or {})
        self.lane = lane
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: FrameReader | None = None
        self.ready = False
        self.pending = bytearray()
        self.slot = NowSlot.create()
        self.start()

    def start(self) -> None:
        args = [sys.executable, "-m", "actors.worker.runner", *self.stages.runner_args()]
        if self.lane is not None:
            args += self.lane.argv()
        args += ["--now-fd", str(self.slot.fd)]
        self.slot.clear()
        tied = tie()
        tied["pass_fds"] = (*tied["pass_fds"], self.slot.fd)
        # the object store's settings, if any
        tied["env"] = {**RUNNER_MALLOC, **tied["env"], **self.env}
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, **tied)
        assert self.proc.stdout is not None
        assert self.proc.stdin is not None
        self.reader = FrameReader(self.proc.stdout.fileno())
        os.set_blocking(self.proc.stdin.fileno(), False)
        self.ready = False
        self.pending.clear()

    @property
    def fd(self) -> int:
        assert self.proc is not None
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    @property
    def stdin_fd(self) -> int:
        assert self.proc is not None
        assert self.proc.stdin is not None
        return self.proc.stdin.fileno()

    def send(self, frame: bytes) -> None:
        """Write ``frame`` (now, or as the pipe takes it: `flush`); OSError if the runner is
        gone."""
        self.pending += frame
        self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        try:
            sent = os.write(self.stdin_fd, self.pending)
        except BlockingIOError:
            return
        del self.pending[:sent]

    def kill(self) -> list[Any]:
        """Stop the process; the frames it wrote before it died, not read yet."""
        left: list[Any] = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.reader is not None:
                with contextlib.suppress(FrameError, OSError):
                    left = self.reader.read()[0]
            for stream in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
            self.reader = None
        return left

    def current(self) -> dict[str, Any] | None:
        """The task the runner runs (ran, once it is gone), as its `NowSlot` says."""
        payload = self.slot.get()
        if payload is None:
            return None
        try:
            return check_task(payload)
        except Exception:  # a task handed again: packed from its map, which checks too
            return None

    def go(self) -> None:
        """Its worker's start is sent: a gated runner takes tasks from now on, and so does
        every runner started after this one. OSError if the runner is gone."""
        if self.lane is None or not self.lane.gated:
            return
        self.lane = dataclasses.replace(self.lane, gated=False)
        self.send(pack_frame({"control": "go"}))

    def restart(self) -> list[Any]:
        left = self.kill()
        self.start()
        return left

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0
