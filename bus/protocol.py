"""The hub's protocol in one place (the guide's MDP.py): request ops, sizes, socket options.

A request on the hub's ROUTER socket is a msgpack map ``{"op": OP, "rid": ID, ...}`` and its
reply ``{"rid": ID, "ok": true, ...}`` or ``{"rid": ID, "ok": false, "error": LINE}``:

- ``append`` ``{"event": payload}``: appended and synced, then ``{"seq": SEQ}``; with
  ``"next": payload`` too, that event is appended right after it in the same batch (unless the
  first is refused: a runner's completion and the dispatch of the task it goes on to);
- ``read`` ``{"from", "to", "types", "execution_id", "max"}``: one bounded chunk of the log,
  ``{"events": [[seq, payload], ...], "next": SEQ, "head": SEQ}``;
- ``head``: ``{"head": SEQ}``;
- ``stats``: ``{"stats": {counter: value, ...}}``.
"""

from __future__ import annotations

from typing import Any, Final

APPEND: Final = "append"
READ: Final = "read"
HEAD: Final = "head"
STATS: Final = "stats"
OPS: Final = (APPEND, READ, HEAD, STATS)
READ_DEFAULT_EVENTS: Final = 1000  # a read's "max" when it names none
READ_MAX_EVENTS: Final = 10_000  # the largest "max" a read may ask for

MAX_MESSAGE_BYTES: Final = 1 << 20  # an event's payload, a request
SOCKET_MAX_BYTES: Final = MAX_MESSAGE_BYTES + 4096  # ZeroMQ's MAXMSGSIZE of receiving sockets
REPLY_MAX_BYTES: Final = 4 * SOCKET_MAX_BYTES  # a requester's MAXMSGSIZE: a read reply holds many
MARKER_TOPIC: Final = b"\x00"  # the PUB topic of batch markers (see `bus.wire`)
# the hub's marker once a second, whatever it wrote: a subscription for rare types listens to
# it alone (its topic starts as a batch marker's, so those who want batch markers get it too)
IDLE_MARKER_TOPIC: Final = MARKER_TOPIC + b"i"
# a batch's marker goes out once per followed type it holds, on that type's marker topic (see
# `bus.wire.type_marker_topic`): a subscription wakes for the batches of its own types only
TYPE_MARKER_TOPIC: Final = MARKER_TOPIC + b"t"

INGEST_HWM: Final = 100_000  # the hub's PULL
PUB_HWM: Final = 50_000  # the hub's XPUB, unless its config says otherwise
SUB_HWM: Final = 200_000  # a subscription's SUB, unless it asks otherwise

LINGER_MS: Final = 0  # what a socket has not sent is dropped on close: what matters is appended
FLUSH_LINGER_MS: Final = 1000  # but a publisher's PUSH and the hub's XPUB get a second to send it


def read_args(
    message: dict[str, Any], head: int
) -> tuple[int, int, list[str] | None, str | None, int]:
    """A ``read`` request's range, filters and size, checked: ValueError names what is wrong.
    The range ends at ``head`` when it asks for more (or for no end)."""
    from_seq = message.get("from", 1)
    to_seq = message.get("to")
    types = message.get("types")
    execution_id = message.get("execution_id")
    max_events = message.get("max", READ_DEFAULT_EVENTS)
    if type(from_seq) is not int or from_seq < 1:
        raise ValueError(f"read: 'from' must be an int >= 1, got {from_seq!r}")
    if to_seq is not None and type(to_seq) is not int:
        raise ValueError(f"read: 'to' must be an int or nil, got {to_seq!r}")
    if types is not None and (
        not isinstance(types, list) or not all(type(t) is str for t in types)
    ):
        raise ValueError("read: 'types' must be a list of event type names")
    if execution_id is not None and type(execution_id) is not str:
        raise ValueError("read: 'execution_id' must be a str")
    if type(max_events) is not int or not 1 <= max_events <= READ_MAX_EVENTS:
        raise ValueError(f"read: 'max' must be an int from 1 to {READ_MAX_EVENTS}")
    to_seq = head if to_seq is None else min(to_seq, head)
    return from_seq, to_seq, types, execution_id, max_events
