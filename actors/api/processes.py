"""The processes of a local system, found by the locks they hold, and their stop (`porch down`).

While it runs, every process of a system holds a lock in its data dir: `porch up` holds
``run/up.lock``, the hub ``log/LOCK``, the orchestrator, scheduler and monitor
``run/<kind>.lock``, each worker ``run/worker.<pid>.lock``. A lock goes with its process however
it ends, so what holds one runs; and only a pid that the kernel confirms as a lock's holder is
ever signalled (`store.pidlock.owner`), so a stale pid file cannot aim at an unrelated process.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from actors.shared.loop import lock_path
from bus.endpoints import log_dir, run_dir
from store import pidlock
from store.log import LOCK_NAME

UP: Final = "up"  # the kind of `porch up` itself
KILL_WAIT_S: Final = 5.0  # after SIGKILL, how long a process may take to be gone
POLL_S: Final = 0.05  # where no pidfd tells when a process ends, how often to look


@dataclass(frozen=True, slots=True)
class Held:
    """A process holding one of the data dir's locks; ``pid`` -1: not known for sure."""

    kind: str
    pid: int
    lock: Path


def up_lock(data_dir: Path) -> Path:
    return lock_path(data_dir, UP)


def find(data_dir: Path) -> list[Held]:
    """Every process holding a lock of the data dir, in the order they stop: `porch up` first
    (it stops its own actors), then the actors, the hub last (it writes their last words)."""
    runs = run_dir(data_dir)
    locks = sorted(runs.glob("*.lock")) if runs.is_dir() else []
    found = []
    for path in [*locks, log_dir(data_dir) / LOCK_NAME]:
        pid = pidlock.owner(path)
        if pid is not None:
            kind = "hub" if path.name == LOCK_NAME else path.name.split(".")[0]
            found.append(Held(kind, pid, path))
    return sorted(found, key=lambda held: _rank(held.kind))


def _rank(kind: str) -> int:
    return 0 if kind == UP else 2 if kind == "hub" else 1


def describe(found: list[Held]) -> str:
    """``up pid 10, hub pid 11, ...``."""
    return ", ".join(f"{h.kind} pid {h.pid if h.pid > 0 else 'unknown'}" for h in found)


def already_runs(data_dir: Path, found: list[Held]) -> str:
    """The one line that refuses a second system on a data dir."""
    return (
        f"a system already runs for data dir {data_dir} ({describe(found)}); "
        f"stop it with: porch down --data-dir {shlex.quote(str(data_dir))}"
    )


Outcome = Literal["stopped", "killed", "running"]


class _Target:
    """A process to stop. Where there are pidfds (Linux), it is signalled and watched through
    one, opened before the lock is checked again: no pid reuse can redirect the signal."""

    def __init__(self, held: Held) -> None:
        self.held = held
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.fd = os.pidfd_open(held.pid)
        self.valid = pidlock.owner(held.lock) == held.pid
        self.outcome: Outcome = "running"
        self.signalled = signal.SIGTERM

    def running(self) -> bool:
        if self.fd is not None:
            return not select.select([self.fd], [], [], 0)[0]
        return pidlock.owner(self.held.lock) == self.held.pid

    def send(self, signum: int) -> None:
        self.signalled = signal.Signals(signum)
        with contextlib.suppress(ProcessLookupError):
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, signum)
            else:
                os.kill(self.held.pid, signum)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def stop(
    found: list[Held], *, timeout_s: float, gone: Callable[[Held, Outcome], None]
) -> list[tuple[Held, Outcome]]:
    """SIGTERM in the order of `find`, each group once the one before it has ended; SIGKILL
    to what still runs after ``timeout_s``. ``gone`` hears of each process as it ends. A
    holder whose pid is not known for sure is never signalled: it stays "running"."""
    ended: list[tuple[Held, Outcome]] = [(h, "running") for h in found if h.pid <= 0]
    targets = []
    for target in (_Target(h) for h in found if h.pid > 0):
        if target.valid:
            targets.append(target)
        else:  # it ended, or let go of its lock, since it was found: never signal that pid
            target.close()
            ended.append((target.held, "stopped"))
            gone(target.held, "stopped")
    try:
        deadline = time.monotonic() + timeout_s
        for rank in (0, 1, 2):
            group = [t for t in targets if _rank(t.held.kind) == rank and t.running()]
            for target in group:
                target.send(signal.SIGTERM)
            if not _wait(group, targets, deadline, gone):
                break
        left = [t for t in targets if t.running()]
        for target in left:
            target.send(signal.SIGKILL)
        _wait(left, targets, time.monotonic() + KILL_WAIT_S, gone)
        return [(t.held, t.outcome) for t in targets] + ended
    finally:
        for target in targets:
            target.close()


def _wait(
    group: list[_Target],
    every: list[_Target],
    deadline: float,
    gone: Callable[[Held, Outcome], None],
) -> bool:
    """Until every process of ``group`` has ended (True) or the deadline (False); tells of
    any of ``every`` that ended meanwhile (`porch up` ends its own actors)."""
    while True:
        for target in every:
            if target.outcome == "running" and not target.running():
                target.outcome = "killed" if target.signalled == signal.SIGKILL else "stopped"
                gone(target.held, target.outcome)
        waiting = [t for t in group if t.outcome == "running"]
        left_s = deadline - time.monotonic()
        if not waiting or left_s <= 0:
            return not waiting
        fds = [t.fd for t in waiting if t.fd is not None]
        if len(fds) == len(waiting):
            select.select(fds, [], [], left_s)  # a pidfd is readable once its process ended
        else:
            time.sleep(min(left_s, POLL_S))


def sweep(data_dir: Path) -> None:
    """Remove the lock files of their own (a worker's) that no process holds: left by a
    process that was killed."""
    runs = run_dir(data_dir)
    for path in runs.glob("*.*.lock") if runs.is_dir() else []:
        if pidlock.holder(path) is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
