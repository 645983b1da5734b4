"""Length-prefixed msgpack frames over a pipe, between a worker and its runner process."""

from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO, Final

import msgpack

from actors.errors import ActorError

HEADER: Final = struct.Struct(">I")
MAX_FRAME: Final = 64 * 1024 * 1024


class FrameError(ActorError, ValueError):
    """A frame that is too long or does not decode."""


def pack_frame(value: Any) -> bytes:
    """One frame as bytes: the length, then the msgpack body."""
    data = msgpack.packb(value, use_bin_type=True)
    return HEADER.pack(len(data)) + data


def write_frame(stream: BinaryIO, value: Any) -> None:
    stream.write(pack_frame(value))
    stream.flush()


def read_frame(stream: BinaryIO) -> Any | None:
    """The next frame, or None at end of stream. ``stream`` may be unbuffered (then what is
    not read yet stays in the pipe, where `select` sees it)."""
    head = _read_exact(stream, HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes is over {MAX_FRAME}")
    data = _read_exact(stream, size)
    if len(data) < size:
        return None
    return _unpack(data)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, fewer only at end of stream (a pipe's read may return part of them)."""
    parts = []
    got = 0
    while got < size:
        more = stream.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise FrameError(f"frame does not decode: {exc}") from exc


class FrameReader:
    """Non-blocking reads from a file descriptor, yielding whole frames as they complete."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        os.set_blocking(fd, False)

    def read(self) -> tuple[list[Any], bool]:
        """Frames now complete, and whether the other end has closed."""
        closed = False
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                closed = True
                break
            self._buffer += chunk
        frames = []
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise FrameError(f"frame of {size} bytes is over {MAX_FRAME}")
            if len(self._buffer) < HEADER.size + size:
                break
            data = bytes(self._buffer[HEADER.size : HEADER.size + size])
            del self._buffer[: HEADER.size + size]
            frames.append(_unpack(data))
        return frames, closed
