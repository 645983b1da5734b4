"""A runner's own sockets: it takes its tasks from the orchestrator and sends their completions
to the hub, so a task's path does not pass through its worker (which supervises: heartbeats,
starts, cancels, a runner that dies).

The worker starts its runner with `LaneArgs`; a thread of the runner takes the tasks as they
come (`actors.worker.intake`). A completion after which the runner goes on to the next task of
a chain (`actors.orchestrator.chains`) is appended with the hub's acknowledgement instead: the
next task reads what it wrote only once its completion is durable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import zmq

from bus.client import Client
from bus.curve import Curve, secure
from bus.endpoints import Endpoints
from bus.errors import EventRefusedError, HubUnavailableError, MalformedEventError
from bus.events import Event, StageCompleted, StageDispatched, StageProgress, StageStarted
from bus.protocol import FLUSH_LINGER_MS, SOCKET_MAX_BYTES
from bus.schema import check_map, encode, from_map, to_map
from bus.wire import pack, unpack_map
from store.projections.task import TaskRef

SEND_TIMEOUT_MS: Final = 1000  # a hub that takes no completion this long: the worker sends it
# a chain's completion not acknowledged this long: the runner does not go on (the orchestrator
# fails the next task when its lease ends, and it runs again as a new attempt)
ACK_TIMEOUT_MS: Final = 2000
CANCELS_KEPT: Final = 1000  # cancelled executions a worker and its runner remember: a task of
# one is pushed only in the moments around its cancel, so the newest are the ones that matter


@dataclass(frozen=True, slots=True)
class LaneArgs:
    """Where a runner takes tasks from and sends completions to, and as which worker."""

    tasks: str
    ingest: str
    worker: str
    prefetch: int = 8
    curve: Curve | None = None
    # takes no task until its worker says go (``{"control": "go"}``): a worker's first runner
    # waits for the worker's start to be sent, so no task is claimed by a worker not started yet
    gated: bool = False
    request: str = ""  # the hub's request endpoint: acknowledged appends ("": no chains)

    def argv(self) -> list[str]:
        args = ["--tasks", self.tasks, "--ingest", self.ingest, "--worker", self.worker]
        args += ["--prefetch", str(self.prefetch)]
        if self.request:
            args += ["--request", self.request]
        if self.gated:
            args.append("--gated")
        if self.curve is not None:
            args += ["--curve", str(self.curve.folder), "--curve-client", self.curve.client]
        return args


class RecentIds:
    """The newest `CANCELS_KEPT` ids added, oldest forgotten first: bounded however many
    executions a long-lived worker sees cancelled."""

    def __init__(self) -> None:
        self._ids: dict[str, None] = {}

    def add(self, ids: Iterable[str]) -> None:
        for one in ids:
            self._ids.pop(one, None)
            self._ids[one] = None
        while len(self._ids) > CANCELS_KEPT:
            del self._ids[next(iter(self._ids))]

    def discard(self, one: str) -> None:
        self._ids.pop(one, None)

    def __contains__(self, one: object) -> bool:
        return one in self._ids

    def __bool__(self) -> bool:
        return bool(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        return list(self._ids)


def check_task(payload: bytes) -> dict[str, Any]:
    """A task as the orchestrator pushed it: the map of a ``StageDispatched``, with every field
    (an older version, or defaults left out, come back as declared), and so is each task of
    its chain (``then``: checked here, as it is taken, not when the runner goes on to one);
    raises on anything else."""
    task = _checked(unpack_map(payload), payload)
    if task["then"]:
        task["then"] = [_checked(dict(t), payload) for t in task["then"]]
    return task


def _checked(obj: dict[str, Any], payload: bytes) -> dict[str, Any]:
    schema, task = check_map(obj, payload)
    if schema.cls is not StageDispatched:
        raise MalformedEventError(f"a task must be StageDispatched, got {schema.type}")
    if task.keys() != schema.allowed:
        task = to_map(from_map(task, payload))
    TaskRef.of(task)  # what every event of its run names
    return task


def completion(
    task: Mapping[str, Any],
    result: Mapping[str, Any],
    worker: str,
    started_ts: float,
    then: str = "",
) -> StageCompleted:
    """The ``StageCompleted`` of a task that ran to its end (``result``: `taskexec.execute`'s);
    ``then``: the task its runner goes on to once this is durable."""
    return StageCompleted(
        then=then,
        started_ts=started_ts,
        **TaskRef.of(task).fields(),
        worker=worker,
        artifact=str(result["artifact"]),
        rows_in=int(result["rows_in"]),
        rows_out=int(result["rows_out"]),
        bytes=int(result["bytes"]),
        sha256=str(result["sha256"]),
        duration_s=float(result["duration_s"]),
        report=result.get("report", {}),
        extra={str(k): str(v) for k, v in result.get("extra", {}).items()},
        reused=bool(result.get("reused", False)),
    )


class Lane:
    """The runner's PUSH to the hub's ingest (its main thread's) and PULL from the orchestrator's
    tasks socket (its intake thread's)."""

    def __init__(self, args: LaneArgs, ctx: zmq.Context[Any] | None = None) -> None:
        self.args = args
        ctx = ctx or zmq.Context.instance()
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, 1)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.MAXMSGSIZE, SOCKET_MAX_BYTES)
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, FLUSH_LINGER_MS)
        self.push.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
        self._lock = threading.Lock()  # the push is shared by the runner's two threads
        secure(self.pull, args.tasks, args.curve, server=False)
        secure(self.push, args.ingest, args.curve, server=False)
        self.pull.connect(args.tasks)
        self.push.connect(args.ingest)
        # one try of `ACK_TIMEOUT_MS`, not a resend: a runner that waits longer holds its chain
        hub = Endpoints(ingest=args.ingest, publish="", request=args.request, curve=args.curve)
        self._hub = Client(hub, timeout_ms=ACK_TIMEOUT_MS, retry_ms=ACK_TIMEOUT_MS, context=ctx)

    @property
    def chains(self) -> bool:
        """Can this runner go on to the next task of a chain (it has an acknowledged path)?"""
        return bool(self.args.request)

    def append(self, event: Event, then: bytes | None = None) -> bool:
        """Append an event (and ``then``, an event's payload, right after it in the same batch)
        and wait until the hub says it is durable: False if it refused it or did not answer
        within `ACK_TIMEOUT_MS` (whether it was written is then unknown). From the main thread
        only."""
        try:
            self._hub.append(event, then)
        except (EventRefusedError, HubUnavailableError):
            return False
        return True

    def complete(
        self,
        task: Mapping[str, Any],
        result: Mapping[str, Any],
        started: float,
        then: Mapping[str, Any] | None = None,
    ) -> bool:
        """Send the task's completion to the hub; False if the hub took none in time (the
        worker sends it then). With ``then`` (the dispatch of the task the runner goes on to,
        appended after it in the same batch: the orchestrator's decision, decided ahead), only
        once the hub said both are durable: False if it did not."""
        if then is None:
            return self.send(completion(task, result, self.args.worker, started))
        event = completion(task, result, self.args.worker, started, str(then["task_id"]))
        # checked as the task that names it was taken (`check_task`), its input filled in from
        # this task's result: the hub checks it again at its door
        dispatch = {**then, "then": [], "ts": time.time(), "src": event.src}
        return self.append(event, pack(dispatch))

    def started(self, task: Mapping[str, Any], ts: float) -> bool:
        return self.send(StageStarted(**TaskRef.of(task).fields(), worker=self.args.worker, ts=ts))

    def progress(self, task: Mapping[str, Any], fraction: float, message: str) -> bool:
        return self.send(
            StageProgress(
                **TaskRef.of(task).fields(),
                worker=self.args.worker,
                fraction=min(1.0, max(0.0, float(fraction))),
                message=message,
            )
        )

    def send(self, event: Event) -> bool:
        """Send an event of a task to the hub, from either of the runner's threads: one socket,
        so the hub gets a task's start, progress and completion in the order they were sent;
        False if the hub took none in time."""
        payload = encode(event)
        with self._lock:
            try:
                self.push.send(payload)
            except zmq.Again:
                return False
        return True

    def close(self) -> None:
        self.push.close(linger=FLUSH_LINGER_MS)
        self._hub.close()


def curve_of(folder: str | None, client: str) -> Curve | None:
    return Curve(Path(folder), client) if folder else None
