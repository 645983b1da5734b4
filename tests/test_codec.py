"""stages.codec: partials and stats to bytes and back, refusing what is not plain data."""

from __future__ import annotations

import numpy as np
import pytest

from stages import codec


def test_round_trip_of_plain_values_and_arrays():
    value = {"n": 3, "f": 1.5, "s": "é", "b": b"\x00", "none": None, "list": [1, "a"],
             "u": np.arange(5, dtype=np.uint64), "t": np.array([1, 2], dtype="datetime64[us]"),
             "m": np.array([True, False]), "scalar": np.float32(2.5)}  # fmt: skip
    back = codec.unpack(codec.pack(value))
    assert back["u"].dtype == np.uint64
    assert back["u"].tolist() == [0, 1, 2, 3, 4]
    assert back["t"].dtype == np.dtype("datetime64[us]")
    assert back["m"].tolist() == [True, False]
    assert back["scalar"] == 2.5
    assert back["list"] == [1, "a"]
    assert back["s"] == "é"


@pytest.mark.parametrize(
    "value",
    [np.array(["a"], dtype=object), np.zeros((2, 2)), object(), {1: "x"}, {"set": {1}}],
)
def test_refuses_what_is_not_plain(value):
    with pytest.raises(codec.CodecError):
        codec.pack(value)


def array_ext(dtype: str, data: bytes, code: int = codec.ARRAY) -> bytes:
    body = codec.msgpack.packb([dtype, data], use_bin_type=True)
    return codec.msgpack.packb(codec.msgpack.ExtType(code, body))


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        array_ext("|O", b""),
        array_ext("not a dtype", b""),
        array_ext("<f8", b"\x00" * 3),
        array_ext("<f8", b"\x00" * 8, code=2),
        codec.msgpack.packb(codec.msgpack.ExtType(codec.ARRAY, b"\x93\x01\x02\x03")),
        codec.msgpack.packb({b"key": 1}, use_bin_type=True),
        codec.msgpack.packb([{b"key": 1}], use_bin_type=True),
        b"\x91" * 5000,
    ],
    ids=["reserved", "object", "bad-dtype", "partial-item", "other-ext", "bad-body",
         "bytes-key", "nested-bytes-key", "deep"],
)  # fmt: skip
def test_refuses_bad_bytes(data):
    with pytest.raises(codec.CodecError):
        codec.unpack(data)


def test_a_map_with_the_old_array_marker_is_plain_data():
    # given user data that looks like the old array encoding
    value = {"__ndarray__": "<f8", "data": b"\x00" * 8, "values": ["__ndarray__"]}
    # then it comes back as it went
    assert codec.unpack(codec.pack(value)) == value


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, np.datetime64("2024-01-01"), np.timedelta64(5, "s"),
     np.longdouble(1.5), np.complex128(1j), [[2**70]]],
    ids=["big", "small", "datetime64", "timedelta64", "longdouble", "complex", "nested-big"],
)  # fmt: skip
def test_values_msgpack_or_numpy_cannot_take_are_codec_errors(value):
    with pytest.raises(codec.CodecError):
        codec.pack(value)


def test_64_bit_integers_round_trip():
    value = [2**64 - 1, -(2**63), np.uint64(2**64 - 1), np.int64(-(2**63))]
    assert codec.unpack(codec.pack(value)) == [2**64 - 1, -(2**63), 2**64 - 1, -(2**63)]
