"""Bounded decoding: garbage, extension types, odd keys and deep nesting are refused."""

from __future__ import annotations

import msgpack
import pytest

from bus.errors import MalformedEventError
from bus.protocol import MAX_MESSAGE_BYTES
from bus.wire import (
    check_plain,
    marker_type,
    pack_marker,
    pack_marker_body,
    parse_marker,
    type_marker_topic,
    unpack,
    unpack_map,
)


def test_extension_types_are_refused():
    raw = msgpack.packb({"a": msgpack.ExtType(5, b"xx")})
    with pytest.raises(MalformedEventError, match="extension type 5"):
        unpack(raw)


def test_non_string_keys_are_refused():
    with pytest.raises(MalformedEventError):
        unpack(msgpack.packb({1: 2}))


def test_oversized_message_is_refused():
    with pytest.raises(MalformedEventError, match="over"):
        unpack(b"\x00" * (MAX_MESSAGE_BYTES + 1))


def test_deep_nesting_is_refused():
    raw = b"\x91" * 5000 + b"\x00"
    with pytest.raises(MalformedEventError):
        unpack(raw)


def test_non_map_event_is_refused():
    with pytest.raises(MalformedEventError, match="must be a msgpack map, got list"):
        unpack_map(msgpack.packb([1, 2]))


def test_truncated_bytes_are_refused():
    with pytest.raises(MalformedEventError):
        unpack(msgpack.packb({"a": "b" * 40})[:-3])


def test_marker_round_trip():
    topic, seq, payload = pack_marker(4, 9, {"StageCompleted": 5})
    assert topic == b"\x00"
    assert int.from_bytes(seq, "big") == 9
    assert parse_marker(payload) == (4, 9, {"StageCompleted": 5}, None)


def test_check_plain_bounds_depth():
    deep: list = []
    cur = deep
    for _ in range(40):
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    assert not check_plain(deep)
    assert check_plain({"a": [1, 2.0, "x", None, True, {"b": b"y"}]})


def test_marker_chains_round_trip_and_bad_ones_are_refused():
    body = pack_marker_body(4, 9, {"StageCompleted": 5}, {"StageCompleted": 2, "ScheduleFired": 0})
    assert parse_marker(body) == (
        4,
        9,
        {"StageCompleted": 5},
        {"StageCompleted": 2, "ScheduleFired": 0},
    )
    for bad in ({"": [1]}, {"": {"StageCompleted": "2"}}, {"StageCompleted": "5"}):
        with pytest.raises(MalformedEventError):
            parse_marker(msgpack.packb([4, 9, bad]))


def test_type_marker_topics_name_their_type_and_no_other():
    topic = type_marker_topic("StageCompleted")
    assert marker_type(topic) == "StageCompleted"
    assert not topic.startswith(type_marker_topic("Stage"))  # a type is no prefix of another
    assert marker_type(b"\x00i") is None
    assert marker_type(b"StageCompleted") is None
