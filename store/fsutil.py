"""Files made durable and private: directory syncs, private directories, disk space in words.

Each sync may be told to a `SyncObserver`, the seam a crash test uses to learn what reached the
disk (`store.powercut`); outside crash tests there is none and a sync costs one check of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Final, Protocol

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class SyncObserver(Protocol):
    """Hears what each sync made durable: the length of a file, the names of a directory."""

    def listing(self, directory: Path) -> list[str]:
        """The names in ``directory``, taken just before its sync."""
        ...

    def synced_dir(self, directory: Path, names: list[str]) -> None: ...

    def synced_size(self, path: Path, size: int) -> None: ...


_observer: SyncObserver | None = None


def observe_syncs(observer: SyncObserver | None) -> None:
    """Tell ``observer`` of every sync this process makes from now on (an entry point's choice:
    `porch` and the worker's runner pass the crash test's journal, `powercut.from_environ`)."""
    global _observer
    _observer = observer


def sync_observer() -> SyncObserver | None:
    """The observer of this process's syncs, as its entry point chose (`observe_syncs`)."""
    return _observer


def fsync_dir(directory: Path, *, observer: SyncObserver | None = None) -> None:
    """Sync ``directory`` (its entries: a file created or renamed in it survives a power cut);
    ``observer`` hears of it, the process's (`sync_observer`) when not given."""
    if observer is None:
        observer = sync_observer()
    # listed before the sync: a rename after it may not be in it
    listed = observer.listing(directory) if observer is not None else []
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if observer is not None:
        observer.synced_dir(directory, listed)


def make_private_dir(directory: Path, *, observer: SyncObserver | None = None) -> None:
    """Create ``directory`` (and parents) readable by the owner only, durably: the parent of
    each directory it creates is synced, or a power cut could lose the new entry."""
    if directory.is_dir():
        with contextlib.suppress(PermissionError):
            directory.chmod(DIR_MODE)
        return
    missing = []
    at = directory
    while not at.exists() and at.parent != at:
        missing.append(at)
        at = at.parent
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        directory.chmod(DIR_MODE)
    for made in reversed(missing):
        try:
            fsync_dir(made.parent, observer=observer)
        except PermissionError:  # a parent we may not open (a shared /srv): nothing to sync
            continue


def disk_free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``directory``; -1 when
    it cannot be asked."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


def format_bytes(count: int) -> str:
    """``count`` bytes for a person: "512 bytes", "40.9 KB", "3.2 MB" (powers of 1000)."""
    size, unit = float(count), "bytes"
    for bigger in ("KB", "MB", "GB", "TB"):
        if size < 1000:
            break
        size, unit = size / 1000, bigger
    return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"


def disk_full_reason(directory: Path) -> str:
    """The one line a refused append carries: what is full, how much is left, what to do."""
    free = disk_free_bytes(directory)
    left = format_bytes(free) if free >= 0 else "no space"
    return (
        f"disk full: {left} free on {directory}; free space on that filesystem (old checkpoints"
        " and artifacts, other files) and appends resume by themselves"
    )
