"""The histories of the executions the dashboard's pages look at: each one read from the hub
once, then extended from the dashboard's own subscription, so a page that follows an execution
costs the hub nothing more however long the execution runs.

Bounded: the `KEPT` executions viewed last, in each every event but the progress reports past
its first `PROGRESS_KEPT` (see `History`), and `EVENTS_KEPT` events in all (the histories
viewed longest ago go first; the one viewed last stays). Callers hold the live fold's mutex.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Any, Final

from actors.dashboard import views

Fields = dict[str, Any]
KEPT: Final = 8  # executions whose history is kept: those viewed last
EVENTS_KEPT: Final = 100_000  # events kept in all histories together
PROGRESS_KEPT: Final = 1000  # progress reports an execution keeps before it drops superseded ones
TAIL: Final = 16  # the last events among which a new progress report replaces its task's last
PROGRESS: Final = "StageProgress"
# epochs and timeline versions, unique among all histories; 0 is "none": who asks with it gets
# the whole list, or the timeline
_versions = itertools.count(1)


class History:
    """One execution's events, ``(seq, fields)`` in seq order, from its request to the live head.

    Every event is kept, but of the progress reports only the first ``progress_kept``; after
    them, a new report replaces the previous one of its task attempt when that one is among
    the last ``tail`` events; and when progress reports still number four times
    ``progress_kept`` (many tasks reporting in turn), every report a later one of its task
    attempt supersedes is dropped, and ``epoch`` changes. So, within an epoch, only the last
    ``tail`` entries ever change: a reader that follows the list asks again from `frozen`.
    """

    def __init__(
        self, execution_id: str, *, progress_kept: int = PROGRESS_KEPT, tail: int = TAIL
    ) -> None:
        self.execution_id = execution_id
        self.progress_kept = progress_kept
        self.tail = tail
        self.records: list[tuple[int, Fields]] = []
        self.epoch = next(_versions)
        self.timeline_version = next(_versions)  # changes when an event the timeline draws comes
        self.loaded = threading.Event()  # set once its past is read from the hub (or failed)
        self.error = ""  # why reading its past failed
        self._progress = 0  # progress reports in ``records``
        self._thin_at = 4 * self.progress_kept
        self._timeline: tuple[int, Fields] | None = None
        self._tail_key: tuple[str, str, int, int] | None = None  # the last entry's, if known

    def add(self, seq: int, fields: Fields) -> None:
        """Append one event of this execution (ignored when its seq is not past the last)."""
        if self.records and seq <= self.records[-1][0]:
            return
        kind = fields.get("type")
        key = None
        if kind == PROGRESS:
            if self._progress < self.progress_kept:
                self._progress += 1
            else:
                key = views.task_key(fields)
                if not self._replace(key):
                    self._progress += 1
        elif kind in views.TASK_TYPES or kind in views.MARK_TYPES:
            self.timeline_version = next(_versions)
        self.records.append((seq, fields))
        self._tail_key = key
        if self._progress >= self._thin_at:
            self._thin()

    def adopt(self, past: list[tuple[int, Fields]]) -> None:
        """Put the events read from the hub before those the live fold added meanwhile."""
        later = self.records
        self.records, self._progress, self._timeline, self._tail_key = [], 0, None, None
        self.timeline_version = next(_versions)
        self._thin_at = 4 * self.progress_kept
        for seq, fields in itertools.chain(past, later):
            self.add(seq, fields)

    def frozen(self) -> int:
        """How many entries, from the first, can no longer change within this epoch."""
        return max(0, len(self.records) - self.tail)

    def listing(self, start: int, epoch: int) -> tuple[int, list[Fields]]:
        """The events list from entry ``start`` on, for a reader that has the entries before it
        from ``epoch``; from the first entry when the epoch is another."""
        if epoch != self.epoch or start > len(self.records):
            start = 0
        return start, views.events_list(self.records[start:])

    def timeline(self) -> Fields:
        """`views.timeline` of the events, computed again only when an event it draws came."""
        if self._timeline is None or self._timeline[0] != self.timeline_version:
            self._timeline = (self.timeline_version, views.timeline(self.records))
        return self._timeline[1]

    def _replace(self, key: tuple[str, str, int, int]) -> bool:
        last = len(self.records) - 1
        if self._tail_key is not None:  # the usual case: a task reporting again and again
            if self._tail_key == key:
                del self.records[last]
                return True
            last -= 1
        for index in range(last, max(-1, len(self.records) - self.tail - 1), -1):
            held = self.records[index][1]
            if held.get("type") == PROGRESS and views.task_key(held) == key:
                del self.records[index]
                return True
        return False

    def _thin(self) -> None:
        last: dict[tuple[str, str, int, int], int] = {}
        for index, (_, fields) in enumerate(self.records):
            if fields.get("type") == PROGRESS:
                last[views.task_key(fields)] = index
        kept = set(last.values())
        self.records = [
            record
            for index, record in enumerate(self.records)
            if index in kept or record[1].get("type") != PROGRESS
        ]
        self._progress = len(kept)
        self._thin_at = max(4 * self.progress_kept, 2 * self._progress)
        self.epoch = next(_versions)


class Histories:
    """The histories of the `KEPT` executions viewed last, which the live fold extends."""

    def __init__(self, kept: int = KEPT, events_kept: int = EVENTS_KEPT) -> None:
        self.kept = kept
        self.events_kept = events_kept
        self._entries: OrderedDict[str, History] = OrderedDict()
        self._added = 0  # events added since the sizes were last looked at

    def get(self, execution_id: str) -> History | None:
        """The execution's history if it is kept (it counts as viewed now)."""
        entry = self._entries.get(execution_id)
        if entry is not None:
            self._entries.move_to_end(execution_id)
        return entry

    def open(self, execution_id: str) -> History:
        """A new, empty history for the execution, kept from now on in place of the one
        viewed longest ago when `kept` are kept already."""
        entry = self._entries[execution_id] = History(execution_id)
        while len(self._entries) > self.kept:
            self._entries.popitem(last=False)
        return entry

    def drop(self, entry: History) -> None:
        if self._entries.get(entry.execution_id) is entry:
            del self._entries[entry.execution_id]

    def add(self, seq: int, fields: Fields) -> None:
        """An event the live fold folded: to its execution's history, if one is kept."""
        if self._entries:
            eid = fields.get("execution_id")
            entry = self._entries.get(eid) if type(eid) is str else None
            if entry is not None:
                entry.add(seq, fields)
                self._added += 1
                if self._added >= self.events_kept // 100:
                    self.trim()

    def trim(self) -> None:
        """Let the histories viewed longest ago go while all hold more than `events_kept`."""
        self._added = 0
        total = sum(len(entry.records) for entry in self._entries.values())
        while total > self.events_kept and len(self._entries) > 1:
            _, entry = self._entries.popitem(last=False)
            total -= len(entry.records)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
