"""The client of a hub: append with an acknowledgement, publish, read, and subscribe in order.

Every actor and every user program talks to porch through this. A `Subscription` delivers
every event exactly once and in seq order, across a slow join, dropped messages and hub
restarts: it reads the history it asked for from the hub, then follows the live stream, and any
gap that the seqs or the hub's batch markers reveal is filled by a read before going on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

import zmq

from bus.curve import secure
from bus.endpoints import Endpoints, log_dir, resolve_data_dir
from bus.errors import EventRefusedError, HubUnavailableError, MalformedEventError
from bus.protocol import (
    APPEND,
    FLUSH_LINGER_MS,
    HEAD,
    IDLE_MARKER_TOPIC,
    LINGER_MS,
    MARKER_TOPIC,
    MAX_MESSAGE_BYTES,
    READ,
    READ_DEFAULT_EVENTS,
    REPLY_MAX_BYTES,
    SOCKET_MAX_BYTES,
    STATS,
    SUB_HWM,
)
from bus.schema import Event, decode, encode, fields_of
from bus.wire import pack, parse_marker, type_marker_topic, unpack, unpack_map
from store.log import lock_holder
from store.sniff import payload_type

DRAIN_MAX: Final = 2000
LIVE_MAX: Final = 10_000


class Record(NamedTuple):
    """One event as the hub holds it: its seq, type, and msgpack payload (decoded on demand)."""

    seq: int
    type: str
    payload: bytes

    def fields(self) -> dict[str, Any]:
        """The event's map: envelope and fields, as plain data."""
        return fields_of(self.payload)

    def event(self) -> Event:
        """The event as its catalogue dataclass (validated, upcast)."""
        return decode(self.payload)


def _payload(event: Event | bytes) -> bytes:
    return event if isinstance(event, bytes) else encode(event)


class Client:
    """A connection to one hub. Not thread-safe: use one client per thread.

    ``timeout_ms`` bounds how long a request waits for the hub in all, resending on a fresh
    socket every ``retry_ms`` (the hub drops duplicate appends by event id, so a resent append
    is written once).
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        timeout_ms: int = 10_000,
        retry_ms: int = 2_000,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.timeout_ms = timeout_ms
        self.retry_ms = retry_ms
        self._ctx = context or zmq.Context.instance()
        self._push: zmq.Socket[Any] | None = None
        self._req: zmq.Socket[Any] | None = None
        self._rid = 0

    @classmethod
    def local(cls, data_dir: str | Path | None = None, **options: Any) -> Client:
        """Connect to the hub of a data dir on this host (``PORCH_DATA_DIR`` or ``./.porch``)."""
        return cls(
            Endpoints.local(resolve_data_dir(str(data_dir) if data_dir else None)), **options
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._push is not None:
            self._push.close(linger=FLUSH_LINGER_MS)
            self._push = None
        self._close_req()

    # --- commands ---------------------------------------------------------------------------

    def publish(self, event: Event | bytes) -> None:
        """Send an event without waiting for it to be durable (fire-and-forget).

        The hub validates it and drops it, counted, if it is malformed. Use `append` when the
        caller must know the event is in the log.
        """
        self.publish_many((event,))

    def publish_many(self, events: Sequence[Event | bytes]) -> None:
        """`publish` several events as one message, one part each: the hub takes each part as
        one event, in order, and the sender wakes the socket's I/O thread once, not per event."""
        if not events:
            return
        if self._push is None:
            self._push = self._ctx.socket(zmq.PUSH)
            self._push.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
            self._push.setsockopt(zmq.LINGER, FLUSH_LINGER_MS)
            secure(self._push, self.endpoints.ingest, self.endpoints.curve, server=False)
            self._push.connect(self.endpoints.ingest)
        try:
            if len(events) == 1:
                self._push.send(_payload(events[0]))
            else:
                self._push.send_multipart([_payload(e) for e in events])
        except zmq.Again:
            raise HubUnavailableError(
                f"hub at {self.endpoints.ingest} took no event for {self.timeout_ms} ms"
            ) from None

    def append(self, event: Event | bytes, then: Event | bytes | None = None) -> int:
        """Append an event and wait until it is durable; returns its seq. With ``then``, that
        event is appended right after it in the same batch, unless the first is refused (a
        runner's completion and the dispatch of the task it goes on to).

        Raises `EventRefusedError` with the hub's one-line reason if the event is refused.
        """
        payload = _payload(event)
        request: dict[str, Any] = {"op": APPEND, "event": payload}
        if then is not None:
            request["next"] = _payload(then)
        size = len(payload) + len(request.get("next", b""))
        if size > MAX_MESSAGE_BYTES - 1024:  # the hub's socket would drop it unanswered
            raise EventRefusedError(
                f"event is {size} bytes, over the {MAX_MESSAGE_BYTES}-byte event limit"
            )
        reply = self._request(request)
        return int(reply["seq"])

    def head(self) -> int:
        """The seq of the last durable event (0 for an empty log)."""
        return int(self._request({"op": HEAD})["head"])

    def stats(self) -> dict[str, Any]:
        """The hub's counters: accepted, duplicates, malformed, refused by kind, head."""
        return dict(self._request({"op": STATS})["stats"])

    def read_chunk(
        self,
        from_seq: int,
        to_seq: int | None = None,
        *,
        types: Iterable[str] | None = None,
        execution_id: str | None = None,
        max_events: int = READ_DEFAULT_EVENTS,
    ) -> tuple[list[Record], int, int]:
        """One bounded piece of the log: the records, the seq to continue from, and the head."""
        reply = self._request(
            {
                "op": READ,
                "from": from_seq,
                "to": to_seq,
                "types": list(types) if types is not None else None,
                "execution_id": execution_id,
                "max": max_events,
            }
        )
        records = [Record(seq, _type_of(payload), payload) for seq, payload in reply["events"]]
        return records, int(reply["next"]), int(reply["head"])

    def read(
        self,
        from_seq: int = 1,
        to_seq: int | None = None,
        *,
        types: Iterable[str] | None = None,
        execution_id: str | None = None,
    ) -> Iterator[Record]:
        """Stream durable events from the hub in seq order, a chunk at a time.

        Without ``to_seq`` it stops at the head as it stood at the first chunk.
        """
        type_list = list(types) if types is not None else None
        next_seq = max(1, from_seq)
        end: int | None = to_seq
        while end is None or next_seq <= end:
            records, next_seq, head = self.read_chunk(
                next_seq, end, types=type_list, execution_id=execution_id
            )
            yield from records
            end = head if end is None else min(end, head)
            if not records and next_seq > end:
                return

    def subscribe(
        self,
        from_seq: int | None = None,
        *,
        types: Iterable[str] | None = None,
        hwm: int = SUB_HWM,
        batch_markers: bool = True,
    ) -> Subscription:
        """Follow the log: from ``from_seq`` (history first), or only new events when None.

        ``types`` filters at the socket; ``hwm`` is how many messages may wait unread before
        ZeroMQ drops some (the subscription then reads what it missed from the hub).
        ``batch_markers=False`` suits a filter on rare types (a worker's control events): it
        is not woken by the hub's marker after every batch, and reads each event it hears of
        from the hub instead (in order, none missed), once a second whatever it heard.
        """
        return Subscription(self, from_seq, types, hwm, batch_markers=batch_markers)

    # --- transport --------------------------------------------------------------------------

    def _close_req(self) -> None:
        if self._req is not None:
            self._req.close(linger=LINGER_MS)
            self._req = None

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        self._rid += 1
        rid = self._rid
        data = pack({**body, "rid": rid})
        deadline = time.monotonic() + self.timeout_ms / 1000
        while True:
            if self._req is None:
                self._req = self._ctx.socket(zmq.DEALER)
                self._req.setsockopt(zmq.LINGER, LINGER_MS)
                self._req.setsockopt(zmq.MAXMSGSIZE, REPLY_MAX_BYTES)
                secure(self._req, self.endpoints.request, self.endpoints.curve, server=False)
                self._req.connect(self.endpoints.request)
            sock = self._req
            sock.send_multipart([b"", data])
            try_until = min(deadline, time.monotonic() + self.retry_ms / 1000)
            while (wait := try_until - time.monotonic()) > 0:
                if not sock.poll(max(1, int(wait * 1000))):
                    continue
                reply = _parse_reply(sock.recv_multipart())
                if reply is None or reply.get("rid") != rid:
                    continue
                if not reply.get("ok"):
                    raise EventRefusedError(str(reply.get("error", "refused")))
                return reply
            self._close_req()
            if time.monotonic() >= deadline:
                raise HubUnavailableError(
                    f"no hub answered at {self.endpoints.request} within {self.timeout_ms} ms"
                )


def _parse_reply(frames: list[bytes]) -> dict[str, Any] | None:
    try:
        reply = unpack(frames[-1])
    except MalformedEventError:
        return None
    return reply if isinstance(reply, dict) else None


def _type_of(payload: bytes) -> str:
    kind = payload_type(payload)
    if kind is not None:
        return kind
    kind = unpack_map(payload).get("type")
    return kind if isinstance(kind, str) else ""


def hub_running(data_dir: Path) -> bool:
    """True when a hub holds the log of this local data dir."""
    return lock_holder(log_dir(data_dir)) is not None


class Subscription:
    """An in-order, exactly-once stream of the log's events for one consumer.

    ``position`` is the seq up to which every matching event has been delivered. Register
    ``socket`` in a poller to wait on it beside other sockets, then call `receive` with 0.
    """

    def __init__(
        self,
        client: Client,
        from_seq: int | None,
        types: Iterable[str] | None,
        hwm: int = SUB_HWM,
        *,
        batch_markers: bool = True,
    ) -> None:
        self._client = client
        self._types = frozenset(types) if types is not None else None
        self._by_read = self._types is not None and not batch_markers
        sock = client._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, SOCKET_MAX_BYTES)
        if self._types is None:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        else:
            # the idle marker every second; with batch markers, those of its types' batches
            sock.setsockopt(zmq.SUBSCRIBE, IDLE_MARKER_TOPIC)
            for kind in sorted(self._types):
                sock.setsockopt(zmq.SUBSCRIBE, kind.encode())
                if not self._by_read:
                    sock.setsockopt(zmq.SUBSCRIBE, type_marker_topic(kind))
        secure(sock, client.endpoints.publish, client.endpoints.curve, server=False)
        sock.connect(client.endpoints.publish)
        self.socket = sock
        head = client.head()
        self.position = head if from_seq is None else max(0, from_seq - 1)
        self._target = max(self.position, head)
        self._pending: list[Record] = []
        self._names: dict[bytes, str] = {}
        self.malformed = 0
        # live events received (seq 0), oldest first; the newest LIVE_MAX are kept until taken
        self.live: deque[Record] = deque(maxlen=LIVE_MAX)
        self._live_count = 0

    def close(self) -> None:
        self.socket.close(linger=LINGER_MS)

    def take_live(self) -> list[Record]:
        """The live events received since the last call (heartbeats, samples), oldest first.
        They are never in the log, so a gap in them is not repaired."""
        if not self.live:
            return []
        out = list(self.live)
        self.live.clear()
        return out

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Record]:
        while True:
            yield from self.receive()

    def receive(self, timeout_ms: int | None = None) -> list[Record]:
        """The next events in seq order; an empty list if none came within ``timeout_ms``, or
        if only live events came (they wait in `live` for `take_live`)."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while True:
            if self.position < self._target:
                records = self._repair()
                if records:
                    return records
                if deadline is not None and time.monotonic() >= deadline:
                    return []
                continue
            live_before = self._live_count
            out = self._drain()
            if out or self._live_count != live_before:  # live events wake the caller too
                return out
            if self.position < self._target:
                continue
            wait_ms = 1000
            if deadline is not None:
                wait_ms = int((deadline - time.monotonic()) * 1000)
                if wait_ms <= 0:
                    return []
            self.socket.poll(min(wait_ms, 1000))

    def _repair(self) -> list[Record]:
        records, next_seq, head = self._client.read_chunk(
            self.position + 1, self._target, types=self._types
        )
        if head < self._target:
            # The hub holds less than was announced (an unsynced tail lost with fsync=never):
            # wait for what it has instead of asking for seqs that do not exist.
            self._target = max(head, self.position)
        self.position = min(self._target, max(self.position, next_seq - 1))
        return records

    def _name(self, topic: bytes) -> str:
        name = self._names.get(topic)
        if name is None:
            name = self._names[topic] = topic.decode("utf-8", "replace")
        return name

    def _drain(self) -> list[Record]:
        out: list[Record] = []
        self._flush_pending(out)
        recv = self.socket.recv_multipart
        filtered = self._types is not None
        for _ in range(DRAIN_MAX):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 3 or len(frames[1]) != 8:
                self.malformed += 1
                continue
            topic, seq_bytes, payload = frames
            if topic[:1] == MARKER_TOPIC:
                self._on_marker(payload, out)
                continue
            seq = int.from_bytes(seq_bytes, "big")
            if seq == 0:  # a live event (a heartbeat, a sample): no place in the log's order
                self.live.append(Record(0, self._name(topic), payload))
                self._live_count += 1
                continue
            if seq <= self.position:
                continue
            if self._by_read:  # read from the hub with whatever came before it
                self._target = max(self._target, seq)
                continue
            record = Record(seq, self._name(topic), payload)
            if filtered:
                if record.type in self._types:  # type: ignore[operator]
                    self._pending.append(record)
            elif seq == self.position + 1 and self._target <= self.position:
                out.append(record)
                self.position = seq
            else:
                self._target = max(self._target, seq - 1)
                self._pending.append(record)
        return out

    def _flush_pending(self, out: list[Record]) -> None:
        if self._types is not None or not self._pending or self._target > self.position:
            return
        keep: list[Record] = []
        for record in self._pending:
            if record.seq <= self.position:
                continue
            if record.seq == self.position + 1 and not keep:
                out.append(record)
                self.position = record.seq
            else:
                keep.append(record)
        self._pending = keep
        if keep:
            self._target = max(self._target, keep[0].seq - 1)

    def _on_marker(self, payload: bytes, out: list[Record]) -> None:
        try:
            prev, last, counts, chains = parse_marker(payload)
        except MalformedEventError:
            self.malformed += 1
            return
        if last <= self.position:
            return
        if self._types is None:
            self._target = max(self._target, last)
            return
        in_batch = [r for r in self._pending if prev < r.seq <= last]
        expected = sum(counts.get(kind, 0) for kind in self._types)
        if self._follows_on(prev, chains) and len(in_batch) == expected:
            out.extend(in_batch)
            self.position = last
            self._target = last
        else:
            self._target = max(self._target, last)
        self._pending = [r for r in self._pending if r.seq > last]

    def _follows_on(self, prev: int, chains: dict[str, int] | None) -> bool:
        """Whether a marker starting after ``prev`` takes up where this subscription is: it
        starts at its position, or the batches in between held none of its events (each of
        its types' chains ends at or before its position, and it holds no event of them)."""
        if self._target > self.position:
            return False
        if prev == self.position:
            return True
        if prev < self.position or chains is None:
            return False
        position = self.position
        types = self._types or ()
        if not all(chains.get(kind, position + 1) <= position for kind in types):
            return False  # a type the hub does not mark yet, or a marker this one missed
        return not any(position < r.seq <= prev for r in self._pending)
