"""A runner keeps the memory a task freed while tasks come, and gives it back once idle."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.shared.stagecfg import StageSet
from actors.worker.child import RUNNER_MALLOC, Runner
from actors.worker.pipes import pack_frame
from actors.worker.taskloop import TaskLoop

ROOT = Path(__file__).resolve().parents[1]
FREE_THEN_TRIM = """
import resource, sys
from actors.worker.runner import _trim

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

blocks = [bytearray(4 << 20) for _ in range(64)]  # 256 MB in arrays under 32 MB
for b in blocks:
    b[::4096] = b"x" * len(b[::4096])  # touched: resident
held = rss()
del blocks
freed = rss()
_trim()
print(held, freed, rss())
"""


def _environ(runner: Runner) -> dict[str, str]:
    """The runner's environment, once it said it is ready (until its exec, /proc shows its
    parent's)."""
    assert runner.reader is not None
    deadline = time.monotonic() + 10
    while not any(isinstance(f, dict) and "ready" in f for f in runner.reader.read()[0]):
        assert time.monotonic() < deadline, "the runner did not start in 10 s"
        select.select([runner.fd], [], [], 1.0)
    pid = runner.pid
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.fixture
def runner():
    started = Runner(StageSet())
    try:
        yield started
    finally:
        started.kill()


def test_a_runner_starts_with_glibc_keeping_freed_memory(runner):
    env = _environ(runner)
    for name, value in RUNNER_MALLOC.items():
        assert env[name] == value


def test_the_environment_overrides_the_runners_memory_settings(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    started = Runner(StageSet())
    try:
        assert _environ(started)["MALLOC_TRIM_THRESHOLD_"] == "131072"
    finally:
        started.kill()


def test_freed_memory_stays_until_trimmed():
    # given a process with the runner's settings that allocated 256 MB and freed it
    env = {**os.environ, **RUNNER_MALLOC, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", FREE_THEN_TRIM], env=env, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    held, freed, trimmed = (int(v) for v in done.stdout.split())
    # then freeing kept it resident (for the next task), and the idle trim gave it back
    assert freed > held - (64 << 20)
    assert trimmed < freed - (192 << 20)


def test_an_idle_runner_trims_and_a_waiting_task_is_taken_at_once():
    control, worker = os.pipe()
    results_read, results = os.pipe()
    trims = []
    loop = TaskLoop(results, None, None, execute=None, trim=lambda: trims.append(1),  # type: ignore[arg-type]
                    log_path=str, say_failure=print, control=control, idle_trim_s=0.05)  # fmt: skip
    try:
        # given a runner that ran a task, and no task comes within the wait: it trims
        loop.ran = True
        loop._gather()
        assert trims == [1]
        assert not loop.ran  # and then waits for the next task without a timeout
        # when a task is written: it is taken at once
        os.write(worker, pack_frame({"task_id": "t"}))
        loop._gather()
        assert list(loop.handed) == [{"task_id": "t"}]
        assert trims == [1]
    finally:
        for fd in (control, worker, results_read, results):
            os.close(fd)
