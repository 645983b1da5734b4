"""Task logs: what a stage task wrote (stdout, stderr, logging), in a bounded file beside its
execution's artifacts.

A task's log is ``<execution dir>/<step>/logs/<phase>-<part>-a<attempt>.log``: inside the step's
directory, so retention and ``porch gc``, which remove a step's directory whole, remove its logs
with its artifacts. The file is made at the task's first byte, so a task that says nothing
leaves none (a step that passes its input through still writes nothing). It holds at most
`MAX_LOG_BYTES` of output, then one truncation mark; the mark at the end says how much was
dropped. Logs are for people: they are not fsynced, and a crash may cut one short.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from store.fsutil import make_private_dir

MAX_LOG_BYTES: Final = 1 << 20
LOGS_DIR: Final = "logs"
FILE_MODE: Final = 0o600
_NAME: Final = re.compile(r"^(?P<phase>[a-z]+)-(?P<part>\d+)-a(?P<attempt>\d+)\.log$")


@dataclass(frozen=True, slots=True, order=True)
class TaskLogName:
    """Which task a log file is of, read from its name (the step is its directory's parent)."""

    phase: str
    partition: int
    attempt: int

    @property
    def file_name(self) -> str:
        return f"{self.phase}-{self.partition:04d}-a{self.attempt}.log"

    @classmethod
    def parse(cls, name: str) -> TaskLogName | None:
        found = _NAME.match(name)
        if found is None:
            return None
        return cls(found["phase"], int(found["part"]), int(found["attempt"]))


def logs_dir(execution_dir: str | Path, step: str) -> Path:
    """The directory of a step's task logs."""
    return Path(execution_dir) / step / LOGS_DIR


def log_path(
    execution_dir: str | Path, step: str, phase: str, partition: int, attempt: int
) -> Path:
    return logs_dir(execution_dir, step) / TaskLogName(phase, partition, attempt).file_name


def task_log_path(task: Mapping[str, Any]) -> Path | None:
    """Where a task (a ``StageDispatched`` map) writes its log: every task's output path is
    ``<execution dir>/<step or output>/<file>``, so its grandparent is the execution's
    directory. None for a task with no output path."""
    output = task.get("output")
    if not output or str(output).startswith("s3://"):
        return None  # an object store's task: its output goes to the worker's stderr
    name = TaskLogName(str(task["phase"]), int(task["partition"]), int(task["attempt"]))
    # once a task, on its hot path: string operations, a third of pathlib's cost
    execution_dir = os.path.dirname(os.path.dirname(str(output)))  # noqa: PTH120
    return Path(os.path.join(execution_dir, str(task["step"]), LOGS_DIR, name.file_name))  # noqa: PTH118


def step_logs(execution_dir: str | Path, step: str) -> list[tuple[TaskLogName, Path]]:
    """A step's task logs, by phase name, part and attempt (empty when there are none)."""
    directory = logs_dir(execution_dir, step)
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(directory):
            name = TaskLogName.parse(entry.name)
            if name is not None and entry.is_file():
                found.append((name, Path(entry.path)))
    return sorted(found)


class BoundedLog:
    """Appends a task's output to its log file: made at the first byte, at most ``max_bytes``
    kept, then a truncation mark; `close` adds how many bytes were dropped. A write that fails
    (a full disk) stops the log, never the task."""

    def __init__(self, path: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.written = 0
        self.dropped = 0
        self._fd: int | None = None
        self._broken = False

    def write(self, data: bytes) -> None:
        if not data or self._broken:
            return
        room = self.max_bytes - self.written
        kept, extra = data[: max(0, room)], data[max(0, room) :]
        if kept:
            self._append(kept)
            self.written += len(kept)
        if extra:
            if not self.dropped:
                self._append(
                    f"\n[truncated: this task's log reached {self.max_bytes} bytes; "
                    "the rest of its output is dropped]\n".encode()
                )
            self.dropped += len(extra)

    def close(self) -> None:
        if self.dropped:
            self._append(f"[truncated: {self.dropped} bytes dropped]\n".encode())
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _append(self, data: bytes) -> None:
        try:
            if self._fd is None:
                # synced as artifacts' directories are: the step's may be made here first
                make_private_dir(self.path.parent)
                self._fd = os.open(
                    self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, FILE_MODE
                )
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            self._broken = True
