"""Where an actor or a query reads the log: through a running hub, or from the files."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from bus.client import Client
from bus.endpoints import log_dir
from bus.errors import BusError, MalformedEventError
from bus.schema import fields_of
from bus.wire import unpack_map
from store.errors import StoreError
from store.reader import LogReader

log = logging.getLogger("porch.readmodel")


class LogSource(Protocol):
    """Where a read model reads the log from: the hub, or the segment files."""

    def head(self) -> int | None: ...

    def records(
        self, from_seq: int, types: Iterable[str]
    ) -> Iterator[tuple[int, dict[str, Any]]]: ...

    def event_id(self, seq: int) -> str | None: ...

    def execution_records(
        self, execution_id: str, types: Iterable[str]
    ) -> Iterator[tuple[int, dict[str, Any]]]: ...


class HubSource:
    """The log as the running hub serves it."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def head(self) -> int | None:
        return self.client.head()

    def records(self, from_seq: int, types: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        for record in self.client.read(from_seq, types=types):
            try:
                yield record.seq, record.fields()
            except MalformedEventError:
                continue

    def execution_records(
        self, execution_id: str, types: Iterable[str]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        for record in self.client.read(1, types=types, execution_id=execution_id):
            yield record.seq, record.fields()

    def event_id(self, seq: int) -> str | None:
        try:
            records, _, head = self.client.read_chunk(seq, seq, max_events=1)
        except BusError:
            return None
        if records:
            return str(records[0].fields().get("id", ""))
        # none there: past the head (the snapshot is ahead of this log), or a range that log
        # retention deleted (cannot tell which log it was: taken as this one)
        return "" if seq > head else None


class FileSource:
    """The log read from its segment files: for queries while no hub runs (reads only)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.reader = LogReader(log_dir(data_dir))

    def close(self) -> None:
        return None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def head(self) -> int | None:
        return None  # unknown without a scan; `event_id` tells a snapshot ahead of the log

    def records(self, from_seq: int, types: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        for seq, payload in self.reader.read(from_seq, types=types):
            try:
                yield seq, fields_of(payload)
            except MalformedEventError:
                continue

    def execution_records(
        self, execution_id: str, types: Iterable[str]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        for seq, payload in self.reader.read(1, types=types, execution_id=execution_id):
            yield seq, fields_of(payload)

    def event_id(self, seq: int) -> str | None:
        try:
            for _, payload in self.reader.read(seq, seq):
                return str(unpack_map(payload).get("id", ""))
            for _ in self.reader.read(seq + 1, limit=1 << 62):
                return None  # a later record is there: seq was deleted by log retention
        except (StoreError, MalformedEventError):
            return None
        return ""  # no record at or after that seq: the log is shorter than the snapshot
