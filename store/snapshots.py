"""Snapshots: a fold's state at a seq, written atomically, so a start folds only the tail.

Snapshots are derived data (DESIGN section 4): deleting them all loses nothing, and a snapshot
that is damaged, written by another version of the fold, or ahead of the log is ignored with
one log line, and the state is rebuilt from the log.

A file is ``<dir>/<name>/<seq:020d>.snap``: ``MAGIC``, a u32 header length, a msgpack header
(name, seq, fold version, body length, crc32 of the body, and the id and seq of the last event
folded, which ties the snapshot to this log and not to another one that reused the data dir),
then the msgpack body. It is written to a temp file, fsynced, renamed and its directory
fsynced; the newest `keep` of each name stay.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from store.fsutil import FILE_MODE, fsync_dir, make_private_dir
from store.statecodec import paused_gc

log = logging.getLogger("porch.snapshots")

# the actors whose snapshots decide how far the log may be archived (queries' do not)
ACTORS: Final = ("orchestrator", "scheduler", "monitor")
MAGIC: Final = b"PORCHSNP"
FORMAT: Final = 1
SUFFIX: Final = ".snap"
_HEAD: Final = struct.Struct(">8sI")
MAX_HEADER: Final = 1 << 16


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One snapshot read back: what it covers and the fold's state as plain data."""

    name: str
    seq: int  # every event up to this seq is folded in
    version: str
    last_id: str  # the id of the last event folded ("" if none was)
    last_seq: int  # its seq
    created_ts: float
    body: Any
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot file as listed: name, seq, size, and whether its header reads."""

    name: str
    seq: int
    path: Path
    size: int


class SnapshotStore:
    """The snapshots of one data dir, by fold name (``orchestrator``, ``scheduler``, ...)."""

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"snapshots: keep must be at least 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def _dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"snapshots: bad name {name!r}")
        return self.directory / name

    def save(
        self,
        name: str,
        seq: int,
        version: str,
        body: Any,
        *,
        last_id: str = "",
        last_seq: int = 0,
        now: float | None = None,
    ) -> Path:
        """Write a snapshot durably; then drop all but the newest `keep` of ``name``."""
        folder = self._dir(name)
        make_private_dir(folder)
        data = msgpack.packb(body, use_bin_type=True)
        header = msgpack.packb(
            {
                "format": FORMAT,
                "name": name,
                "seq": seq,
                "version": version,
                "size": len(data),
                "crc32": zlib.crc32(data),
                "last_id": last_id,
                "last_seq": last_seq,
                "created_ts": time.time() if now is None else now,
            },
            use_bin_type=True,
        )
        path = folder / f"{seq:020d}{SUFFIX}"
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(_HEAD.pack(MAGIC, len(header)))
                out.write(header)
                out.write(data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.close(fd)
        tmp.replace(path)
        fsync_dir(folder)
        self._prune(name)
        return path

    def _prune(self, name: str) -> None:
        for info in self.list(name)[: -self.keep]:
            with contextlib.suppress(OSError):
                info.path.unlink()
        for stale in self._dir(name).glob(".*.tmp"):  # a write cut short by a crash
            with contextlib.suppress(OSError):
                stale.unlink()

    def list(self, name: str) -> list[SnapshotInfo]:
        """The snapshot files of ``name``, oldest first."""
        folder = self._dir(name)
        try:
            entries = sorted(p.name for p in folder.iterdir())
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            stem = entry[: -len(SUFFIX)]
            if entry.endswith(SUFFIX) and stem.isdigit():
                path = folder / entry
                with contextlib.suppress(OSError):
                    out.append(SnapshotInfo(name, int(stem), path, path.stat().st_size))
        return out

    def names(self) -> list[str]:
        try:
            return sorted(p.name for p in self.directory.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def newest(
        self,
        name: str,
        version: str,
        *,
        head: int | None = None,
        same_log: Callable[[int, str], bool | None] | None = None,
    ) -> Snapshot | None:
        """The newest snapshot of ``name`` that reads whole, has this fold ``version``, is not
        ahead of the log's ``head`` and, by ``same_log(last_seq, last_id)``, belongs to this
        log (None from it: cannot tell, taken as yes). Every one passed over is logged once."""
        for info in reversed(self.list(name)):
            try:
                snap = read(info.path)
            except (OSError, ValueError) as exc:
                log.warning("snapshot %s ignored: %s; rebuilding from the log", info.path, exc)
                continue
            if snap.name != name:
                log.warning("snapshot %s ignored: it is of %r", info.path, snap.name)
                continue
            if snap.version != version:
                log.warning(
                    "snapshot %s ignored: written by fold version %s, this is %s; rebuilding"
                    " from the log",
                    info.path,
                    snap.version,
                    version,
                )
                continue
            if head is not None and snap.seq > head:
                log.warning(
                    "snapshot %s ignored: it covers seq %d, the log ends at %d",
                    info.path,
                    snap.seq,
                    head,
                )
                continue
            if (
                snap.last_id
                and same_log is not None
                and same_log(snap.last_seq, snap.last_id) is False
            ):
                log.warning(
                    "snapshot %s ignored: the log holds another event at seq %d (a new log?)",
                    info.path,
                    snap.last_seq,
                )
                continue
            return snap
        return None

    def remove_all(self, name: str | None = None) -> int:
        """Delete the snapshots of ``name`` (of every name when None); how many went."""
        count = 0
        for each in [name] if name else self.names():
            for info in self.list(each):
                with contextlib.suppress(OSError):
                    info.path.unlink()
                    count += 1
        return count


def snapshot_dir(data_dir: Path) -> Path:
    return data_dir / "snapshots"


def passed_seq(directory: Path) -> int | None:
    """The lowest seq that the newest snapshot of every actor keeping snapshots covers (None:
    no actor keeps any). Events up to it are needed by no actor's next start."""
    store = SnapshotStore(directory)
    newest = [infos[-1].seq for name in ACTORS if (infos := store.list(name))]
    return min(newest) if newest else None


def read(path: Path) -> Snapshot:
    """Read and check one snapshot file; ValueError names what is wrong with it."""
    raw = path.read_bytes()
    if len(raw) < _HEAD.size:
        raise ValueError("cut short")
    magic, header_len = _HEAD.unpack_from(raw)
    if magic != MAGIC:
        raise ValueError("not a porch snapshot")
    if header_len > MAX_HEADER or _HEAD.size + header_len > len(raw):
        raise ValueError(f"bad header length {header_len}")
    try:
        header = msgpack.unpackb(raw[_HEAD.size : _HEAD.size + header_len], strict_map_key=True)
    except Exception as exc:
        raise ValueError(f"unreadable header: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("unknown snapshot format")
    data = memoryview(raw)[_HEAD.size + header_len :]
    if len(data) != header.get("size"):
        raise ValueError(f"body is {len(data)} bytes, the header says {header.get('size')}")
    if zlib.crc32(data) != header.get("crc32"):
        raise ValueError("checksum mismatch")
    try:
        with paused_gc():
            body = msgpack.unpackb(data, strict_map_key=False, use_list=True)
    except Exception as exc:
        raise ValueError(f"unreadable body: {exc}") from None
    return Snapshot(
        name=str(header["name"]),
        seq=int(header["seq"]),
        version=str(header["version"]),
        last_id=str(header.get("last_id", "")),
        last_seq=int(header.get("last_seq", 0)),
        created_ts=float(header.get("created_ts", 0.0)),
        body=body,
        path=path,
        size=len(raw),
    )
