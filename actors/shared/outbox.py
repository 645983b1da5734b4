"""An actor's outbox: what it decided this turn, sent to the hub as one message.

A decision's id is derived from what it decides, so the same decision taken twice is one event.
The outbox keeps the ids on their way (sent, not yet back in the log) and drops a repeat of one;
an id not back within ``resend_after_s`` (the hub was away, or dropped it) is given up, so the
actor decides it again and it goes out again. Facts an actor reports without reading them back
(a worker's results) are sent with ``track=False``. An event over the wire's limit would be
refused by the hub and waited for forever: the actor's ``too_big`` turns it into another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

from bus.errors import BusError
from bus.events import Event
from bus.protocol import MAX_MESSAGE_BYTES
from bus.schema import encode

log = logging.getLogger("porch.outbox")
RESEND_AFTER_S: Final = 5.0


class Sink(Protocol):
    def publish_many(self, events: list[bytes]) -> None: ...


TooBig = Callable[[Event, int], Event | None]


class Outbox:
    """Decisions of one turn, deduplicated by id, sent with one `flush`."""

    def __init__(
        self,
        name: str,
        *,
        resend_after_s: float = RESEND_AFTER_S,
        max_bytes: int = MAX_MESSAGE_BYTES,
        too_big: TooBig | None = None,
    ) -> None:
        self.name = name
        self.resend_after_s = resend_after_s
        self.max_bytes = max_bytes
        self.too_big = too_big
        self.on_the_way: dict[str, float] = {}  # event id -> when it was sent (monotonic)
        self._ids: list[str] = []
        self._payloads: list[bytes] = []

    def add(self, event: Event, now: float, *, track: bool = True) -> bytes | None:
        """Queue an event for this turn's send: its payload, or None if it is on its way
        already, cannot be sent, or goes as another event (`too_big`)."""
        if event.id in self.on_the_way:
            return None
        try:
            payload = encode(event)
        except BusError as exc:  # the hub would refuse it: say so, and keep the actor up
            log.error("%s: %s %s cannot be sent: %s", self.name, event.TYPE, event.id, exc)
            return None
        own: bytes | None = payload
        if len(payload) > self.max_bytes:
            log.error(
                "%s: %s %s is %d bytes, over the %d-byte event limit",
                self.name, event.TYPE, event.id, len(payload), self.max_bytes,
            )  # fmt: skip
            instead = self.too_big(event, len(payload)) if self.too_big else None
            if instead is None:
                return None
            payload, own = encode(instead), None
        if track:
            self.on_the_way[event.id] = now
        self._ids.append(event.id)
        self._payloads.append(payload)
        return own

    def back(self, event_id: str) -> bool:
        """The event is in the log now; True if it was one of ours on its way."""
        return self.on_the_way.pop(event_id, None) is not None

    def expire(self, now: float) -> list[str]:
        """Give up the ids sent more than ``resend_after_s`` ago and not back: the actor
        decides them again (the same ids), and they go out again."""
        stale = []
        for event_id, at in self.on_the_way.items():  # oldest first: sent in time order
            if now - at <= self.resend_after_s:
                break
            stale.append(event_id)
        for event_id in stale:
            del self.on_the_way[event_id]
        return stale

    def pending(self) -> int:
        """Events queued for the next `flush`."""
        return len(self._payloads)

    def flush(self, sink: Sink) -> list[str]:
        """Send the turn's events as one message; the ids of those not sent (given up, so
        they are decided again), empty on success."""
        if not self._payloads:
            return []
        ids, payloads = self._ids, self._payloads
        self._ids, self._payloads = [], []
        try:
            sink.publish_many(payloads)
        except BusError as exc:
            log.error("%s: could not send %d events: %s", self.name, len(ids), exc)
            for event_id in ids:
                self.on_the_way.pop(event_id, None)
            return ids
        return []
