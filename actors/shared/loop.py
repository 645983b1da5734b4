"""The one loop every actor runs: lock, connect, load the snapshot and catch up, go live, then
turn: fold what came, act, decide, send, until stopped.

An actor brings what is its own (an `Actor`: the events it folds, its core's apply and decide,
its sockets); the loop owns the order of things, which is the same for all:

1. take the data dir's lock of the actor's kind (one orchestrator, one monitor per data dir);
2. connect to the hub, load the newest valid snapshot, subscribe from the seq after it;
3. fold every event up to the hub's head (the actor may append and fold again: `prepare`),
   then go live;
4. each turn: wait until a record comes, a watched socket is ready or the actor's next due
   time; fold the records in seq order (an id coming back leaves the outbox); let the actor act
   on its sockets; give up ids not back in time (the actor decides them again); decide; send
   the turn's decisions as one message; write a snapshot when one is due;
5. on stop (SIGTERM, SIGINT): send the actor's last words, close every socket.

A malformed event is logged and skipped, never fatal. Time is read here only, and handed to
the actor as `Now`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import zmq

from actors.errors import ActorError
from actors.shared.now import Now
from actors.shared.outbox import Outbox, TooBig
from actors.shared.snapshotter import SnapshotPolicy, Snapshotter
from actors.shared.sources import HubSource
from bus.client import Client, Record, Subscription
from bus.endpoints import Endpoints, run_dir
from bus.envelope import set_source
from bus.events import Event
from store import pidlock

log = logging.getLogger("porch.loop")
MAX_WAIT_MS: Final = 1000
BURST_TURNS: Final = 64  # decide-and-send rounds a turn may add while the actor is due
CATCH_UP_WAIT_MS: Final = 1000  # a catch-up read waits this long for the next batch


def lock_path(data_dir: Path, name: str) -> Path:
    return run_dir(data_dir) / f"{name}.lock"


def running(data_dir: Path, name: str) -> bool:
    """True when an actor of this kind holds the data dir's lock."""
    return pidlock.held(lock_path(data_dir, name))


Watched = zmq.Socket[Any] | int


class Actor:
    """What an actor brings to the loop. The defaults do nothing: override what applies.

    ``types``: the logged event types it folds (None: every type); ``live_types``: the live
    ones it hears. ``snapshot_tag``: ``(name, version)`` of its snapshots, None for none.
    ``lock``: ``"exclusive"`` refuses to start beside another of its kind, ``"shared"`` warns
    and runs (its decisions carry the same ids), ``"process"`` takes a lock of its own,
    ``<kind>.<pid>.lock``, so that many run side by side and `porch down` finds each (workers),
    ``"none"`` takes no lock. ``follow_only``:
    start at the hub's head, folding nothing of the past. ``reads_back``: it folds what it
    sends, so the outbox waits for each id (a worker does not read its results back).
    """

    name: ClassVar[str] = "actor"
    kind: ClassVar[str] = "actor"  # what a lock of its own is named after
    lock: ClassVar[Literal["exclusive", "shared", "process", "none"]] = "exclusive"
    types: frozenset[str] | None = frozenset()
    live_types: frozenset[str] = frozenset()
    snapshot_tag: tuple[str, str] | None = None
    follow_only: ClassVar[bool] = False
    reads_back: ClassVar[bool] = True
    hears_while_catching_up: ClassVar[bool] = True
    batch_markers: ClassVar[bool] = True  # False: rare types (see `Client.subscribe`)
    loop: Loop  # set by the loop that runs it

    def open(self, ctx: zmq.Context[Any], client: Client) -> None:
        """Bind or connect the actor's own sockets; before anything is folded."""

    def restore(self, body: Any) -> None:
        """Take a snapshot's body; raise KeyError, TypeError or ValueError if it is unusable."""
        raise ValueError(f"{self.name} keeps no snapshots")

    def snapshot_body(self) -> Any:
        raise ValueError(f"{self.name} keeps no snapshots")

    def apply(self, record: Record, fields: dict[str, Any], now: Now) -> None:
        """Fold one logged event (in seq order); ``fields`` is its decoded map."""

    def heard(self, record: Record, fields: dict[str, Any], now: Now) -> None:
        """Take one live event (a heartbeat, a sample): never in the log."""

    def prepare(self, client: Client) -> bool:
        """Caught up, not live yet: True if the actor appended events to fold before it goes
        live (a schedules file loaded, say)."""
        return False

    def went_live(self, position: int, now: Now) -> list[Event]:
        """Caught up at ``position``; the events to announce it with."""
        return []

    def watch(self) -> Iterable[tuple[Watched, int]]:
        """Sockets or file descriptors to wait on this turn, with their poll flags."""
        return ()

    def act(self, ready: dict[Any, int], now: Now) -> None:
        """I/O on the watched things that are ready (and on none: whatever is due)."""

    def decide(self, now: Now) -> list[Event]:
        """What to send this turn."""
        return []

    def sent(self, event: Event, payload: bytes) -> None:
        """``event`` goes to the hub this turn as ``payload`` (its bytes, checked once)."""

    def sending(self, now: Now) -> None:
        """This turn's decisions are about to go to the hub: what may act on them before
        they are durable does so now (the orchestrator hands out tasks: DESIGN 4, Dispatch)."""

    def forget(self, event_ids: list[str], now: Now) -> None:
        """These sent ids were given up (not back in time, or not sent): decide them again."""

    def next_due(self, now: Now) -> float | None:
        """The monotonic time by which the loop must turn again, with nothing received."""
        return None

    def too_big(self, event: Event, size: int) -> Event | None:
        """What to send instead of an event over the wire's limit; None drops it."""
        return None

    def stopping(self, now: Now) -> list[Event]:
        """The last words, sent as the loop stops."""
        return []

    def close(self) -> None:
        """Close the actor's own sockets and threads."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopConfig:
    data_dir: Path
    endpoints: Endpoints
    snapshots: SnapshotPolicy = field(default_factory=SnapshotPolicy)


class Loop:
    """Runs one `Actor` against the hub until `stop`."""

    def __init__(self, actor: Actor, config: LoopConfig) -> None:
        self.actor = actor
        self.config = config
        too_big: TooBig = actor.too_big
        self.outbox = Outbox(actor.name, too_big=too_big)
        self.snapshots = (
            Snapshotter(config.data_dir, *actor.snapshot_tag, config.snapshots)
            if actor.snapshot_tag is not None
            else None
        )
        self.position = 0  # every logged event up to this seq is folded in
        self.live = False
        actor.loop = self
        self._stop = False
        self._lock_fd: int | None = None
        self._own_lock: Path | None = None  # a "process" lock's file, removed at the end
        self.wake_fd: int | None = None  # readable when a signal came: a stop is not kept waiting
        self._pollers: dict[tuple[tuple[Watched, int], ...], zmq.Poller] = {}

    def stop(self, *_: object) -> None:
        self._stop = True

    @property
    def stopped(self) -> bool:
        return self._stop

    def run(self) -> None:
        set_source(self.actor.name)
        self._lock()
        ctx: zmq.Context[Any] = zmq.Context()
        self.client = Client(self.config.endpoints, context=ctx)
        sub: Subscription | None = None
        try:
            self.actor.open(ctx, self.client)
            start = self.client.head() if self.actor.follow_only else self._restore()
            types = None if self.actor.types is None else set(self.actor.types)
            if types is not None:
                types |= set(self.actor.live_types)
            sub = self.client.subscribe(
                from_seq=start + 1, types=types, batch_markers=self.actor.batch_markers
            )
            self._catch_up(sub)
            while self.actor.prepare(self.client) and not self._stop:
                self._catch_up(sub)
            now = Now.read()
            self.live = True
            announce = self.actor.went_live(sub.position, now)
            if self.actor.hears_while_catching_up:
                self._hear(sub, now)
            else:
                sub.take_live()  # heard while catching up: stale by now
            self._send(announce, now)
            while not self._stop:
                self._turn(sub)
        finally:
            if self.live:  # the last words go out however the loop ended
                try:
                    now = Now.read()
                    self._send(self.actor.stopping(now), now)
                except Exception:
                    log.exception("%s: could not send its last events", self.actor.name)
            if sub is not None:
                sub.close()
            self.actor.close()
            self.client.close()
            ctx.term()
            self._unlock()

    # --- start -------------------------------------------------------------------------------

    def _lock(self) -> None:
        if self.actor.lock == "none":
            return
        if self.actor.lock == "process":  # it only lets `porch down` find this process
            path = lock_path(self.config.data_dir, f"{self.actor.kind}.{os.getpid()}")
            try:
                self._lock_fd, _ = pidlock.hold(path)
            except OSError as exc:
                log.warning("%s: runs without its lock file %s: %s", self.actor.name, path, exc)
                return
            self._own_lock = path
            return
        fd, holder = pidlock.hold(lock_path(self.config.data_dir, self.actor.name))
        if fd is None and self.actor.lock == "exclusive":
            raise ActorError(
                f"another {self.actor.name} (pid {holder}) runs for data dir {self.config.data_dir}"
            )
        if fd is None:
            log.warning(
                "%s: another %s (pid %s) runs for this data dir; each decision is still logged once",
                self.actor.name, self.actor.name, holder,
            )  # fmt: skip
        self._lock_fd = fd

    def _unlock(self) -> None:
        """A lock of its own goes with its file; a lock of a kind stays for the next one."""
        if self._own_lock is not None:
            with contextlib.suppress(FileNotFoundError):
                self._own_lock.unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _restore(self) -> int:
        """Load the newest usable snapshot; the seq to fold on from."""
        if self.snapshots is None:
            return 0
        snap = self.snapshots.load(HubSource(self.client))
        if snap is None:
            return 0
        try:
            self.actor.restore(snap.body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("snapshot %s ignored: %s; folding the whole log", snap.path, exc)
            self.snapshots.loaded_seq = 0
            return 0
        self.position = snap.seq
        return snap.seq

    def _catch_up(self, sub: Subscription) -> None:
        head = self.client.head()
        while sub.position < head and not self._stop:
            now = Now.read()
            for record in sub.receive(CATCH_UP_WAIT_MS):
                self._apply(record, now)
            if not self.actor.hears_while_catching_up:
                sub.take_live()
        self.position = sub.position

    # --- live --------------------------------------------------------------------------------

    def _turn(self, sub: Subscription) -> None:
        now = Now.read()
        due = self.actor.next_due(now)
        wait_ms = MAX_WAIT_MS
        if self.outbox.pending():
            wait_ms = 0
        elif due is not None:
            wait_ms = max(0, min(MAX_WAIT_MS, int((due - now.mono) * 1000) + 1))
        ready = dict(self._poller(sub).poll(wait_ms))
        now = Now.read()
        if self.wake_fd is not None and ready.pop(self.wake_fd, 0):
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake_fd, 512)
        if ready.pop(sub.socket, 0):
            for record in sub.receive(0):
                self._apply(record, now)
            self.position = sub.position
            self._hear(sub, now)
        self.actor.act(ready, now)
        expired = self.outbox.expire(now.mono)
        if expired:
            self.actor.forget(expired, now)
        self._decide(now)
        # a burst (an actor that decides in slices, still due): the rest goes out before
        # anything that came back is folded
        for _ in range(BURST_TURNS):
            now = Now.read()
            due = self.actor.next_due(now)
            if due is None or due > now.mono or not self._decide(now):
                break
        if self.snapshots is not None and self.snapshots.due():
            self.snapshots.save(sub.position, self.actor.snapshot_body())

    def _poller(self, sub: Subscription) -> zmq.Poller:
        """A poller for the subscription and what the actor watches this turn; the few sets an
        actor switches between are kept, not built anew each turn."""
        watched = tuple(self.actor.watch())
        poller = self._pollers.get(watched)
        if poller is None:
            if len(self._pollers) > 8:  # a watched fd that changed (a restarted runner)
                self._pollers.clear()
            poller = self._pollers[watched] = zmq.Poller()
            poller.register(sub.socket, zmq.POLLIN)
            if self.wake_fd is not None:
                poller.register(self.wake_fd, zmq.POLLIN)
            for what, flags in watched:
                poller.register(what, flags)
        return poller

    def _decide(self, now: Now) -> bool:
        """Decide and send; True if anything was decided."""
        decided = self.actor.decide(now)
        for event in decided:
            self._add(event, now)
        if decided:
            self.actor.sending(now)
        failed = self.outbox.flush(self.client)
        if failed:
            self.actor.forget(failed, now)
        return bool(decided)

    def _apply(self, record: Record, now: Now) -> None:
        event_id = ""
        try:
            fields = record.fields()
            event_id = str(fields.get("id", ""))
            self.actor.apply(record, fields, now)
        except Exception as exc:  # a malformed event is logged and skipped, never fatal
            log.error(
                "%s: cannot fold seq %s (%s): %s", self.actor.name, record.seq, record.type, exc
            )
        self.outbox.back(event_id)
        if self.snapshots is not None:
            self.snapshots.folded(record.seq, event_id)

    def _hear(self, sub: Subscription, now: Now) -> None:
        if not sub.live:
            return
        for record in sub.take_live():
            try:
                self.actor.heard(record, record.fields(), now)
            except Exception as exc:  # a malformed live event is logged and skipped
                log.error("%s: cannot take a live %s: %s", self.actor.name, record.type, exc)

    def _add(self, event: Event, now: Now) -> None:
        payload = self.outbox.add(event, now.mono, track=self.actor.reads_back and not event.LIVE)
        if payload is not None:
            self.actor.sent(event, payload)

    def _send(self, events: list[Event], now: Now) -> None:
        for event in events:
            self._add(event, now)
        failed = self.outbox.flush(self.client)
        if failed:
            self.actor.forget(failed, now)


def run(actor: Actor, config: LoopConfig) -> int:
    """Run ``actor`` until SIGTERM or SIGINT; 0 on a clean stop."""
    loop = Loop(actor, config)
    signal.signal(signal.SIGTERM, loop.stop)
    signal.signal(signal.SIGINT, loop.stop)
    # the signal also writes to a pipe the loop waits on, so the turn ends at once
    loop.wake_fd, wake_write = os.pipe()
    for fd in (loop.wake_fd, wake_write):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            loop.run()
    finally:
        signal.set_wakeup_fd(-1)
        os.close(wake_write)
        os.close(loop.wake_fd)
    return 0
