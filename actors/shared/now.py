"""The time a turn of an actor's loop is taken at, handed to the actor's core."""

from __future__ import annotations

import time
from typing import NamedTuple


class Now(NamedTuple):
    """The two clocks of a turn: ``wall`` (seconds since the epoch, comparable with events'
    ``ts``) and ``mono`` (monotonic seconds: leases and timeouts, immune to clock steps).
    A named tuple: read twice a turn, it must cost next to nothing."""

    wall: float
    mono: float

    @staticmethod
    def read() -> Now:
        return Now(time.time(), time.monotonic())
