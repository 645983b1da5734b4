"""The runner's output: fd 1 and 2 go into a pipe, and a thread copies what comes out to the
running task's log (`store.tasklogs`), or to the worker's stderr between tasks.

A pipe catches everything a task writes: ``print``, Python logging, warnings, and what C code
or a child process writes to the file descriptors. `end` waits until all a task wrote is in its
log (a mark written after it comes through the pipe), so the log is whole before the task's
result goes back to the worker.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Final

from store.tasklogs import BoundedLog

CHUNK_BYTES: Final = 64 * 1024
END_WAIT_S: Final = 10.0  # a pump that cannot keep up (a stuck disk) holds the task no longer


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
        self._read_end = read_end
        self._mark = b"\x00porch-task-end-" + os.urandom(8).hex().encode() + b"\x00"
        self._lock = threading.Lock()
        self._sink: BoundedLog | None = None
        self._through = threading.Event()
        threading.Thread(target=self._pump, name="porch-output", daemon=True).start()

    def begin(self, path: Path | None) -> None:
        """What is written from now on goes to the log at ``path`` (None: to the worker)."""
        with self._lock:
            self._sink = BoundedLog(path) if path is not None else None

    def end(self) -> None:
        """Wait until everything written so far is in the task's log, then close it."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._through.clear()
        os.write(2, self._mark)
        self._through.wait(END_WAIT_S)
        with self._lock:
            sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()

    def _pump(self) -> None:
        pending = b""
        mark = self._mark
        while True:
            try:
                chunk = os.read(self._read_end, CHUNK_BYTES)
            except OSError:
                return
            if not chunk:
                return
            data = pending + chunk
            while (at := data.find(mark)) >= 0:
                self._emit(data[:at])
                data = data[at + len(mark) :]
                self._through.set()
            keep = _partial_mark(data, mark)
            self._emit(data[: len(data) - keep])
            pending = data[len(data) - keep :]

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self._sink is not None:
                self._sink.write(data)
                return
        try:
            os.write(self.passthrough, data)
        except OSError:
            return


def _partial_mark(data: bytes, mark: bytes) -> int:
    """How many bytes at the end of ``data`` may be the start of a ``mark`` cut in two."""
    for size in range(min(len(mark) - 1, len(data)), 0, -1):
        if data.endswith(mark[:size]):
            return size
    return 0
