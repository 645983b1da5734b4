"""A lock file holding the pid of the process that holds it: one log writer, one actor of a kind.

The lock is an exclusive ``flock`` on the file, so it goes with the process however it ends; the
pid written in the file only names the holder for a message. A probe (`holder`, `held`) takes
a shared lock for an instant and never writes. `owner` is the pid to signal: the file's pid, if
the kernel agrees that it holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Final

from store.fsutil import DISK_FULL_ERRNOS, FILE_MODE

KERNEL_LOCKS: Final = Path("/proc/locks")  # Linux: every lock held, with its pid and inode


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


def owner(path: Path) -> int | None:
    """The pid of the process holding the lock at ``path``, to signal it: None when no process
    holds it, -1 when one does but its pid is not known for sure.

    The file's pid is trusted only while the lock is held and, where the kernel lists its locks
    (Linux), only if that pid holds a lock on this very file: a file that still names an earlier
    holder (the new one has locked it but not yet written its pid), or a holder in another pid
    namespace, must not make a caller signal an unrelated process.
    """
    pid = holder(path)
    if pid is None or pid <= 0:
        return pid
    try:
        text = KERNEL_LOCKS.read_text()
    except OSError:  # no list of the kernel's locks here: the file's word
        return pid
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:  # its holder removed it on the way out
        return None
    return pid if (pid, inode) in _kernel_flocks(text) else -1


def _kernel_flocks(text: str) -> set[tuple[int, int]]:
    """(pid, inode) of each flock in /proc/locks; a waiter's line (``->``) holds nothing."""
    held: set[tuple[int, int]] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":  # "1: FLOCK ADVISORY WRITE pid dev:inode"
            continue
        with contextlib.suppress(ValueError):
            held.add((int(fields[4]), int(fields[5].rsplit(":", 1)[1])))
    return held
