"""Partials and stats to bytes and back, for passing them between processes: msgpack, no pickle.

Allowed values: None, bool, int, float, str, bytes, lists, string-keyed maps, and numpy arrays
of numeric, boolean or datetime dtype (one dimension). Anything else is refused, so a stage
cannot hand an object the other side would have to trust.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack
import numpy as np

from stages.errors import StageError

_ARRAY: Final = "__ndarray__"
_KINDS: Final = frozenset("biufM")  # bool, int, uint, float, datetime64
MAX_BYTES: Final = 2**31 - 1


class CodecError(StageError, ValueError):
    """A partial or stats value that cannot be encoded, or bytes that do not decode."""


def pack(value: Any) -> bytes:
    return msgpack.packb(_encode(value), use_bin_type=True)


def unpack(data: bytes) -> Any:
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_BYTES,
            max_str_len=MAX_BYTES,
            max_array_len=MAX_BYTES,
            max_map_len=MAX_BYTES,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CodecError(f"stage partial does not decode: {exc}") from exc
    return _decode(raw)


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in _KINDS:
            raise CodecError(f"cannot encode a {value.ndim}-d array of dtype {value.dtype}")
        return {_ARRAY: value.dtype.str, "data": np.ascontiguousarray(value).tobytes()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CodecError("map keys must be strings")
        return {k: _encode(v) for k, v in value.items()}
    raise CodecError(f"cannot encode a value of type {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if _ARRAY in value:
            try:
                dtype = np.dtype(str(value[_ARRAY]))
            except TypeError as exc:
                raise CodecError(f"refused array of dtype {value[_ARRAY]!r}") from exc
            data = value.get("data")
            if dtype.kind not in _KINDS or not isinstance(data, bytes):
                raise CodecError(f"refused array of dtype {dtype}")
            if len(data) % dtype.itemsize:
                raise CodecError(f"array of {dtype} has {len(data)} bytes, not a whole number")
            return np.frombuffer(data, dtype=dtype).copy()
        return {k: _decode(v) for k, v in value.items()}
    return value
