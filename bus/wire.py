"""Frames on the wire: bounded msgpack decoding, PUB framing and the batch marker.

Every event is a msgpack map. On PUB an event travels as ``[topic, seq (8 bytes BE), payload]``
with the event type as topic, so a SUB can filter. While some subscriber filters by type, the
hub publishes a marker ``[topic, seq, [prev, last, {type: count}]]`` after each durable batch
that holds an event of a type some filtered subscriber follows, and every second: the seqs just
before and at the end of the batches since the last marker and how many events of each type
they held, which lets a filtered subscriber prove it missed nothing. An idle hub's marker every
second has ``prev == last == head``.

A batch's marker goes out on the marker topic of each followed type it holds
(`type_marker_topic`), so a subscriber hears only of the batches of its types, and the map
holds, under the key ``""`` (no type has that name), the chains: for each type some subscriber
follows by its marker topic, the ``last`` of the marker before this one of a batch that held
that type (or the head when the hub began to mark it). A subscriber whose every type's chain
ends at or before its position can take a marker whose ``prev`` is past it: the batches between
held none of its events. A subscriber of ``MARKER_TOPIC`` itself hears every marker.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import msgpack

from bus.errors import MalformedEventError
from bus.protocol import IDLE_MARKER_TOPIC, MARKER_TOPIC, MAX_MESSAGE_BYTES, TYPE_MARKER_TOPIC

SEQ: Final = struct.Struct(">Q")
MAX_DEPTH: Final = 32


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(raw: bytes) -> Any:
    """Decode one msgpack object, bounded by ``MAX_MESSAGE_BYTES``; no extension types."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MalformedEventError(f"message of {len(raw)} bytes is over {MAX_MESSAGE_BYTES}", raw)
    try:
        return msgpack.unpackb(raw, strict_map_key=True, ext_hook=_refuse_ext, timestamp=0)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise MalformedEventError(f"not a msgpack message: {exc}", bytes(raw[:64])) from exc


def unpack_map(raw: bytes) -> dict[str, Any]:
    obj = unpack(raw)
    if not isinstance(obj, dict):
        raise MalformedEventError(f"an event must be a msgpack map, got {type(obj).__name__}", raw)
    return obj


CHAINS_KEY: Final = ""  # the key of a marker's counts that holds its chains


class Marker(NamedTuple):
    prev: int
    last: int
    counts: dict[str, int]
    chains: dict[str, int] | None  # None from a hub that sends none


def type_marker_topic(kind: str) -> bytes:
    """The topic of the markers of batches holding events of type ``kind`` (ended by a zero
    byte, so that one type's topic is never a prefix of another's)."""
    return TYPE_MARKER_TOPIC + kind.encode() + b"\x00"


def marker_type(topic: bytes) -> str | None:
    """The type a `type_marker_topic` names; None if ``topic`` is not one."""
    if not topic.startswith(TYPE_MARKER_TOPIC) or not topic.endswith(b"\x00"):
        return None
    try:
        return topic[len(TYPE_MARKER_TOPIC) : -1].decode()
    except UnicodeDecodeError:
        return None


def pack_marker(
    prev: int,
    last: int,
    counts: Mapping[str, int],
    *,
    idle: bool = False,
    chains: dict[str, int] | None = None,
) -> list[bytes]:
    """The marker on the topic every marker subscriber hears (the idle one's, when ``idle``)."""
    topic = IDLE_MARKER_TOPIC if idle else MARKER_TOPIC
    return [topic, SEQ.pack(last), pack_marker_body(prev, last, counts, chains)]


def pack_marker_body(
    prev: int, last: int, counts: Mapping[str, int], chains: dict[str, int] | None
) -> bytes:
    """The marker's msgpack body (one for every topic it goes out on)."""
    body: dict[str, Any] = dict(counts)
    if chains is not None:
        body[CHAINS_KEY] = chains
    return pack([prev, last, body])


def parse_marker(payload: bytes) -> Marker:
    obj = unpack(payload)
    if (
        not isinstance(obj, list)
        or len(obj) != 3
        or type(obj[0]) is not int
        or type(obj[1]) is not int
        or not isinstance(obj[2], dict)
    ):
        raise MalformedEventError("bad batch marker", payload)
    counts = obj[2]
    chains = counts.pop(CHAINS_KEY, None)
    if chains is not None and (
        not isinstance(chains, dict) or not all(type(v) is int for v in chains.values())
    ):
        raise MalformedEventError("bad batch marker chains", payload)
    if not all(type(v) is int for v in counts.values()):
        raise MalformedEventError("bad batch marker counts", payload)
    return Marker(obj[0], obj[1], counts, chains)


def check_plain(value: Any, depth: int = 0) -> bool:
    """True when ``value`` is plain data: maps with str keys, lists, scalars; bounded depth."""
    if depth > MAX_DEPTH:
        return False
    kind = type(value)
    if kind in (str, int, float, bool, bytes) or value is None:
        return True
    if kind is list or kind is tuple:
        return all(check_plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(type(k) is str and check_plain(v, depth + 1) for k, v in value.items())
    return False
