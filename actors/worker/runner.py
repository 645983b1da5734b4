"""A worker's runner: a child process that runs stage tasks one at a time.

It reads task frames on stdin and answers each with a result frame on stdout. A stage that
holds the GIL for minutes blocks only this process: the worker beside it keeps heartbeating,
and cancels a task by killing the runner and starting a new one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys

from actors.errors import UsageError
from actors.shared.stagecfg import StageSet, registry_from
from actors.worker.pipes import FrameError, read_frame, write_frame
from store import fsutil, powercut


def _die_with_parent() -> None:
    """Linux: be killed when the worker dies, even by SIGKILL, so no task runs unowned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(argv: list[str] | None = None) -> int:
    _die_with_parent()
    parser = argparse.ArgumentParser(prog="porch-runner")
    parser.add_argument("--stage", action="append", default=[], metavar="NAME=MODULE:FUNCTION")
    parser.add_argument("--path", action="append", default=[], metavar="DIR")
    args = parser.parse_args(argv)
    fsutil.observe_syncs(powercut.from_environ(os.environ))  # a crash test's sync journal
    stdin = sys.stdin.buffer
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

    write_frame(results, {"ready": True, "stages": registry.names()})
    while True:
        try:
            task = read_frame(stdin)
        except FrameError as exc:
            write_frame(results, {"ok": False, "error": str(exc), "error_type": "FrameError"})
            continue
        if task is None:
            return 0
        write_frame(results, execute(task, registry))


if __name__ == "__main__":
    sys.exit(main())
