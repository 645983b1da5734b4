"""The checks of `scripts/load`, from the log alone: completeness, concurrency, priority order."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bus.wire import unpack_map
from store.reader import LogReader
from store.segment import list_segments

TERMINAL: Final = (
    "ExecutionCompleted",
    "ExecutionFailed",
    "ExecutionCancelled",
    "ExecutionTimedOut",
)


@dataclass
class Report:
    executions: int = 0
    completed: int = 0
    events: int = 0
    log_bytes: int = 0
    peak_admitted: int = 0
    peak_started: int = 0
    raced: int = 0  # admissions while a higher priority run was queued but not yet folded
    seconds: float = 0.0
    queue_s: float = 0.0
    violations: list[str] = field(default_factory=list)


def read_log(data_dir: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for seq, payload in LogReader(data_dir / "log").read(1):
        yield seq, unpack_map(payload)


def check(data_dir: Path, wanted: dict[str, int], max_concurrent: int) -> Report:
    """Completeness, the concurrency bound and priority order, from the log alone."""
    report = Report(executions=len(wanted))
    queued: dict[str, tuple[int, int]] = {}  # eid -> (seq, priority)
    admissions: list[tuple[int, str]] = []
    ended: dict[str, int] = {}
    status: dict[str, str] = {}
    admitted_now: set[str] = set()
    started_now: set[str] = set()
    first_fire = last_queued = last_end = 0.0
    for seq, fields in read_log(data_dir):
        report.events = seq
        eid, kind = fields.get("execution_id"), fields["type"]
        if eid not in wanted:
            continue
        if kind == "ScheduleFired":
            first_fire = first_fire or fields["ts"]
        elif kind == "ExecutionQueued":
            if eid in queued:
                report.violations.append(f"{eid} queued twice (seq {queued[eid][0]} and {seq})")
            queued[eid] = (seq, int(fields["priority"]))
            last_queued = fields["ts"]
        elif kind == "ExecutionRequested":
            if eid in admitted_now or eid in ended:
                report.violations.append(f"{eid} admitted twice (again at seq {seq})")
            admissions.append((seq, eid))
            admitted_now.add(eid)
            report.peak_admitted = max(report.peak_admitted, len(admitted_now))
        elif kind == "ExecutionStarted":
            started_now.add(eid)
            report.peak_started = max(report.peak_started, len(started_now))
        elif kind in TERMINAL and eid not in ended:
            ended[eid] = seq
            status[eid] = kind
            admitted_now.discard(eid)
            started_now.discard(eid)
            last_end = fields["ts"]
    report.log_bytes = sum(p.stat().st_size for p in list_segments(data_dir / "log"))
    report.completed = sum(1 for k in status.values() if k == "ExecutionCompleted")
    report.seconds = max(0.0, last_end - first_fire)
    report.queue_s = max(0.0, last_queued - first_fire)
    missing = [e for e in wanted if e not in ended]
    if missing:
        report.violations.append(f"{len(missing)} of {len(wanted)} never ended, e.g. {missing[0]}")
    failed = [e for e, k in status.items() if k != "ExecutionCompleted"]
    if failed:
        report.violations.append(
            f"{len(failed)} ended without completing, e.g. {failed[0]} ({status[failed[0]]})"
        )
    if report.peak_admitted > max_concurrent:
        report.violations.append(
            f"{report.peak_admitted} executions admitted and not ended at once, over {max_concurrent}"
        )
    for eid, (_, priority) in queued.items():
        if priority != wanted[eid]:
            report.violations.append(f"{eid} queued with priority {priority}, not {wanted[eid]}")
    bad, report.raced = check_priority(queued, admissions, ended, max_concurrent)
    report.violations += bad
    return report


def check_priority(
    queued: dict[str, tuple[int, int]],
    admissions: list[tuple[int, str]],
    ended: dict[str, int],
    max_concurrent: int,
) -> tuple[list[str], int]:
    """Priority order, judged by what the scheduler must have known when it admitted each run.

    The scheduler folds the log in seq order and admits from the queue it has folded. Before it
    admits run ``e`` (its ``ExecutionRequested`` at seq ``s``) it must have folded:
    - ``e``'s own ``ExecutionQueued`` (seq ``q_e``): it admits only what it knows is queued;
    - enough ends to have a free slot: of the ``i`` runs admitted before ``e``, at least
      ``i - max_concurrent + 1`` must have ended in what it folded, so it had folded up to the
      ``(i - max_concurrent + 1)``-th smallest end seq among them.
    ``known`` is the larger of the two: a lower bound of the scheduler's fold at the decision.
    A violation is a run ``w`` queued at a seq below ``known`` and still waiting at ``s`` (not
    admitted before ``s``, not ended) with a strictly higher priority than ``e``, or the same
    priority and queued before ``e`` (first in, first out within a priority).

    Admissions that skipped a higher priority queued in the log before ``s`` but after
    ``known`` (its queueing was still on its way back to the scheduler) are counted as
    ``raced``, not as violations: no scheduler that folds a log can know of them."""
    violations: list[str] = []
    raced = 0
    admitted_at = {eid: seq for seq, eid in admissions}
    ends_before: list[int] = []  # end seqs of the runs admitted so far, sorted
    order = sorted(queued.items(), key=lambda item: item[1][0])  # by queued seq
    queued_seqs = [q for _, (q, _) in order]
    for index, (seq, eid) in enumerate(admissions):
        if eid not in queued:
            violations.append(f"{eid} admitted at seq {seq} without being queued")
            continue
        q_e, p_e = queued[eid]
        known = q_e
        need = index - max_concurrent + 1
        if need > 0:
            done = [e for e in ends_before if e < seq]
            if len(done) >= need:
                known = max(known, done[need - 1])
        skipped = None
        racing = False
        for w, (q_w, p_w) in order[: bisect.bisect_left(queued_seqs, seq)]:
            if w == eid or admitted_at.get(w, 1 << 62) < seq or ended.get(w, 1 << 62) < seq:
                continue
            if p_w > p_e or (p_w == p_e and q_w < q_e):
                if q_w < known:
                    skipped = (w, q_w, p_w)
                    break
                racing = racing or p_w > p_e
        if skipped is not None:
            w, q_w, p_w = skipped
            violations.append(
                f"seq {seq}: admitted {eid} (priority {p_e}, queued at seq {q_e}) while {w} "
                f"(priority {p_w}, queued at seq {q_w}) waited, known to the scheduler by seq {known}"
            )
        elif racing:
            raced += 1
        end = ended.get(eid)
        if end is not None:
            bisect.insort(ends_before, end)
    return violations, raced
