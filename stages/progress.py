"""How far a running stage is, told to whoever listens, with no knowledge of who that is.

A stage calls `report` (or loops with `each`) as it goes; nothing happens unless a caller
listens (`listening`): porch's runner does, and turns what it hears into ``StageProgress``
events. `part` gives a piece of the work its share of the whole, so a stage made of pieces
(map, reduce, apply) reports one fraction from 0 to 1. The listener is kept in a context
variable, so a stage takes no extra argument and calls from other threads report nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

Listener = Callable[[float, str], None]  # (fraction done 0..1, what it is doing)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Span:
    listener: Listener
    low: float
    high: float
    label: str


_span: ContextVar[_Span | None] = ContextVar("porch_stage_progress", default=None)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Within the block, what the stage reports goes to ``listener``."""
    token = _span.set(_Span(listener, 0.0, 1.0, ""))
    try:
        yield
    finally:
        _span.reset(token)


def report(fraction: float, message: str = "") -> None:
    """The stage is ``fraction`` (0..1) through the current piece of its work, doing
    ``message``; nothing when nobody listens."""
    span = _span.get()
    if span is None:
        return
    done = min(1.0, max(0.0, float(fraction)))
    text = " ".join(t for t in (span.label, message) if t)
    span.listener(span.low + (span.high - span.low) * done, text)


@contextlib.contextmanager
def part(low: float, high: float, label: str) -> Iterator[None]:
    """The block is the share ``low..high`` of the current piece, called ``label``: its own
    reports of 0..1 land in that share."""
    span = _span.get()
    if span is None:
        yield
        return
    width = span.high - span.low
    label = " ".join(t for t in (span.label, label) if t)
    token = _span.set(_Span(span.listener, span.low + width * low, span.low + width * high, label))
    try:
        report(0.0)
        yield
    finally:
        _span.reset(token)


def each(items: Sequence[T], what: str, rows: int) -> Iterator[T]:
    """``items`` one by one, reporting before each: ``what k/n`` over ``rows`` rows."""
    count = len(items)
    for index, item in enumerate(items):
        report(index / max(1, count), f"{what} {index + 1}/{count}, {rows} rows")
        yield item
    report(1.0, f"{what} {count}/{count}, {rows} rows")
