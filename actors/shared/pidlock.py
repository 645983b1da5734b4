"""A lock file holding the pid of the process that holds it: one actor of a kind per data dir."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def hold(path: Path) -> tuple[int | None, str]:
    """Take the lock at ``path`` without waiting: (its fd, "") while this process holds it, or
    (None, the holder's pid) when another one does. Keep the fd open for as long as it holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        return None, holder
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd, ""


def held(path: Path) -> bool:
    """True when some process holds the lock at ``path``."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
