"""Frames on the wire: bounded msgpack decoding, PUB framing and the batch marker.

Every event is a msgpack map. On PUB an event travels as ``[topic, seq (8 bytes BE), payload]``
with the event type as topic, so a SUB can filter. While some subscriber filters by type, the
hub publishes a marker ``[b"\\x00", seq, [prev, last, {type: count}]]`` after each durable batch
that holds an event of a type some filtered subscriber follows, and every second: the seqs just
before and at the end of the batches since the last marker and how many events of each type
they held, which lets a filtered subscriber prove it missed nothing. An idle hub's marker every
second has ``prev == last == head``.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack

from bus.errors import MalformedEventError
from bus.protocol import IDLE_MARKER_TOPIC, MARKER_TOPIC, MAX_MESSAGE_BYTES

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


def pack_marker(prev: int, last: int, counts: dict[str, int], *, idle: bool = False) -> list[bytes]:
    topic = IDLE_MARKER_TOPIC if idle else MARKER_TOPIC
    return [topic, SEQ.pack(last), pack([prev, last, counts])]


def parse_marker(payload: bytes) -> tuple[int, int, dict[str, int]]:
    obj = unpack(payload)
    if (
        not isinstance(obj, list)
        or len(obj) != 3
        or type(obj[0]) is not int
        or type(obj[1]) is not int
        or not isinstance(obj[2], dict)
    ):
        raise MalformedEventError("bad batch marker", payload)
    return obj[0], obj[1], obj[2]


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
