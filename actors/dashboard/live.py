"""The dashboard's live view of the log: the execution fold, followed on one hub subscription,
the histories of the executions pages look at, and the notices that tell every open page what
changed.

One subscription per dashboard, however many browsers are open: the pages hear of changes
from here (server-sent events), never from the hub, and read an execution's events from its
kept history (`histories`), read from the hub once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Final

import zmq

from actors.dashboard.histories import Histories
from actors.read.executions import fold_log
from bus.client import Client, Record
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
WATCHED: Final = execution_folds.TYPES | SCHEDULE_TYPES | ALERT_TYPES | METRIC_TYPES
RECEIVE_MS: Final = 250
METRICS_EVERY_S: Final = 1.0  # metric notices at most this often: charts need no more
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
        state = fold_log(client)
        with self.mutex:
            self.state = state
            self.histories.clear()  # read again from the hub: this fold may start elsewhere
            self.seq = state.last_seq
            self.folded.notify_all()
        self.ready.set()
        self._notify({"seq": state.last_seq, "all": True})
        with client.subscribe(state.last_seq + 1, types=WATCHED) as sub:
            while not self.stopping.is_set():
                records = sub.receive(RECEIVE_MS)
                live = sub.take_live()
                if records or live:
                    self._fold(records, live)
                if sub.position > self.seq:  # events of other types went by: up to here too
                    with self.mutex:
                        self.seq = sub.position
                        self.folded.notify_all()

    def _fold(self, records: list[Record], live: list[Record]) -> None:
        touched: dict[str, None] = {}
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
                touched[str(fields.get("execution_id", ""))] = None
            if records:
                self.seq = records[-1].seq
            seq = self.seq
            self.folded.notify_all()
        notice: dict[str, Any] = {"seq": seq}
        if touched:
            ids = list(touched)
            notice["executions"] = ids[:NOTICE_IDS_MAX]
            notice["all"] = len(ids) > NOTICE_IDS_MAX
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
