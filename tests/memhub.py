"""An in-memory hub for unit tests of the actors' cores: the log as a list, no sockets.

It does what the hub does to what it is given: drops a duplicate id, assigns the next seq,
keeps the event's bytes, and reads back from a seq. Time is the test's: each event's ``ts`` is
the fake clock's. A core is driven by a small adapter in its test module that folds what is
new (`since`) and appends what the core decides, as the shared actor loop does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bus.events import Event
from bus.schema import to_map
from bus.wire import pack


@dataclass(frozen=True, slots=True)
class Logged:
    seq: int
    fields: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return self.fields["type"]


class MemoryHub:
    """The log as a list: seq from 1, one event per id."""

    def __init__(self) -> None:
        self.records: list[Logged] = []
        self._ids: set[str] = set()

    def append(self, event: Event | dict[str, Any], ts: float) -> Logged | None:
        """Log ``event`` stamped ``ts``; None when its id is logged already (a duplicate)."""
        fields = to_map(event) if isinstance(event, Event) else dict(event)
        fields["ts"] = ts
        if fields["id"] in self._ids:
            return None
        self._ids.add(fields["id"])
        record = Logged(len(self.records) + 1, fields, pack(fields))
        self.records.append(record)
        return record

    def since(self, seq: int) -> list[Logged]:
        """The records after ``seq``."""
        return self.records[seq:]

    @property
    def head(self) -> int:
        return len(self.records)

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The logged events of one type, as maps."""
        return [r.fields for r in self.records if r.fields["type"] == kind]
