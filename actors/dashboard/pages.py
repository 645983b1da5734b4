"""The dashboard's JSON API (``GET /api/...``): each page's data from the live fold, or from an
execution's own events (read from the hub once, then kept up by the live fold: `histories`).
Every parameter is checked here, and a bad one is a clear 400, naming it and what is allowed."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import zmq

from actors.dashboard import panels, views
from actors.dashboard.histories import History
from actors.dashboard.live import Live
from actors.errors import UsageError
from bus.client import Client
from bus.endpoints import Endpoints
from store import tasklogs
from store.projections import executions as folds

ID_MAX: Final = 200
_ID = re.compile(r"^[\w.:@+=-]+$")
LOG_MAX_BYTES: Final = tasklogs.MAX_LOG_BYTES + 4096
AFTER_WAIT_S: Final = 5.0
LOAD_WAIT_S: Final = 30.0  # how long a request waits for another's reading of a history


@dataclass(frozen=True, slots=True)
class Text:
    """A plain-text reply (a task's log)."""

    text: str


class NotFoundError(UsageError):
    status = 404


class NotReadyError(UsageError):
    status = 503


def identifier(value: str, what: str) -> str:
    if not value or len(value) > ID_MAX or not _ID.match(value):
        raise UsageError(
            f"{what} id {value[:ID_MAX]!r} is not an id: 1..{ID_MAX} letters, digits and . _ - : @ + ="
        )
    return value


def whole(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise UsageError(f"{name} must be a whole number {low}..{high}, got {raw[:40]!r}")
    return int(raw)


class Pages:
    """What each ``/api/`` path answers."""

    def __init__(self, live: Live, endpoints: Endpoints, ctx: zmq.Context[Any]) -> None:
        self.live = live
        self.endpoints = endpoints
        self.ctx = ctx

    @contextmanager
    def client(self) -> Iterator[Client]:
        """A client of the hub for one request (a client is not shared between threads)."""
        with Client(self.endpoints, context=self.ctx, timeout_ms=5000, retry_ms=1000) as client:
            yield client

    def get(self, path: str, query: dict[str, str]) -> Any:
        after = whole(query, "after", 0, 0, 1 << 62)
        if after and not self.live.wait_for(after, AFTER_WAIT_S):
            raise NotReadyError(f"the dashboard has not folded seq {after} yet; ask again")
        parts = [urllib.parse.unquote(p) for p in path.split("/")]
        if parts == ["executions"]:
            return self.executions(query)
        if parts[0] == "executions" and len(parts) in (2, 3):
            eid = identifier(parts[1], "execution")
            what = parts[2] if len(parts) == 3 else ""
            if what == "":
                return self.execution(eid)
            if what == "page":
                return self.page(eid, query)
            if what in ("timeline", "events", "at", "log"):
                return self.history(eid, what, query)
        if parts == ["schedules"]:
            with self.client() as client:
                return panels.schedules(client, time.time())
        if parts == ["metrics"]:
            minutes = whole(query, "minutes", 60, 1, 366 * 24 * 60)
            with self.client() as client:
                return panels.monitoring(client, minutes)
        if parts == ["alerts"]:
            with self.client() as client:
                return panels.alert_page(client)
        raise NotFoundError(f"no API at /api/{path}")

    # --- executions ---------------------------------------------------------------------------

    def executions(self, query: dict[str, str]) -> dict[str, Any]:
        status = query.get("status", "")
        if status and status not in views.STATUSES:
            raise UsageError(f"status {status[:40]!r} is not one of {', '.join(views.STATUSES)}")
        text = query.get("q", "")[:ID_MAX]
        page = whole(query, "page", 1, 1, 1_000_000)
        per_page = whole(query, "per_page", 50, 1, views.PER_PAGE_MAX)
        self._ready()
        with self.live.mutex:
            return views.executions_page(
                self.live.state, status=status, text=text, page=page, per_page=per_page
            )

    def execution(self, eid: str) -> dict[str, Any]:
        self._ready()
        with self.live.mutex:
            ex = self.live.state.executions.get(eid)
            if ex is not None:
                return views.detail(ex)
        return self._folded(eid, self._history(eid))  # finished long ago: from its own events

    def page(self, eid: str, query: dict[str, str]) -> dict[str, Any]:
        """What an execution's page shows, in one reply: the execution; its events list from
        entry ``from`` (as ``/events``); and its timeline, unless it is still the one of version
        ``timeline`` (then null)."""
        seen = whole(query, "timeline", 0, 0, 1 << 62)
        entry = self._history(eid)
        with self.live.mutex:
            ex = self.live.state.executions.get(eid)
            shown = views.detail(ex) if ex is not None else None
            listed = self._listing(eid, entry, query)
            version = entry.timeline_version
            timeline = entry.timeline() if version != seen else None
        return {
            "execution": shown if shown is not None else self._folded(eid, entry),
            "events": listed, "timeline": timeline, "timeline_version": version,
        }  # fmt: skip

    def history(self, eid: str, what: str, query: dict[str, str]) -> Any:
        entry = self._history(eid)
        with self.live.mutex:
            if what == "events":
                return self._listing(eid, entry, query)
            if not entry.records:
                raise NotFoundError(f"no execution {eid!r} in the log")
            if what == "timeline":
                return entry.timeline()
            records = list(entry.records)  # folded below, outside the lock
        if what == "at":
            seq = whole(query, "seq", records[-1][0], 0, 1 << 62)
            shown = views.state_at(records, eid, seq)
            if shown is None:
                raise NotFoundError(f"execution {eid!r} did not exist yet at seq {seq}")
            return {"seq": seq, "execution": shown}
        return self._log(eid, records, query)

    def _listing(self, eid: str, entry: History, query: dict[str, str]) -> dict[str, Any]:
        """The events list from entry ``from`` on for a reader that has the ones before it
        from ``epoch`` (the whole list without them); ``frozen`` is where to ask from next."""
        if not entry.records:
            raise NotFoundError(f"no execution {eid!r} in the log")
        start, events = entry.listing(
            whole(query, "from", 0, 0, 1 << 62), whole(query, "epoch", 0, 0, 1 << 62)
        )
        return {
            "execution_id": eid, "events": events, "start": start, "count": len(entry.records),
            "frozen": entry.frozen(), "epoch": entry.epoch,
        }  # fmt: skip

    def _folded(self, eid: str, entry: History) -> dict[str, Any]:
        with self.live.mutex:
            records = list(entry.records)
        shown = views.state_at(records, eid, records[-1][0]) if records else None
        if shown is None:
            raise NotFoundError(f"no execution {eid!r} in the log")
        return shown

    def _history(self, eid: str) -> History:
        """The execution's kept history: its events from its request on, read from the hub
        by the first request that wants them (the fold knows where it starts), then extended
        by the live fold."""
        self._ready()
        with self.live.mutex:
            entry = self.live.histories.get(eid)
            loading, first, upto = entry is None, 1, 0
            if entry is None:
                entry = self.live.histories.open(eid)
                ex = self.live.state.executions.get(eid)
                first = ex.requested_seq if ex is not None and ex.requested_seq else 1
                upto = self.live.seq  # what comes after, the live fold adds
        if loading:
            self._load(entry, first, upto)
        elif not entry.loaded.wait(LOAD_WAIT_S):
            raise NotReadyError(f"the events of execution {eid!r} are still being read; ask again")
        if entry.error:
            raise NotReadyError(entry.error)
        return entry

    def _load(self, entry: History, first: int, upto: int) -> None:
        past: History | None = None
        try:
            read = History(entry.execution_id)  # kept as the history keeps them, as they come
            if upto >= first:
                with self.client() as client:
                    for record in client.read(
                        first, upto, types=folds.TYPES, execution_id=entry.execution_id
                    ):
                        read.add(record.seq, record.fields())
            past = read
        finally:
            with self.live.mutex:
                if past is None:  # the reader says why; whoever waited for it asks again
                    self.live.histories.drop(entry)
                    entry.error = f"reading the events of {entry.execution_id!r} failed; ask again"
                else:
                    entry.adopt(past.records)
                    self.live.histories.trim()
            entry.loaded.set()

    def _log(
        self, eid: str, records: list[tuple[int, dict[str, Any]]], query: dict[str, str]
    ) -> Text:
        """One task attempt's log, found from its dispatch (never from a path in the query)."""
        step = query.get("step", "")
        phase = query.get("phase", "run")
        part = whole(query, "partition", 0, 0, 1 << 20)
        attempt = whole(query, "attempt", 1, 1, 1000)
        for _, fields in records:
            if (
                fields.get("type") == "StageDispatched"
                and (fields.get("step") or fields.get("stage")) == step
                and fields.get("phase", "run") == phase
                and int(fields.get("partition", 0)) == part
                and int(fields.get("attempt", 1)) == attempt
            ):
                path = tasklogs.task_log_path(fields)
                if path is None or not Path(path).is_file():
                    return Text(f"(task {step} {phase} {part} attempt {attempt} wrote no log)")
                with Path(path).open("rb") as handle:
                    return Text(handle.read(LOG_MAX_BYTES).decode("utf-8", "replace"))
        raise NotFoundError(
            f"execution {eid!r} has no task {step!r} {phase} part {part} attempt {attempt}"
        )

    def _ready(self) -> None:
        if not self.live.ready.wait(30):
            raise NotReadyError("the dashboard has not read the log yet: is the hub up?")
