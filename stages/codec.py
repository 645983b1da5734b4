"""Partials and stats to bytes and back, for passing them between processes: msgpack, no pickle.

Allowed values: None, bool, int (64 bits), float, str, bytes, lists, string-keyed maps, and
numpy arrays of numeric, boolean or datetime dtype (one dimension), written as the msgpack
extension type `ARRAY` (dtype string and raw bytes). Anything else is refused, and so is any
other extension type on the way back, so a stage cannot hand an object the other side would
have to trust.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack
import numpy as np

from stages.errors import StageError

ARRAY: Final = 1  # msgpack extension type code: [dtype string, raw bytes]
_KINDS: Final = frozenset("biufM")  # bool, int, uint, float, datetime64
_INT_RANGE: Final = (-(2**63), 2**64 - 1)
MAX_BYTES: Final = 2**31 - 1
# what msgpack and numpy raise for values or bytes they cannot take
_FAILURES: Final = (
    ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException,
)  # fmt: skip


class CodecError(StageError, ValueError):
    """A partial or stats value that cannot be encoded, or bytes that do not decode."""


def pack(value: Any) -> bytes:
    try:
        return msgpack.packb(_encode(value), use_bin_type=True)
    except CodecError:
        raise
    except _FAILURES as exc:
        raise CodecError(f"stage partial does not encode: {_reason(exc)}") from exc


def unpack(data: bytes) -> Any:
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=_decode_ext,
            max_bin_len=MAX_BYTES,
            max_str_len=MAX_BYTES,
            max_array_len=MAX_BYTES,
            max_map_len=MAX_BYTES,
            max_ext_len=MAX_BYTES,
        )
        return _decode(raw)
    except CodecError:
        raise
    except _FAILURES as exc:
        raise CodecError(f"stage partial does not decode: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _encode(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise CodecError(f"cannot encode integer {value}: more than 64 bits")
        return value
    if value is None or isinstance(value, bool | float | str | bytes):
        return value
    if isinstance(value, np.generic):
        plain = value.item()
        if isinstance(plain, np.generic) or not isinstance(plain, bool | int | float | str | bytes):
            raise CodecError(f"cannot encode a numpy {value.dtype} scalar")
        return _encode(plain)
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in _KINDS:
            raise CodecError(f"cannot encode a {value.ndim}-d array of dtype {value.dtype}")
        body = [value.dtype.str, np.ascontiguousarray(value).tobytes()]
        return msgpack.ExtType(ARRAY, msgpack.packb(body, use_bin_type=True))
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CodecError("map keys must be strings")
        return {k: _encode(v) for k, v in value.items()}
    raise CodecError(f"cannot encode a value of type {type(value).__name__}")


def _decode_ext(code: int, data: bytes) -> np.ndarray:
    if code != ARRAY:
        raise CodecError(f"refused msgpack extension type {code} (allowed: {ARRAY}, an array)")
    body = msgpack.unpackb(data, raw=False)
    if not (
        isinstance(body, list)
        and len(body) == 2
        and isinstance(body[0], str)
        and isinstance(body[1], bytes)
    ):
        raise CodecError("refused array: expected [dtype, bytes]")
    text, raw = body
    try:
        dtype = np.dtype(text)
    except TypeError as exc:
        raise CodecError(f"refused array of dtype {text!r}") from exc
    if dtype.kind not in _KINDS:
        raise CodecError(f"refused array of dtype {dtype} (allowed: bool, int, float, datetime)")
    if len(raw) % dtype.itemsize:
        raise CodecError(f"array of {dtype} has {len(raw)} bytes, not a whole number")
    return np.frombuffer(raw, dtype=dtype).copy()


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CodecError("refused a map with keys that are not strings")
        return {k: _decode(v) for k, v in value.items()}
    return value
