"""The runner's output: fd 1 and 2 go into a pipe, and a thread copies what comes out to the
running task's log (`store.tasklogs`), or to the worker's stderr between tasks.

A pipe catches everything a task writes: ``print``, Python logging, warnings, and what C code
or a child process writes to the file descriptors. The pipe is read only under a lock, so at
`end` the runner itself drains what is left in it: once the pipe is empty, everything the task
wrote is in its log, and the log is whole before the task's result goes back to the worker
(with no hand-off to the thread: a task that wrote nothing costs one empty read).
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
from pathlib import Path
from typing import Final

from store.tasklogs import BoundedLog

CHUNK_BYTES: Final = 64 * 1024


class OutputPump:
    """Owns fd 1 and 2 of this process from its creation on."""

    def __init__(self) -> None:
        self.passthrough = os.dup(2)  # the worker's stderr, for what no task wrote
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self._read_end = read_end
        self._lock = threading.Lock()
        self._sink: BoundedLog | None = None
        threading.Thread(target=self._pump, name="porch-output", daemon=True).start()

    def begin(self, path: Path | None) -> None:
        """What is written from now on goes to the log at ``path`` (None: to the worker)."""
        with self._lock:
            self._drain()  # what came before is not this task's
            self._sink = BoundedLog(path) if path is not None else None

    def end(self) -> None:
        """Put everything written so far in the task's log, then close it."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for handler in logging.getLogger().handlers:
            handler.flush()
        with self._lock:
            self._drain()
            sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()

    def _pump(self) -> None:
        """Copy what is written while a task runs (a pipe holds only 64 KiB: a task that
        writes more must not block)."""
        while True:
            try:
                select.select([self._read_end], [], [])
            except (OSError, ValueError):
                return
            with self._lock:
                if not self._drain():
                    return

    def _drain(self) -> bool:
        """Copy what the pipe holds now, under the lock; False once it is closed."""
        while True:
            try:
                chunk = os.read(self._read_end, CHUNK_BYTES)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            self._emit(chunk)

    def _emit(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink.write(data)
            return
        try:
            os.write(self.passthrough, data)
        except OSError:
            return
