"""`porch up`'s lines about executions: one on stderr when an execution starts, and one when it
completes, fails, is cancelled or times out, from the hub's events (a thread of its own)."""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import IO, Any, Final

from bus.client import Client
from bus.endpoints import Endpoints
from bus.errors import BusError

TYPES: Final = (
    "ExecutionStarted",
    "ExecutionCompleted",
    "ExecutionFailed",
    "ExecutionCancelled",
    "ExecutionTimedOut",
)
WAIT_MS: Final = 250  # how long a receive waits: the longest a stop waits for the thread


def execution_line(fields: dict[str, Any]) -> str:
    """The line for one execution event."""
    eid, kind = fields.get("execution_id", "?"), fields.get("type")
    if kind == "ExecutionStarted":
        steps = len((fields.get("plan") or {}).get("steps", [])) or len(fields.get("stages", []))
        return f"execution {eid} started ({fields.get('mode', '?')}, {steps} steps)"
    if kind == "ExecutionCompleted":
        return (
            f"execution {eid} completed: {fields.get('records_processed', 0)} records in "
            f"{float(fields.get('duration_s', 0.0)):.2f} s"
        )
    if kind == "ExecutionFailed":
        return f"execution {eid} failed: {fields.get('error', '')}"
    if kind == "ExecutionCancelled":
        reason = fields.get("reason") or "cancelled"
        return f"execution {eid} cancelled: {reason}"
    return f"execution {eid} timed out after {fields.get('timeout_s', 0)} s"


class Announcer:
    """Follows the hub's execution events and prints a line for each; a hub that goes away
    (restarted by `porch up`) is followed again from where it left off."""

    def __init__(self, endpoints: Endpoints, out: IO[str] | None = None) -> None:
        self.endpoints = endpoints
        self.out = out if out is not None else sys.stderr
        self.position: int | None = None  # the last seq announced; None: from the head on
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="porch-announce", daemon=True)

    def start(self) -> Announcer:
        """Follow from the log's head now: every execution event after this call is said."""
        with contextlib.suppress(BusError), Client(self.endpoints, timeout_ms=2000) as client:
            self.position = client.head()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except BusError:
                self._stop.wait(1.0)  # the hub is away: `porch up` starts it again

    def _follow(self) -> None:
        start = None if self.position is None else self.position + 1
        with (
            Client(self.endpoints, timeout_ms=2000, retry_ms=1000) as client,
            client.subscribe(start, types=TYPES) as sub,
        ):
            while not self._stop.is_set():
                for record in sub.receive(WAIT_MS):
                    self.position = record.seq
                    self._say(execution_line(record.fields()))

    def _say(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed terminal stops no actor
            print(f"porch up: {text}", file=self.out, flush=True)
