"""A lock file holding the pid of the process that holds it: one log writer, one actor of a kind.

The lock is an exclusive ``flock`` on the file, so it goes with the process however it ends; the
pid written in the file only names the holder for a message. A probe (`holder`, `held`) takes
a shared lock for an instant and never writes.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from store.fsutil import DISK_FULL_ERRNOS, FILE_MODE


def hold(path: Path, *, wait_s: float = 0.0) -> tuple[int | None, str]:
    """Take the lock at ``path``: (its fd, "") while this process holds it, or (None, the
    holder's pid or "unknown") when another one does. Keep the fd open for as long as it holds.

    ``wait_s`` retries for that long before giving up, for a lock that a probe may hold for an
    instant.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            return None, holder
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
    except OSError as exc:  # the pid only names the holder: a full disk may go without it
        if exc.errno not in DISK_FULL_ERRNOS:
            os.close(fd)
            raise
    return fd, ""


def holder(path: Path) -> int | None:
    """The pid of the process holding the lock at ``path`` (-1 when the file names none), or
    None when no process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def held(path: Path) -> bool:
    """True when some process holds the lock at ``path``."""
    return holder(path) is not None
