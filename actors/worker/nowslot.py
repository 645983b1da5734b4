"""The task a runner runs now, in memory its worker shares (a memfd).

The runner writes a task's bytes there as it begins it and clears them as it ends it: no frame,
no system call, no wake-up of the worker per task. The worker reads it only when it must know:
when its runner died (the task is failed, and counted as an attempt, even if it never told the
worker of it) or when a cancel may have to kill it.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Final

from bus.protocol import SOCKET_MAX_BYTES

HEAD: Final = struct.Struct("<Q")  # the length of the bytes that follow; 0: nothing runs
SLOT_BYTES: Final = HEAD.size + SOCKET_MAX_BYTES  # a task is at most a message (pages are
# taken as they are touched)


class NowSlot:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, SLOT_BYTES)

    @classmethod
    def create(cls) -> NowSlot:
        fd = os.memfd_create("porch-runner-now", os.MFD_CLOEXEC)
        os.ftruncate(fd, SLOT_BYTES)
        return cls(fd)

    def set(self, payload: bytes) -> None:
        """``payload`` runs now (the length last: a reader never sees half of it)."""
        size = len(payload)
        if size > SLOT_BYTES - HEAD.size:
            HEAD.pack_into(self._map, 0, 0)
            return
        self._map[HEAD.size : HEAD.size + size] = payload
        HEAD.pack_into(self._map, 0, size)

    def clear(self) -> None:
        HEAD.pack_into(self._map, 0, 0)

    def get(self) -> bytes | None:
        (size,) = HEAD.unpack_from(self._map, 0)
        if not 0 < size <= SLOT_BYTES - HEAD.size:
            return None
        return bytes(self._map[HEAD.size : HEAD.size + size])

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)
