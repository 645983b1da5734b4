"""Numeric flags checked as they are parsed: each type names what is allowed, so a bad value is
refused with one line (``porch: argument --partitions: must be 0..8192 ..., got -3``) and exit
2 before a command reaches anything."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _allowed(low: float | None, high: float | None, *, above: bool, note: str) -> str:
    if low is not None and high is not None:
        text = f"> {_num(low)} and <= {_num(high)}" if above else f"{_num(low)}..{_num(high)}"
    elif low is not None:
        text = f"{'>' if above else '>='} {_num(low)}"
    else:
        text = f"<= {_num(high)}"  # type: ignore[arg-type]
    return f"{text} ({note})" if note else text


def whole(
    low: int | None = None, high: int | None = None, *, note: str = ""
) -> Callable[[str], int]:
    """A whole number in ``low..high`` (either end open when None)."""
    allowed = _allowed(low, high, above=False, note=note)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number {allowed}, got {text!r}"
            ) from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    return parse


def real(
    low: float | None = None, high: float | None = None, *, above: bool = False, note: str = ""
) -> Callable[[str], float]:
    """A finite number in ``low..high``; with ``above``, greater than ``low``."""
    allowed = _allowed(low, high, above=above, note=note)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {allowed}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or (low is not None and (value <= low if above else value < low))
            or (high is not None and value > high)
        ):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    return parse
