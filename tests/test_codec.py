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


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        codec.msgpack.packb({"__ndarray__": "|O", "data": b""}),
        codec.msgpack.packb({"__ndarray__": "not a dtype", "data": b""}),
        codec.msgpack.packb({"__ndarray__": "<f8", "data": b"\x00" * 3}),
    ],
)
def test_refuses_bad_bytes(data):
    with pytest.raises(codec.CodecError):
        codec.unpack(data)
