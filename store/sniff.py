"""Reading an event payload's type and id without unpacking it: msgpack byte layout sniffing.

Events are packed with ``type``, ``v`` and ``id`` as their first keys, so a reader that only
routes or filters records can find them at fixed places and leave the rest packed.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgpack


def _first_key(payload: bytes) -> int:
    """Where the first key of a packed map starts (-1: not a map)."""
    head = payload[0] if payload else 0
    return 1 if 0x80 <= head <= 0x8F else 3 if head == 0xDE else 5 if head == 0xDF else -1


def _packed_str(payload: bytes, pos: int) -> tuple[str, int] | None:
    """The msgpack string at ``pos`` (fixstr or str8) and the offset after it."""
    tag = payload[pos] if 0 <= pos < len(payload) else 0
    if 0xA0 <= tag <= 0xBF:
        start, size = pos + 1, tag & 0x1F
    elif tag == 0xD9 and pos + 1 < len(payload):
        start, size = pos + 2, payload[pos + 1]
    else:
        return None
    raw = payload[start : start + size]
    if len(raw) != size:
        return None
    try:
        return raw.decode("utf-8"), start + size
    except UnicodeDecodeError:
        return None


def payload_type(payload: bytes) -> str | None:
    """The ``type`` of an event payload without unpacking the rest of it: events are packed
    with ``type`` as their first key. None when the payload is not laid out that way."""
    pos = _first_key(payload)
    if pos < 0 or payload[pos : pos + 5] != b"\xa4type":
        return None
    found = _packed_str(payload, pos + 5)
    return found[0] if found is not None else None


def payload_id(payload: bytes) -> str | None:
    """The ``id`` of an event payload packed the usual way (``type``, ``v``, ``id`` first),
    read without unpacking the rest; None when it is laid out otherwise."""
    pos = _first_key(payload)
    if pos < 0 or payload[pos : pos + 5] != b"\xa4type":
        return None
    found = _packed_str(payload, pos + 5)
    if found is None:
        return None
    pos = found[1]
    if payload[pos : pos + 2] != b"\xa1v" or pos + 2 >= len(payload) or payload[pos + 2] > 0x7F:
        return None
    pos += 3  # a positive fixint version
    if payload[pos : pos + 3] != b"\xa2id":
        return None
    found = _packed_str(payload, pos + 3)
    return found[0] if found is not None else None


def packed_keys(values: Iterable[str]) -> tuple[bytes, ...]:
    """Each value as msgpack packs it: the bytes to look for in a payload that holds it."""
    return tuple(msgpack.packb(v) for v in values)
