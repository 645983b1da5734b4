"""The dashboard's live view of the log: the execution fold, followed on one hub subscription,
the histories of the executions pages look at, and the notices that tell every open page what
changed.

One subscription per dashboard, however many browsers are open: the pages hear of changes
from here (server-sent events), never from the hub, and read an execution's events from its
kept history (`histories`), read from the hub once.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

import zmq

from actors.dashboard.histories import Histories
from actors.read.executions import fold_log
from bus.client import Client, Record
from bus.curve import secure
from bus.endpoints import Endpoints
from bus.errors import BusError
from bus.schema import fields_of
from store.projections import alerts as alert_folds
from store.projections import executions as execution_folds
from store.projections import metrics as metric_folds
from store.projections import schedules as schedule_folds

log = logging.getLogger("porch.dashboard")
SCHEDULE_TYPES: Final = schedule_folds.TYPES - execution_folds.TYPES
ALERT_TYPES: Final = alert_folds.TYPES
METRIC_TYPES: Final = frozenset({"MetricSampled", "MetricRecorded"})
PROGRESS: Final = "StageProgress"
# on the subscription: every event the pages show but the progress reports and the metric
# samples, which are heard apart and at a bounded rate (see `Sampled`)
WATCHED: Final = (execution_folds.TYPES | SCHEDULE_TYPES | ALERT_TYPES) - {PROGRESS}
RECEIVE_MS: Final = 250
PROGRESS_RATE: Final = 2000  # progress reports folded a second at most; past it, a sample
SAMPLED_TICK_S: Final = 0.1  # the rate's budget is given out per tick
SAMPLED_REFRESH_S: Final = 1.0  # a socket behind is opened anew at most this often
SAMPLED_HWM: Final = 1000  # sampled events that may wait unread before the hub drops some
SAMPLED_PENDING_MAX: Final = 10_000  # taken, waiting (for the subscription to reach them)
# the loop turns at most every TURN_S while it keeps up (fewer than PACE_BELOW events in a turn):
# a hub that writes 5,000 batches a second would otherwise wake it 5,000 times (its marker after
# each), and every wake on a busy machine is CPU the actors wait for; a page hears of a change
# at most every 150 ms anyway
TURN_S: Final = 0.05
PACE_BELOW: Final = 500
METRICS_RATE: Final = 20  # metric samples taken a second at most: they only say "metrics moved"
METRICS_EVERY_S: Final = 1.0  # metric notices at most this often: charts need no more
# a notice that only progress reports came, at most this often: every other change of an
# execution is told at once (and brings the latest progress with it)
PROGRESS_NOTICE_EVERY_S: Final = 1.0
LISTENER_BACKLOG: Final = 1000  # notices a page may leave unread before it is let go
NOTICE_IDS_MAX: Final = 100


class Live:
    """The execution fold kept up to the hub's head on a thread, the kept histories, and the
    open pages' queues.

    Readers take ``mutex`` while they look at ``state`` or ``histories``; the thread folds
    under it.
    """

    def __init__(self, endpoints: Endpoints, ctx: zmq.Context[Any]) -> None:
        self.endpoints = endpoints
        self.ctx = ctx
        self.mutex = threading.Lock()
        self.folded = threading.Condition(self.mutex)  # notified after each batch is folded
        self.state = execution_folds.ExecutionsState()
        self.histories = Histories()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.seq = 0
        self._listeners: set[queue.SimpleQueue[dict[str, Any] | None]] = set()
        self._listeners_lock = threading.Lock()
        self._metrics_sent = 0.0
        self._progress_sent = 0.0
        self._progress_touched: dict[str, None] = {}  # executions with reports not told yet
        self.progress_taken = 0  # progress reports folded from the live stream (a sample)
        self._thread = threading.Thread(target=self._run, name="porch-dashboard-live", daemon=True)

    def start(self) -> Live:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self._listeners_lock:
            for listener in self._listeners:
                listener.put(None)  # each open page's stream ends
        self._thread.join(5)

    def wait_for(self, seq: int, timeout_s: float) -> bool:
        """Wait until every event up to ``seq`` is folded (a page that just acted reads its
        own write); False if that did not happen within ``timeout_s``."""
        with self.folded:
            return self.folded.wait_for(lambda: self.seq >= seq, timeout_s)

    # --- the pages' queues -------------------------------------------------------------------

    def listen(self) -> queue.SimpleQueue[dict[str, Any] | None]:
        listener: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        with self._listeners_lock:
            self._listeners.add(listener)
        return listener

    def drop(self, listener: queue.SimpleQueue[dict[str, Any] | None]) -> None:
        with self._listeners_lock:
            self._listeners.discard(listener)

    def _notify(self, notice: dict[str, Any]) -> None:
        with self._listeners_lock:
            for listener in list(self._listeners):
                if listener.qsize() > LISTENER_BACKLOG:  # a page that stopped reading
                    self._listeners.discard(listener)
                    listener.put(None)
                else:
                    listener.put(notice)

    # --- following the hub -------------------------------------------------------------------

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                with Client(self.endpoints, context=self.ctx, timeout_ms=10_000) as client:
                    self._follow(client)
            except BusError as exc:
                log.warning("dashboard: lost the hub (%s); reading it again", exc)
                self.stopping.wait(1.0)

    def _follow(self, client: Client) -> None:
        # first: they hear what comes during the fold
        progress = Sampled(self.endpoints, self.ctx, {PROGRESS}, PROGRESS_RATE, in_log=True)
        metrics = Sampled(self.endpoints, self.ctx, METRIC_TYPES, METRICS_RATE, in_log=False)
        try:
            state = fold_log(client)
            with self.mutex:
                self.state = state
                self.histories.clear()  # read again from the hub: this fold may start elsewhere
                self.seq = state.last_seq
                self.folded.notify_all()
            self.ready.set()
            self._notify({"seq": state.last_seq, "all": True})
            progress.ready(state.last_seq)  # folded already
            with client.subscribe(state.last_seq + 1, types=WATCHED) as sub:
                turned = 0.0
                records: list[Record] = []
                while not self.stopping.is_set():
                    if len(records) < PACE_BELOW:  # keeping up: this turn may wait its time
                        self.stopping.wait(max(0.0, turned + TURN_S - time.monotonic()))
                    turned = time.monotonic()
                    poller = zmq.Poller()
                    poller.register(sub.socket, zmq.POLLIN)
                    wait_ms = progress.register(poller, 0 if records else RECEIVE_MS)
                    poller.poll(metrics.register(poller, wait_ms))
                    progress.take()
                    metrics.take()
                    records = sub.receive(0)
                    live = [*sub.take_live(), *metrics.drain()]  # they tell only of their kind
                    ready = progress.ready(sub.position)
                    self.progress_taken += len(ready)
                    folding = list(heapq.merge(records, ready, key=_seq_of)) if ready else records
                    if folding or live:
                        self._fold(folding, live)
                    if self._progress_touched:
                        self._tell_progress()
                    if sub.position > self.seq:  # events of other types went by: up to here
                        with self.mutex:
                            self.seq = sub.position
                            self.folded.notify_all()
        finally:
            progress.close()
            metrics.close()

    def _fold(self, records: list[Record], live: list[Record]) -> None:
        touched: dict[str, None] = {}
        reported = self._progress_touched
        kinds = {r.type for r in live} | {r.type for r in records}
        folded, evolve, state = execution_folds.TYPES, execution_folds.evolve, self.state
        with self.mutex:
            keep = self.histories.add if self.histories else None  # pages open them under it
            for seq, kind, payload in records:  # a hot loop: ~50,000 a second at full ingest
                if kind not in folded:
                    continue
                try:
                    fields = fields_of(payload)
                    if keep is not None:
                        keep(seq, fields)
                    evolve(seq, fields, state)
                except (KeyError, TypeError, ValueError) as exc:
                    log.debug("dashboard: cannot fold seq %s: %s", seq, exc)
                    continue
                (reported if kind == PROGRESS else touched)[str(fields.get("execution_id", ""))] = (
                    None
                )
            if records and records[-1].seq > self.seq:
                self.seq = records[-1].seq
            seq = self.seq
            self.folded.notify_all()
        notice: dict[str, Any] = {"seq": seq}
        if touched:
            for execution_id in touched:
                reported.pop(execution_id, None)  # told now, with its latest progress
            _name(notice, touched)
        if kinds & SCHEDULE_TYPES or "ExecutionRequested" in kinds:
            notice["schedules"] = True
        if kinds & ALERT_TYPES:
            notice["alerts"] = True
        now = time.monotonic()
        if (
            kinds & (METRIC_TYPES | metric_folds.TYPES)
        ) and now - self._metrics_sent >= METRICS_EVERY_S:
            self._metrics_sent = now
            notice["metrics"] = True
        if len(notice) > 1:
            self._notify(notice)

    def _tell_progress(self) -> None:
        """Tell the pages of the executions whose only news is progress, once a second."""
        now = time.monotonic()
        if now - self._progress_sent < PROGRESS_NOTICE_EVERY_S:
            return
        self._progress_sent = now
        notice: dict[str, Any] = {"seq": self.seq}
        _name(notice, self._progress_touched)
        self._progress_touched = {}
        self._notify(notice)


def _name(notice: dict[str, Any], executions: dict[str, None]) -> None:
    ids = list(executions)
    notice["executions"] = ids[:NOTICE_IDS_MAX]
    notice["all"] = len(ids) > NOTICE_IDS_MAX


def _seq_of(record: Record) -> int:
    return record.seq


class Sampled:
    """Events of some types, heard on a socket of their own and taken at most ``rate`` a
    second, so that a flood of them (progress reports of a stage that reports in a tight loop,
    a burst of 100,000 a second; a program recording metrics at 5,000 a second) costs the hub
    nothing and the dashboard a bounded share of a core. Within the rate every event is taken,
    in order; past it the rest of the tick's are left unread, the hub drops them for this
    socket alone (a subscriber at its high-water mark), and the socket is opened anew (at
    most once a second) to hear fresh ones, not a backlog. That suits progress reports (a report is
    superseded by its task's next one, and a task's start, end and failure come on the
    subscription, where none is ever missed) and metric samples (they only tell the pages
    that the charts moved; the charts read the monitor's series).

    Events of the log (``in_log``) are folded once the subscription has delivered every event
    before them (`ready`), so the fold and the histories see the log's order; the others are
    taken as they come (`drain`).
    """

    def __init__(
        self,
        endpoints: Endpoints,
        ctx: zmq.Context[Any],
        types: Iterable[str],
        rate: int,
        *,
        in_log: bool,
    ) -> None:
        self._endpoints = endpoints
        self._ctx = ctx
        self._topics = frozenset(kind.encode() for kind in types)
        self._in_log = in_log
        self._budget = max(1.0, rate * SAMPLED_TICK_S)
        self._left = self._budget
        self._tick_end = time.monotonic() + SAMPLED_TICK_S
        self._behind = False
        self.pending: deque[Record] = deque(maxlen=SAMPLED_PENDING_MAX)
        self.socket = self._open()

    def _open(self) -> zmq.Socket[Any]:
        self._opened = time.monotonic()
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, SAMPLED_HWM)
        for topic in sorted(self._topics):
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        secure(sock, self._endpoints.publish, self._endpoints.curve, server=False)
        sock.connect(self._endpoints.publish)
        return sock

    def close(self) -> None:
        self.socket.close(linger=0)

    def _tick(self) -> None:
        now = time.monotonic()
        if now < self._tick_end:
            return
        self._tick_end = now + SAMPLED_TICK_S
        self._left = self._budget
        if self._behind and now - self._opened >= SAMPLED_REFRESH_S:
            # what waits is stale: hear fresh events instead (not every tick: a new socket
            # takes what the hub sends until it is behind again)
            self._behind = False
            self.socket.close(linger=0)
            self.socket = self._open()

    def register(self, poller: zmq.Poller, wait_ms: int) -> int:
        """Add the socket to ``poller`` while this tick has budget left; how long to wait."""
        self._tick()
        if self._left >= 1:
            poller.register(self.socket, zmq.POLLIN)
            return wait_ms
        return min(wait_ms, max(1, int((self._tick_end - time.monotonic()) * 1000) + 1))

    def take(self) -> None:
        """Read the events that came, up to what is left of this tick's budget."""
        self._tick()
        recv = self.socket.recv_multipart
        pending, topics, in_log = self.pending, self._topics, self._in_log
        while self._left >= 1:
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3 or len(frames[1]) != 8 or frames[0] not in topics:
                continue  # not one of ours (a malformed frame): the subscription counts those
            seq = int.from_bytes(frames[1], "big")
            if in_log and not (seq and (not pending or seq > pending[-1].seq)):
                continue  # a log's event, in order, or none
            pending.append(Record(seq, frames[0].decode(), frames[2]))
            self._left -= 1
        self._behind = bool(self.socket.poll(0, zmq.POLLIN))

    def drain(self) -> list[Record]:
        """Every event taken (of a stream not in the log's order)."""
        out = list(self.pending)
        self.pending.clear()
        return out

    def ready(self, upto: int) -> list[Record]:
        """The events taken whose place in the log the subscription has reached."""
        pending = self.pending
        out: list[Record] = []
        while pending and pending[0].seq <= upto:
            out.append(pending.popleft())
        return out
