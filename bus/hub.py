"""The hub: the single writer of the event log and the publisher of what it holds.

It pulls events from producers (ingest), validates each at the door, gives it the next seq,
appends the batch to the log, syncs under the fsync policy and only then publishes the batch
and acknowledges appends: durable before visible. It also answers reads of the log in bounded
chunks. A malformed message is counted and refused; it never stops the hub.

A full disk is a state too: while the log's filesystem has no room, batches are refused whole
(appends get the one-line reason, pushed events are dropped and counted) and reads, heads,
stats and subscriptions go on; the hub tries the disk again at most every
`DISK_PROBE_INTERVAL_S` and takes appends by itself once space frees.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Final

import zmq

from bus.curve import Authenticator, needs_auth, secure
from bus.endpoints import log_dir, run_dir
from bus.errors import MalformedEventError
from bus.hubconfig import HubConfig, HubStats
from bus.markers import Markers
from bus.protocol import (
    APPEND,
    FLUSH_LINGER_MS,
    HEAD,
    INGEST_HWM,
    LINGER_MS,
    OPS,
    READ,
    SOCKET_MAX_BYTES,
    STATS,
    read_args,
)
from bus.retainer import Retainer
from bus.schema import check_map
from bus.wire import SEQ, pack, unpack, unpack_map
from store.errors import CorruptRecordError, LogDiskFullError
from store.fsutil import disk_free_bytes, format_bytes, make_private_dir
from store.log import EventLog
from store.reader import LogReader, recent_payloads
from store.sniff import payload_id

log = logging.getLogger("porch.hub")


REQUESTS_PER_CYCLE: Final = 64
DISK_PROBE_INTERVAL_S: Final = 0.5  # while the disk is full, refuse without trying it in between
DISK_FULL: Final = "disk full"  # the refused-kind of events the full disk turned away


class _Batch:
    """What one cycle gathered: payloads to append, their topics, and who waits for an ack."""

    __slots__ = ("acks", "counts", "first", "live", "payloads", "reads", "topics")

    def __init__(self) -> None:
        self.live: list[tuple[bytes, bytes]] = []  # (topic, payload) published, not appended
        self.payloads: list[bytes] = []
        self.topics: list[bytes] = []
        self.counts: dict[str, int] = {}
        self.acks: list[tuple[list[bytes], Any, int, bool]] = []
        self.reads: list[tuple[list[bytes], dict[str, Any]]] = []
        self.first = 0  # the seq of its first payload, once appended


class Hub:
    """Owns the log; publishes an event only after it is durable under the fsync policy.

    An event is acknowledged, published and remembered for dedup only once its batch is in
    the log: a batch the full disk refused leaves no trace but the refusal.
    """

    def __init__(self, config: HubConfig, *, context: zmq.Context[Any] | None = None) -> None:
        self.config = config
        self.stats = HubStats()
        self._stopping = False
        endpoints = config.endpoints
        # a ZAP handler binds one fixed inproc address per context: a CURVE hub gets its own
        self._own_ctx = (
            zmq.Context()
            if context is None and needs_auth(endpoints.all(), endpoints.curve)
            else None
        )
        self._ctx = context or self._own_ctx or zmq.Context.instance()
        make_private_dir(config.data_dir)
        self.log = EventLog(
            log_dir(config.data_dir), fsync=config.fsync, segment_bytes=config.segment_bytes
        )
        if self.log.truncated_bytes:
            log.warning(
                "cut a torn tail of %d bytes off the log%s",
                self.log.truncated_bytes,
                " (it began with a whole record that failed its check)"
                if self.log.truncated_whole_record
                else "",
            )
        self.reader = LogReader(log_dir(config.data_dir))
        self._recent: dict[str, int] = {}
        self._recent_order: deque[tuple[str, int]] = deque()
        self._seen_kinds: set[str] = set()
        self._topics: dict[str, bytes] = {}
        self._load_recent_ids()
        self.markers = Markers(self.log.head)
        self._disk_full: str | None = None  # the refusal line while the disk is full
        self._disk_probe_at = 0.0  # monotonic time before which a full disk is not tried
        self._auth: Authenticator | None = None
        self.retainer = Retainer(config)
        try:
            self._bind()
        except BaseException:
            self.close()
            raise

    @property
    def head(self) -> int:
        return self.log.head

    def _load_recent_ids(self) -> None:
        window = self.config.dedup_window
        head = self.log.head
        if not window or not head:
            return
        try:
            # the log was just opened and its tail checked: headers alone lead the way
            for seq, payload in recent_payloads(log_dir(self.config.data_dir), head - window + 1):
                event_id = payload_id(payload)  # the usual layout: no need to unpack it all
                if event_id is None:
                    try:
                        event_id = unpack_map(payload).get("id")
                    except MalformedEventError:
                        continue
                if type(event_id) is str:
                    self._remember(event_id, seq)
        except CorruptRecordError as exc:
            # The hub still appends; reads into the damage get an error reply naming it.
            log.error("%s; run `porch log verify`", exc)

    def _bind(self) -> None:
        if self.config.endpoints.is_local():
            make_private_dir(run_dir(self.config.data_dir))
        ctx = self._ctx
        self.ingest = ctx.socket(zmq.PULL)
        self.ingest.setsockopt(zmq.MAXMSGSIZE, SOCKET_MAX_BYTES)
        self.ingest.setsockopt(zmq.RCVHWM, INGEST_HWM)
        # XPUB, so the hub learns whether any subscriber filters by type: only those need a
        # marker after every batch; the rest find gaps by seq and get the idle marker.
        self.publish = ctx.socket(zmq.XPUB)
        self.publish.setsockopt(zmq.SNDHWM, self.config.pub_hwm)
        self.request = ctx.socket(zmq.ROUTER)
        self.request.setsockopt(zmq.MAXMSGSIZE, SOCKET_MAX_BYTES)
        endpoints = self.config.endpoints
        if needs_auth(endpoints.all(), endpoints.curve) and self._auth is None:
            assert endpoints.curve is not None
            self._auth = Authenticator(ctx, endpoints.curve)  # before any bind: see bus.curve
        pairs = zip((self.ingest, self.publish, self.request), endpoints.all(), strict=True)
        for sock, address in pairs:
            sock.setsockopt(zmq.LINGER, LINGER_MS)
            secure(sock, address, endpoints.curve, server=True)
            sock.bind(address)

    def stop(self) -> None:
        """Ask the loop to finish its cycle, flush and close (safe from a signal handler)."""
        self._stopping = True

    def run(self) -> None:
        """Serve until `stop`; then commit what was received, sync and close."""
        poller = zmq.Poller()
        poller.register(self.ingest, zmq.POLLIN)
        poller.register(self.request, zmq.POLLIN)
        poller.register(self.publish, zmq.POLLIN)
        interval = self.config.marker_interval_s
        next_marker = time.monotonic() + interval
        next_archive = time.monotonic() + min(5.0, self.config.archive_check_s)
        try:
            while not self._stopping:
                wait_ms = max(0, min(100, int((next_marker - time.monotonic()) * 1000)))
                if poller.poll(wait_ms):
                    self.cycle()
                now = time.monotonic()
                if now >= next_marker:
                    self._publish_idle_marker()
                    next_marker = now + interval
                if self.retainer.finished():
                    self.retainer.archived()
                    next_archive = now  # the next due segment at once
                if now >= next_archive and not self.retainer.busy:
                    self.retainer.retain(time.time())
                    next_archive = now + self.config.archive_check_s
            self.cycle()
        finally:
            self.retainer.close()
            self.close()

    def close(self) -> None:
        self.log.close()
        for name in ("ingest", "publish", "request"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=FLUSH_LINGER_MS if name == "publish" else LINGER_MS)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_ctx is not None:
            self._own_ctx.term()
            self._own_ctx = None

    def cycle(self) -> int:
        """Drain requests and ingest once, commit the batch, publish, ack, serve reads.

        Returns how many events were appended (0 when the full disk refused the batch).
        """
        batch = _Batch()
        self._drain_subscriptions()
        self._drain_requests(batch)
        self._drain_ingest(batch)
        refusal = self._commit(batch) if batch.payloads else None
        head = self.log.head
        # acks before the batch is published (both after the sync): an appender waiting for
        # one may go on at once (a runner to the next task of a chain), before every
        # subscriber wakes to fold the batch
        for envelope, rid, seq, duplicate in batch.acks:
            if refusal is not None and seq > head:  # an event of the refused batch
                self._reply(envelope, {"rid": rid, "ok": False, "error": refusal})
            else:
                self._reply(envelope, {"rid": rid, "ok": True, "seq": seq, "duplicate": duplicate})
        if batch.payloads and refusal is None:
            self._publish_batch(batch)
        if batch.live:
            self._publish_live(batch.live)
        for envelope, body in batch.reads:
            self._serve(envelope, body)
        return 0 if refusal is not None else len(batch.payloads)

    def _drain_subscriptions(self) -> None:
        """Track which markers subscribers follow, and which types (see `bus.markers`)."""
        while True:
            try:
                message = self.publish.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.markers.subscription(message, self.log.head)

    def _drain_ingest(self, batch: _Batch) -> None:
        recv = self.ingest.recv
        limit = self.config.batch_max
        payloads = batch.payloads
        while len(payloads) < limit:
            try:
                raw = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._accept(raw, batch, None, None)

    def _drain_requests(self, batch: _Batch) -> None:
        for _ in range(REQUESTS_PER_CYCLE):
            try:
                frames = self.request.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.stats.requests += 1
            envelope, body = frames[:-1], frames[-1]
            if not envelope:
                self._refuse("request without an identity", "bad request")
                continue
            try:
                message = unpack(body)
                if not isinstance(message, dict):
                    raise MalformedEventError(
                        f"a request must be a map, got {type(message).__name__}"
                    )
            except MalformedEventError as exc:
                self._refuse(str(exc), "bad request")
                self._reply(envelope, {"rid": None, "ok": False, "error": f"bad request: {exc}"})
                continue
            op = message.get("op")
            rid = message.get("rid")
            if op == APPEND:
                payload = message.get("event")
                if type(payload) is not bytes:
                    self._refuse("append without event bytes", "bad request")
                    self._reply(
                        envelope,
                        {"rid": rid, "ok": False, "error": "append needs 'event' as msgpack bytes"},
                    )
                    continue
                nxt = message.get("next")
                if self._accept(payload, batch, envelope, rid) and type(nxt) is bytes:
                    self._accept(nxt, batch, None, None)
            elif op in (READ, HEAD, STATS):
                batch.reads.append((envelope, message))
            else:
                self._refuse(f"unknown op {op!r}", "bad request")
                self._reply(
                    envelope,
                    {
                        "rid": rid,
                        "ok": False,
                        "error": f"unknown op {op!r}; ops: {', '.join(OPS)}",
                    },
                )

    def _accept(self, raw: bytes, batch: _Batch, envelope: list[bytes] | None, rid: Any) -> bool:
        """Take an event into the batch (or note it is a duplicate); False if refused."""
        try:
            schema, obj = check_map(unpack_map(raw), raw)
        except Exception as exc:  # anything a message can provoke is a refusal, never a crash
            self.stats.malformed += 1
            self._refuse(str(exc), "malformed event")
            if envelope is not None:
                self._reply(envelope, {"rid": rid, "ok": False, "error": str(exc)})
            return False
        kind = schema.type
        topic = self._topics.get(kind)
        if topic is None:
            topic = self._topics[kind] = kind.encode()
        if schema.live:  # liveness, not history: published after this cycle's batch, not logged
            self.stats.live += 1
            batch.live.append((topic, raw))
            if envelope is not None:
                batch.acks.append((envelope, rid, 0, False))
            return True
        event_id = obj["id"]
        prior = self._recent.get(event_id)
        if prior is not None:
            self.stats.duplicates += 1
            if envelope is not None:
                batch.acks.append((envelope, rid, prior, True))
            return True
        seq = self.log.head + len(batch.payloads) + 1
        self._remember(event_id, seq)
        batch.payloads.append(raw)
        batch.topics.append(topic)
        batch.counts[kind] = batch.counts.get(kind, 0) + 1
        if envelope is not None:
            batch.acks.append((envelope, rid, seq, False))
        return True

    def _remember(self, event_id: str, seq: int) -> None:
        window = self.config.dedup_window
        if not window:
            return
        self._recent[event_id] = seq
        order = self._recent_order
        order.append((event_id, seq))
        if len(order) > window:
            old, old_seq = order.popleft()
            # the same id may sit in the window twice (an old log, a smaller earlier window):
            # forget it only when this entry is the one the map holds
            if self._recent.get(old) == old_seq:
                del self._recent[old]

    def _commit(self, batch: _Batch) -> str | None:
        """Append the batch (durable under the fsync policy); None, or the reason the full disk
        refused it."""
        if self._disk_full is not None and time.monotonic() < self._disk_probe_at:
            return self._refuse_batch(batch, self._disk_full)
        try:
            first = self.log.append(batch.payloads)
        except LogDiskFullError as exc:
            self._disk_probe_at = time.monotonic() + DISK_PROBE_INTERVAL_S
            if self._disk_full is None:
                log.error("refusing appends, still serving reads and subscriptions: %s", exc)
            self._disk_full = str(exc)
            return self._refuse_batch(batch, self._disk_full)
        if self._disk_full is not None:
            self._disk_full = None
            log.info(
                "the disk has room again (%s free): appends resume at seq %d",
                format_bytes(disk_free_bytes(self.log.directory)),
                first,
            )
        self.stats.accepted += len(batch.payloads)
        self.stats.batches += 1
        batch.first = first
        return None

    def _publish_batch(self, batch: _Batch) -> None:
        """Publish a committed batch, then its markers."""
        send = self.publish.send
        more = zmq.SNDMORE
        pack_seq = SEQ.pack
        seq = batch.first
        for topic, payload in zip(batch.topics, batch.payloads, strict=True):
            send(topic, more)
            send(pack_seq(seq), more)
            send(payload)
            seq += 1
        for marker in self.markers.after_batch(batch.counts, self.log.head):
            self.publish.send_multipart(marker)

    def _refuse_batch(self, batch: _Batch, reason: str) -> str:
        """Count the batch as refused and forget its ids, so a retry is written, not taken
        for a duplicate of an event that never reached the log."""
        self.stats.refused[DISK_FULL] += len(batch.payloads)
        head = self.log.head
        order = self._recent_order
        while order and order[-1][1] > head:
            event_id, seq = order.pop()
            if self._recent.get(event_id) == seq:
                del self._recent[event_id]
        return reason

    def _publish_live(self, live: list[tuple[bytes, bytes]]) -> None:
        """Live events go out with seq 0: subscribers hand them over apart from the log's."""
        send = self.publish.send
        more = zmq.SNDMORE
        zero = SEQ.pack(0)
        for topic, payload in live:
            send(topic, more)
            send(zero, more)
            send(payload)

    def _publish_idle_marker(self) -> None:
        """The marker every second: it moves every subscriber past the batches it had no
        event of (see `bus.markers`)."""
        self.publish.send_multipart(self.markers.idle(self.log.head))

    def _refuse(self, reason: str, kind: str) -> None:
        self.stats.refused[kind] += 1
        if kind not in self._seen_kinds:
            self._seen_kinds.add(kind)
            log.warning(
                "refused a message (%s): %s; further ones of this kind are only counted",
                kind,
                reason,
            )

    def _reply(self, envelope: list[bytes], body: dict[str, Any]) -> None:
        try:
            self.request.send_multipart([*envelope, pack(body)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("could not reply to a requester: %s", exc)

    def _serve(self, envelope: list[bytes], message: dict[str, Any]) -> None:
        op = message["op"]
        rid = message.get("rid")
        head = self.log.head
        if op == HEAD:
            self._reply(envelope, {"rid": rid, "ok": True, "head": head})
            return
        if op == STATS:
            stats = self.stats.as_map() | {
                "head": head,
                "auth_denied": self._auth.denied if self._auth is not None else 0,
                "disk_full": self._disk_full is not None,
                "disk_free_bytes": disk_free_bytes(self.log.directory),
            }
            self._reply(envelope, {"rid": rid, "ok": True, "stats": stats})
            return
        try:
            from_seq, to_seq, types, execution_id, max_events = read_args(message, head)
        except ValueError as exc:
            self._refuse(str(exc), "bad request")
            self._reply(envelope, {"rid": rid, "ok": False, "error": str(exc)})
            return
        try:
            records, next_seq = self.reader.read_chunk(
                from_seq,
                to_seq,
                types=types,
                execution_id=execution_id,
                max_events=max_events,
                max_bytes=self.config.read_chunk_bytes,
                max_scan=self.config.read_scan_max,
            )
        except CorruptRecordError as exc:
            log.error("%s", exc)
            self._reply(envelope, {"rid": rid, "ok": False, "error": str(exc)})
            return
        self._reply(
            envelope,
            {"rid": rid, "ok": True, "events": records, "next": next_seq, "head": head},
        )
