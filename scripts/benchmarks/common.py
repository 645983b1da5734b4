"""Shared pieces of the benchmarks: the output line, medians, child processes."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def line(name: str, value: float, unit: str, baseline: float | None = None) -> str:
    """One figure in the DESIGN section 12 format."""
    text = f"bench {name} {_fmt(value)} {unit}"
    if baseline is not None:
        ratio = value / baseline if baseline else float("inf")
        text += f" baseline={_fmt(baseline)} ratio={ratio:.2f}"
    print(text, flush=True)
    return text


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return str(round(value))
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Child:
    """A benchmark process that speaks JSON lines on stdout."""

    def __init__(self, args: Sequence[str], *, stdin: bool = False) -> None:
        self.proc = subprocess.Popen(
            list(args),
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    @classmethod
    def role(cls, *args: str, stdin: bool = False) -> Child:
        return cls([sys.executable, "-m", "scripts.benchmarks.hubprocs", *args], stdin=stdin)

    def read(self, timeout_s: float = 120) -> dict[str, Any]:
        text = self.proc.stdout.readline() if self.proc.stdout else ""
        if not text:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"benchmark process {self.proc.args} ended: {err.strip()[-500:]}")
        return json.loads(text)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def workers_ready(client: Any, workers: int, timeout_s: float = 60) -> None:
    """Wait until ``workers`` workers have announced themselves, seen on a subscription."""
    deadline = time.monotonic() + timeout_s
    with client.subscribe(1, types=["WorkerStarted"]) as sub:
        seen: set[str] = set()
        while len(seen) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench: {len(seen)} of {workers} workers started")
            seen |= {r.fields()["worker"] for r in sub.receive(200)}
    # runners import pandas after their worker announces itself, and say nothing when ready
    time.sleep(1.0)
