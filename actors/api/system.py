"""A local porch system as child processes: hub, orchestrator and N workers, supervised.

`porch up` runs one in the foreground; the Python API starts one in the background when no
system runs for its data dir. A child that dies is started again (its state is in the log, so a
restart is a resume); `stop` terminates them all, the hub last, so every actor's final events
are written. Each child is tied to the process that started it (`shared.lifeline`): if that
process dies, even by SIGKILL, its children stop too, and nothing runs unsupervised.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from actors.api.processes import already_runs, find
from actors.api.settings import config_path, network
from actors.errors import ActorError, AlreadyRunningError
from actors.shared.lifeline import tie
from bus.client import Client, hub_running
from bus.errors import BusError


@dataclass(slots=True)
class Child:
    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0


@dataclass(slots=True)
class System:
    data_dir: Path
    workers: int = 2
    checkpoint_dir: Path | str | None = None  # a folder or an s3:// URL
    stages: Sequence[str] = ()
    extra: Sequence[str] = ()
    log: IO[bytes] | int | None = None
    scheduler: bool = False
    max_concurrent: int = 3
    schedules_file: Path | None = None
    monitor: bool = False
    monitor_args: Sequence[str] = ()
    config_file: Path | None = None
    insecure: bool = False
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def _porch(self, *args: str) -> list[str]:
        config = ["--config", str(self.config_file)] if self.config_file else []
        return [
            sys.executable, "-m", "actors.cli", *args, "--data-dir", str(self.data_dir), *config
        ]  # fmt: skip

    def start(self, *, timeout_s: float = 30.0) -> None:
        if hub_running(self.data_dir):
            raise AlreadyRunningError(already_runs(self.data_dir, find(self.data_dir)))
        stage_flags = [f for s in self.stages for f in ("--stage", s)]
        checkpoint = ["--checkpoint-dir", str(self.checkpoint_dir)] if self.checkpoint_dir else []
        insecure = ["--insecure"] if self.insecure else []
        self.children = [Child("hub", self._porch("hub", *insecure))]
        self._spawn(self.children[0])
        try:
            self._wait_for_hub(timeout_s)
        except BaseException:  # a hub that came up where nobody found it must not stay
            self.stop()
            raise
        self.children.append(
            Child(
                "orchestrator",
                self._porch(
                    "orchestrator",
                    *checkpoint,
                    *stage_flags,
                    *self.extra,
                    *insecure,
                    # with no local workers, the remote ones are planned for by the default
                    *(["--workers", str(self.workers)] if self.workers else []),
                ),
            )
        )
        for index in range(self.workers):
            self.children.append(
                Child(
                    f"worker-{index + 1}",
                    self._porch("worker", "--name", f"worker-{index + 1}", *stage_flags),
                )
            )
        if self.scheduler:
            self.children.append(self.scheduler_child())
        if self.monitor:
            self.children.append(Child("monitor", self._porch("monitor", *self.monitor_args)))
        for child in self.children[1:]:
            self._spawn(child)

    def add_child(self, name: str, *args: str) -> None:
        """Start another actor in this running system (the Python API's monitor)."""
        if any(c.name == name for c in self.children):
            return
        child = Child(name, self._porch(*args))
        self.children.append(child)
        self._spawn(child)

    def scheduler_child(self) -> Child:
        schedules = ["--schedules", str(self.schedules_file)] if self.schedules_file else []
        return Child(
            "scheduler",
            self._porch("scheduler", "--max-concurrent", str(self.max_concurrent), *schedules),
        )

    def add_scheduler(self, max_concurrent: int) -> None:
        """Start a scheduler in this running system (the Python API's `start_scheduler`)."""
        if any(c.name == "scheduler" for c in self.children):
            return
        self.max_concurrent = max_concurrent
        child = self.scheduler_child()
        self.children.append(child)
        self._spawn(child)

    def remove_scheduler(self, timeout_s: float = 10.0) -> None:
        self.remove_child("scheduler", timeout_s)

    def remove_child(self, name: str, timeout_s: float = 10.0) -> None:
        for child in [c for c in self.children if c.name == name]:
            self.children.remove(child)
            if child.proc is not None:
                stop_process(child.proc, timeout_s)

    def _spawn(self, child: Child) -> None:
        out = self.log if self.log is not None else subprocess.DEVNULL
        child.proc = subprocess.Popen(
            child.args, stdout=out, stderr=out, start_new_session=True, **tie()
        )
        child.started = time.monotonic()

    def _wait_for_hub(self, timeout_s: float) -> None:
        """Ask the hub for its head until it answers; each ask waits on the socket's poll."""
        deadline = time.monotonic() + timeout_s
        hub = self.children[0]
        environ = dict(os.environ)  # what the children see: PORCH_CONFIG, PORCH_HUB_*
        endpoints, _ = network(
            data_dir=str(self.data_dir),
            config_file=config_path(str(self.config_file) if self.config_file else None, environ),
            environ=environ,
        )
        with Client(endpoints, timeout_ms=250, retry_ms=250) as client:
            while time.monotonic() < deadline:
                if hub.proc is not None and hub.proc.poll() is not None:
                    raise ActorError(f"the hub exited with code {hub.proc.returncode} at start")
                with contextlib.suppress(BusError):
                    client.head()
                    return
        raise ActorError(f"the hub did not start within {timeout_s} s")

    def check(self) -> list[str]:
        """Start again every child that died; returns their names."""
        restarted: list[str] = []
        if self.stopping:
            return restarted
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                # a child that keeps dying waits longer each time, up to 30 s
                delay = (
                    0.0
                    if time.monotonic() - child.started > 60
                    else min(30.0, 0.5 * 2**child.restarts)
                )
                if time.monotonic() - child.started < delay:
                    continue
                child.restarts += 1
                restarted.append(f"{child.name} (exit {child.proc.returncode})")
                if child.name == "hub":
                    self._spawn(child)
                    with contextlib.suppress(ActorError):
                        self._wait_for_hub(10)
                else:
                    self._spawn(child)
        return restarted

    def stop(self, timeout_s: float = 10.0) -> None:
        """Workers and orchestrator first, then the hub, so their last events are written."""
        self.stopping = True
        for group in (self.children[1:], self.children[:1]):
            for child in group:
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.terminate()
            deadline = time.monotonic() + timeout_s
            for child in group:
                if child.proc is None:
                    continue
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait(5)

    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self.children if c.proc is not None}


def spawn_actor(data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start one `porch` actor for a data dir in the background (the Python API's helpers)."""
    return subprocess.Popen(
        [sys.executable, "-m", "actors.cli", *args, "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **tie(),
    )  # fmt: skip


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def default_checkpoint_dir(data_dir: Path) -> Path:
    return data_dir / "checkpoints"
