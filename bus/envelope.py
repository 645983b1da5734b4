"""The envelope a process stamps on each event it creates: a unique ``id`` and its ``src``."""

from __future__ import annotations

import itertools
import os
import secrets
import socket

_ids = itertools.count()
_id_prefix = secrets.token_hex(6)
_source = f"client@{socket.gethostname()}:{os.getpid()}"


def _after_fork() -> None:
    global _ids, _id_prefix, _source
    _ids = itertools.count()
    _id_prefix = secrets.token_hex(6)
    _source = f"{_source.partition('@')[0]}@{socket.gethostname()}:{os.getpid()}"


os.register_at_fork(after_in_child=_after_fork)


def new_event_id() -> str:
    """A unique event id: a random per-process prefix and a counter (cheaper than uuid4)."""
    return f"{_id_prefix}-{next(_ids):x}"


def set_source(actor: str) -> str:
    """Name this process in the ``src`` of the events it creates: ``actor@host:pid``."""
    global _source
    _source = f"{actor}@{socket.gethostname()}:{os.getpid()}"
    return _source


def current_source() -> str:
    return _source
