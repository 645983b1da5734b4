"""Which workers are alive, and which stages they announced: the log's worker events, then the
heartbeats that say a worker present in the log is still there.

Alive is what the read models call alive (`actors.read.monitoring.worker_view`): present in
the log (started, neither stopped nor lost) and heard within ``ALIVE_MISSES`` heartbeats. A
query has no heartbeat history, so it listens for them, never longer than that.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from typing import ClassVar, Final

from actors.read import model as readmodel
from actors.read.model import Part, Reader, source_of
from actors.read.monitoring import ALIVE_MISSES, HEARTBEAT_S
from bus.client import Client, Record
from store.projections import workers as folds

ALIVE_S: Final = HEARTBEAT_S * ALIVE_MISSES  # a worker not heard for this long is not alive
FIRST_WORKER_S: Final = 5.0  # how long to wait for a first worker when the log has none
LISTEN_MS: Final = 100


def fold_workers(reader: Reader) -> readmodel.Folded:
    """The workers fold up to the head, from its newest snapshot."""
    source, store = source_of(reader)
    return readmodel.read_model(
        source,
        store,
        part=Part("workers", folds.CODEC),
        fresh=folds.WorkersState,
        types=folds.TYPES,
        evolve=folds.evolve,
        own="workers",
    )


class Listening:
    """The workers fold kept up to date, and the workers heard since listening began."""

    def __init__(self, client: Client) -> None:
        folded = fold_workers(client)
        self.state: folds.WorkersState = folded.state
        self.heard: set[str] = set()
        self.began = time.monotonic()
        self._sub = client.subscribe(folded.seq + 1, types=[*folds.TYPES, "WorkerHeartbeat"])

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> Listening:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def listen(self, timeout_ms: int = LISTEN_MS) -> None:
        for record in self._sub.receive(timeout_ms):
            fields = record.fields()
            folds.evolve(record.seq, fields, self.state)
            if fields["type"] in ("WorkerStarted", "WorkerReturned"):
                self.heard.add(str(fields["worker"]))
        for record in self._sub.take_live():
            if record.type == "WorkerHeartbeat":
                self.heard.add(str(record.fields().get("worker", "")))

    def alive(self, now_s: float) -> dict[str, folds.WorkerSeen]:
        """The workers present in the log and heard of lately: a heartbeat since listening
        began, or a start (or return) less than ``ALIVE_S`` ago."""
        return {
            name: seen
            for name, seen in self.state.present().items()
            if name in self.heard or now_s - seen.since_ts < ALIVE_S
        }

    @property
    def listened_s(self) -> float:
        return time.monotonic() - self.began


def missing_stages(client: Client, needed: Collection[str]) -> tuple[list[str], list[str]]:
    """Of the ``needed`` stage names, those no live worker announced, and every name the live
    workers did announce; both sorted.

    It listens only while the answer can change: while no worker is alive, until one is (at
    most ``FIRST_WORKER_S``: a system may be coming up), and until a worker the log shows
    announcing a missing stage is heard (at most ``ALIVE_S``)."""
    wanted = set(needed)
    if not wanted:
        return [], []
    with Listening(client) as workers:
        while True:
            alive = workers.alive(time.time())
            runnable = set().union(*(w.stages for w in alive.values()))
            missing = wanted - runnable
            present = workers.state.present()
            if not missing:
                limit_s = 0.0
            elif not alive:
                limit_s = FIRST_WORKER_S  # none alive yet: one may be starting
            elif any(missing & set(w.stages) for w in present.values()):
                limit_s = ALIVE_S  # announced by a worker not heard yet: hear it
            else:
                limit_s = 0.0  # the live workers do not run it
            if workers.listened_s >= limit_s:
                return sorted(missing), sorted(runnable)
            workers.listen()


class WorkerSilence:
    """For a client following an execution: tells, once, that no worker gave a sign of life (a
    start or a heartbeat) within ``ALIVE_S`` of watching."""

    TYPES: ClassVar[frozenset[str]] = frozenset(
        {"WorkerStarted", "WorkerReturned", "WorkerHeartbeat"}
    )

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.heard = False
        self.told = False

    def see(self, records: Iterable[Record]) -> None:
        self.heard = self.heard or any(r.type in self.TYPES for r in records)

    def due(self) -> bool:
        """True once, when ``ALIVE_S`` passed without a sign of a worker."""
        if self.heard or self.told or time.monotonic() - self.began < ALIVE_S:
            return False
        self.told = True
        return True
