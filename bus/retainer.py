"""The log's retention, run by the hub: sealed segments past every actor's snapshot and older
than the retention (or over its bytes) are archived to parquet on a thread of their own, and
leave the log once their archive reads back whole; or are deleted, if the user says so."""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
from pathlib import Path

from bus.endpoints import log_dir
from bus.hubconfig import HubConfig
from store import archive
from store.archive import Sealed
from store.errors import StoreError
from store.fsutil import fsync_dir
from store.segment import list_segments, segment_first_seq
from store.snapshots import passed_seq, snapshot_dir

log = logging.getLogger("porch.hub")


def _archive(segment: Path, target: Path, ship_to: str) -> archive.Span:
    """Archive ``segment``; with ``ship_to``, move the archive's files to that object store
    (one that could not go stays here, readable, and goes with the next)."""
    span = archive.archive_segment(segment, target)
    if ship_to:
        from store import archiveship

        try:
            archiveship.ship_all(target, ship_to)
        except (StoreError, OSError) as exc:
            log.error("%s; it stays in %s until the next shipment", exc, target)
    return span


class Retainer:
    """One archive job at a time; `retain` starts what is due, `archived` ends a job."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "porch-archive")
        self._archiving: tuple[Sealed, concurrent.futures.Future[archive.Span]] | None = None

    @property
    def busy(self) -> bool:
        """An archive job runs (or ended and `archived` has not taken it yet)."""
        return self._archiving is not None

    def finished(self) -> bool:
        """An archive job ended and waits for `archived`."""
        return self._archiving is not None and self._archiving[1].done()

    def retain(self, now: float) -> int:
        """Move (or delete) the sealed segments that retention says may go; how many were
        started. Archiving runs on a thread: the segment is removed by `archived` once its
        parquet file has been read back whole. A failure (a full disk) is logged and tried
        again at the next check, never fatal."""
        try:
            return self._retain(now)
        except OSError as exc:
            log.error("log retention: %s; trying again in %g s", exc, self.config.archive_check_s)
            return 0

    def _retain(self, now: float) -> int:
        policy = self.config.retention
        if policy.mode == "off" or self._archiving is not None:
            return 0
        directory = log_dir(self.config.data_dir)
        segments = list_segments(directory)
        sealed = []
        for path, after in itertools.pairwise(segments):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            sealed.append(Sealed(path, segment_first_seq(path), segment_first_seq(after) - 1,
                                 stat.st_size, stat.st_mtime))  # fmt: skip
        picked = archive.due(
            sealed,
            passed_seq=passed_seq(snapshot_dir(self.config.data_dir)),
            now=now,
            policy=policy,
        )
        if not picked:
            return 0
        target = archive.archive_dir(directory)
        archive.drop_partial(target)  # a write a crash cut short: no job runs now
        if policy.mode == "delete":
            for segment in picked:
                archive.mark_deleted(target, segment.first, segment.last, "log retention")
                self._drop_segment(segment)
                log.info("deleted events %d..%d (log retention)", segment.first, segment.last)
            return len(picked)
        segment = picked[0]
        job = self._pool.submit(_archive, segment.path, target, self.config.archive_to)
        self._archiving = (segment, job)
        return 1

    def archived(self) -> None:
        """The archive job ended: its segment leaves the log if it is whole (else it stays)."""
        assert self._archiving is not None
        segment, job = self._archiving
        self._archiving = None
        try:
            span = job.result()
        except Exception as exc:  # the segment stays; the next check tries again
            log.error("archiving %s failed, it stays in the log: %s", segment.path.name, exc)
            return
        self._drop_segment(segment)
        log.info("archived events %d..%d to %s", span.first, span.last, span.path)

    def _drop_segment(self, segment: Sealed) -> None:
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        fsync_dir(segment.path.parent)

    def close(self) -> None:
        """Wait for a running archive job (one not begun is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
