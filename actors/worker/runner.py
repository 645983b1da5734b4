"""A worker's runner: a child process that runs stage tasks one at a time.

Started by its worker, it takes tasks from the orchestrator and sends their completions to the
hub itself (`actors.worker.lane`), and tells its worker over a pipe what it took, begins and
ended (`actors.worker.taskloop`); started alone, it reads task frames on stdin and answers each
with a result frame on stdout. What a task writes (stdout, stderr, logging) goes to its log
file (`actors.worker.output`). A stage that holds the GIL for minutes blocks only this
process: the worker beside it keeps heartbeating, and cancels a task by killing the runner and
starting a new one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Final

from actors.errors import UsageError
from actors.shared import lifeline
from actors.shared.reports import report_lines
from actors.shared.stagecfg import StageSet, registry_from
from actors.worker.nowslot import NowSlot
from actors.worker.output import OutputPump
from actors.worker.pipes import pack_frame
from store import fsutil, powercut
from store.tasklogs import task_log_path

PLAIN_FRAMES_ENV: Final = "PORCH_RUNNER_PLAIN_FRAMES"  # "1": its worker's compress_frames is off


def main(argv: list[str] | None = None) -> int:
    # killed when the worker dies, even by SIGKILL, so no task runs unowned
    lifeline.hold(os.environ, signum=signal.SIGKILL)
    parser = argparse.ArgumentParser(prog="porch-runner")
    parser.add_argument("--stage", action="append", default=[], metavar="NAME=MODULE:FUNCTION")
    parser.add_argument("--path", action="append", default=[], metavar="DIR")
    parser.add_argument("--tasks", help="take tasks from this orchestrator endpoint")
    parser.add_argument("--ingest", help="send completions to this hub endpoint")
    parser.add_argument("--request", default="", help="the hub's request endpoint (chains)")
    parser.add_argument("--worker", default="", help="the worker this runner runs for")
    parser.add_argument("--prefetch", type=int, default=8)
    parser.add_argument("--gated", action="store_true", help="take no task until told to go")
    parser.add_argument("--curve", default=None, metavar="DIR")
    parser.add_argument("--curve-client", default="client", metavar="NAME")
    parser.add_argument("--now-fd", type=int, default=None, help="the worker's `NowSlot`")
    args = parser.parse_args(argv)
    fsutil.observe_syncs(powercut.from_environ(os.environ))  # a crash test's sync journal
    results = os.dup(1)  # the frames keep the real stdout
    # a stage that prints (even as it is imported) must not corrupt the frames: fd 1 now goes
    # to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    lane = None
    if args.tasks and args.ingest:
        from actors.worker.lane import Lane, LaneArgs, curve_of
        from bus.envelope import set_source

        set_source(args.worker)  # its completions come from its worker, as its other events
        lane_args = LaneArgs(args.tasks, args.ingest, args.worker, args.prefetch,
                             curve_of(args.curve, args.curve_client), args.gated,
                             args.request)  # fmt: skip
        # connected before the stages load (pandas takes a while): while it starts, the
        # orchestrator's socket holds a message or two for it and hands the rest to the others
        lane = Lane(lane_args)
    try:
        registry = registry_from(StageSet(specs=tuple(args.stage), path=tuple(args.path)))
    except UsageError as exc:  # the worker says so, and keeps (or stops with) what it had
        os.write(results, pack_frame({"ready": False, "error": str(exc)}))
        if lane is not None:
            lane.close()
        return 2
    from actors.worker.taskexec import (
        execute,  # pandas and the stages load once, before the first task
    )
    from store import artifacts

    artifacts.set_boot_id(powercut.boot_from_environ(os.environ))  # a crash test's restart
    artifacts.set_compression(os.environ.get(PLAIN_FRAMES_ENV) != "1")

    from actors.worker.taskloop import TaskLoop

    # from here on, fd 1 and 2 go to the running task's log (or the worker's stderr)
    output = OutputPump()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.write(results, pack_frame({"ready": True, "stages": registry.names()}))
    loop = TaskLoop(
        results,
        registry,
        output,
        lane=lane,
        slot=NowSlot(args.now_fd) if args.now_fd is not None else None,
        execute=execute,
        trim=_trim,
        log_path=_log_path,
        say_failure=_say_failure,
    )
    try:
        return loop.run()
    finally:
        if lane is not None:
            lane.close()


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
