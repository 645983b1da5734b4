"""The hub's batch markers (see `bus.wire`): who follows them, and what the next one covers.

The hub learns from its XPUB which topics subscribers follow: event types (filtered
subscriptions), the marker topic of a type (`type_marker_topic`: a subscription that proves
with markers that it missed nothing), or every marker (`MARKER_TOPIC` itself). After a batch
that holds an event of a type followed by its marker topic, one marker goes out on the topic
of each such type it holds: a subscriber is woken by the batches of its own types and the
once-a-second idle marker, not by every batch another subscriber follows (an orchestrator's
dispatches and completions used to wake every scheduler, monitor, dashboard and waiting
client, twice per task).

Each marker carries the chains: for every type followed by its marker topic, the ``last`` of
the marker before it of a batch holding that type (or the head when the hub began to mark
it). They let a subscriber take a marker whose ``prev`` is past its position: if none of its
types' chains ends past its position, no batch in between held one of its events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Final

from bus.protocol import MARKER_TOPIC
from bus.schema import CATALOGUE
from bus.wire import SEQ, marker_type, pack_marker, pack_marker_body, type_marker_topic

ON: Final = b"\x01"


class Markers:
    """What the hub knows of the markers its subscribers follow; it sends what this says."""

    def __init__(self, head: int) -> None:
        self.every = False  # a subscriber of every marker (`MARKER_TOPIC` itself)
        self.chains: dict[str, int] = {}  # the types followed by their marker topic
        # the event topics of filtered subscriptions (a topic is a prefix of types), and
        # whether a type is among them, as looked up
        self._topics: set[bytes] = set()
        self._wanted: dict[str, bool] = {}
        # what the next marker covers: the batches since the last one
        self.start = head
        self.counts: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        return self.every or bool(self.chains)

    def subscription(self, message: bytes, head: int) -> None:
        """An XPUB message: ``\\x01`` (or ``\\x00``, left) and the topic; the first subscription
        to a topic and the last one leaving it, as ZeroMQ tells them."""
        flag, topic = message[:1], message[1:]
        if flag not in (b"\x00", b"\x01"):
            return
        on = flag == ON
        was = self.active
        kind = marker_type(topic)
        if topic == MARKER_TOPIC:
            self.every = on
        elif kind is not None:
            if kind not in CATALOGUE:
                return  # no event of it is ever logged: no chain (every marker carries them)
            if not on:
                self.chains.pop(kind, None)
            elif kind not in self.chains:
                self.chains[kind] = head  # its batches are marked from here on
        elif topic and not topic.startswith(MARKER_TOPIC):  # not b"" (every event)
            if on:
                self._topics.add(topic)
            else:
                self._topics.discard(topic)
            self._wanted.clear()
        if self.active and not was:
            self.start, self.counts = head, Counter()

    def after_batch(self, counts: Mapping[str, int], head: int) -> list[list[bytes]]:
        """The markers to send for a batch just made durable (ending at ``head``): none when
        it holds no type a marker subscriber follows (the next marker covers it too)."""
        if not self.active:
            return []
        self.counts.update(counts)
        topics = [type_marker_topic(kind) for kind in counts if kind in self.chains]
        if not topics and not (self.every and any(self._is_wanted(kind) for kind in counts)):
            return []
        body = pack_marker_body(self.start, head, self.counts, self.chains)
        for kind in counts:
            if kind in self.chains:
                self.chains[kind] = head
        self.start, self.counts = head, Counter()
        seq = SEQ.pack(head)
        return [[topic, seq, body] for topic in topics or [MARKER_TOPIC]]

    def idle(self, head: int) -> list[bytes]:
        """The once-a-second marker, which every marker subscriber hears: it covers the
        batches since the last marker and moves each past those it had no event of."""
        marker = pack_marker(self.start, head, self.counts, idle=True, chains=self.chains)
        self.start, self.counts = head, Counter()
        return marker

    def _is_wanted(self, kind: str) -> bool:
        """Whether a filtered subscriber follows events of this type (a topic is a prefix)."""
        wanted = self._wanted.get(kind)
        if wanted is None:
            topic = kind.encode()
            wanted = self._wanted[kind] = any(topic.startswith(t) for t in self._topics)
        return wanted
