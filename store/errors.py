"""Errors of the store layer: one root, narrow subclasses that also subclass a builtin."""

from __future__ import annotations


class StoreError(Exception):
    """Root of every error raised by `store`."""


class CorruptRecordError(StoreError, ValueError):
    """A record in the log fails its length, CRC or sequence check."""

    def __init__(self, segment: str, offset: int, reason: str) -> None:
        super().__init__(f"corrupt log record in {segment} at offset {offset}: {reason}")
        self.segment = segment
        self.offset = offset
        self.reason = reason


class LogLockedError(StoreError, RuntimeError):
    """Another process already writes this log."""


class LogFsyncError(StoreError, OSError):
    """fsync failed: the data may not be on disk, so the writer must stop (fsyncgate)."""


class LogDiskFullError(StoreError, OSError):
    """The log's filesystem has no room (ENOSPC or EDQUOT): the batch was cut off whole and the
    log stays open, so an append may succeed again once space frees."""

    def __init__(self, message: str, *, code: int, free_bytes: int) -> None:
        super().__init__(message)
        self.errno = code
        self.free_bytes = free_bytes


class ArtifactError(StoreError, OSError):
    """An artifact that cannot be written, read or trusted."""


class ArtifactLostError(ArtifactError):
    """A frame or byte artifact a task reads is gone or damaged (missing, or its hash is not
    what its producer recorded): recomputing its producer gives it back. ``path`` is the file
    that failed, which may be a delta's base rather than the artifact named to the reader."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path
