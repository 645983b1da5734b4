"""A worker's runner: a child process that runs stage tasks one at a time.

It reads task frames on stdin and answers each with a result frame on stdout; what a task
writes (stdout, stderr, logging) goes to its log file (`actors.worker.output`). A stage that
holds the GIL for minutes blocks only this process: the worker beside it keeps heartbeating,
and cancels a task by killing the runner and starting a new one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Final

from actors.errors import UsageError
from actors.shared import lifeline
from actors.shared.reports import report_lines
from actors.shared.stagecfg import StageSet, registry_from
from actors.worker.output import OutputPump
from actors.worker.pipes import FrameError, read_frame, write_frame
from stages import progress
from store import fsutil, powercut
from store.tasklogs import task_log_path

PROGRESS_EVERY_S: Final = 0.5
IDLE_TRIM_S: Final = 30.0  # with no task for this long, the runner returns its free memory
# (long enough for the steps of a sequential execution, which go to one worker after another)
MESSAGE_MAX_CHARS: Final = 200
PLAIN_FRAMES_ENV: Final = "PORCH_RUNNER_PLAIN_FRAMES"  # "1": its worker's compress_frames is off


def main(argv: list[str] | None = None) -> int:
    # killed when the worker dies, even by SIGKILL, so no task runs unowned
    lifeline.hold(os.environ, signum=signal.SIGKILL)
    parser = argparse.ArgumentParser(prog="porch-runner")
    parser.add_argument("--stage", action="append", default=[], metavar="NAME=MODULE:FUNCTION")
    parser.add_argument("--path", action="append", default=[], metavar="DIR")
    args = parser.parse_args(argv)
    fsutil.observe_syncs(powercut.from_environ(os.environ))  # a crash test's sync journal
    stdin = sys.stdin.buffer.raw  # unbuffered: a task not read yet is seen waiting (`_idle`)
    results = os.fdopen(os.dup(1), "wb")  # the frames keep the real stdout
    # a stage that prints (even as it is imported) must not corrupt the frames: fd 1 now goes
    # to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        registry = registry_from(StageSet(specs=tuple(args.stage), path=tuple(args.path)))
    except UsageError as exc:  # the worker says so, and keeps (or stops with) what it had
        write_frame(results, {"ready": False, "error": str(exc)})
        return 2
    from actors.worker.taskexec import (
        execute,  # pandas and the stages load once, before the first task
    )
    from store import artifacts

    artifacts.set_boot_id(powercut.boot_from_environ(os.environ))  # a crash test's restart
    artifacts.set_compression(os.environ.get(PLAIN_FRAMES_ENV) != "1")

    # from here on, fd 1 and 2 go to the running task's log (or the worker's stderr)
    output = OutputPump()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    write_frame(results, {"ready": True, "stages": registry.names()})
    ran = False
    while True:
        if ran and _idle(stdin):
            _trim()
        try:
            task = read_frame(stdin)
            ran = True
        except FrameError as exc:
            write_frame(results, {"ok": False, "error": str(exc), "error_type": "FrameError"})
            continue
        if task is None:
            return 0
        output.begin(_log_path(task))
        with progress.listening(ProgressFrames(results)):
            result = execute(task, registry)
        if not result.get("ok"):
            _say_failure(result)
        output.end()  # the log is whole before the result goes back
        write_frame(results, result)


def _idle(stdin: BinaryIO, wait_s: float = IDLE_TRIM_S) -> bool:
    """No task came within ``wait_s`` of the last one's end."""
    return not select.select([stdin], [], [], wait_s)[0]


def _trim() -> None:
    """Give the memory the last tasks freed back to the kernel. The runner keeps it while tasks
    come (its worker starts it with glibc's trimming off, `RUNNER_MALLOC`): steps that follow
    one another allocate frames as big again, and memory the kernel has to fault in afresh
    made them slower (a third more system time in sequential mode). Idle, it goes back."""
    if _libc is None:
        return
    with contextlib.suppress(AttributeError, OSError):
        _libc.malloc_trim(0)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_libc = _load_libc()


class ProgressFrames:
    """What the stage reports of its progress, as frames to the worker (which sends them on as
    ``StageProgress``): at most one every `PROGRESS_EVERY_S`, none in a task's first one (a
    short task tells nothing), and only when something changed."""

    def __init__(self, results: BinaryIO) -> None:
        self.results = results
        self.last = time.monotonic()
        self.said: tuple[float, str] = (0.0, "")

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        said = (round(fraction, 3), message[:MESSAGE_MAX_CHARS])
        if now - self.last < PROGRESS_EVERY_S or said == self.said:
            return
        self.last, self.said = now, said
        write_frame(self.results, {"progress": said[0], "message": said[1]})


def _log_path(task: object) -> Path | None:
    try:
        return task_log_path(task) if isinstance(task, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def _say_failure(result: dict[str, Any]) -> None:
    """The failure in the task's log too: its one line, where its traceback is, its report."""
    lines = [f"the task failed: {result.get('error', '')}"]
    if result.get("traceback_path"):
        lines.append(f"traceback in {result['traceback_path']}")
    report = report_lines(result.get("report") or {})
    if report:
        lines += ["report:", *(f"  {line}" for line in report)]
    sys.stderr.write("".join(f"porch: {line}\n" for line in lines))


if __name__ == "__main__":
    sys.exit(main())
