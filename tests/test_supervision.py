"""Supervision: nothing outlives `porch up` (SIGKILL included), `porch down` stops a system
cleanly, and a second `porch up` names what runs. Real `porch` processes, as users start them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from actors.api import processes
from actors.api.system import System
from bus.client import Client
from bus.events import ExecutionRequested
from stages.sample import write_sample
from store import pidlock
from tests.conftest import PORCH, run_porch

GONE_DEADLINE_S = 10.0  # the goal is 2 s; the assertion leaves room for a busy machine


class Up:
    """`porch up` started as a user starts it; `close` kills it and everything it started,
    whatever the test did."""

    def __init__(self, data_dir: Path, workers: int = 1, *args: str) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.args = args
        self.out = data_dir.parent / f"up-{time.monotonic_ns()}.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.family: list[psutil.Process] = []

    def start(self, timeout_s: float = 60) -> Up:
        data_dir, workers = str(self.data_dir), str(self.workers)
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [*PORCH, "up", "--data-dir", data_dir, "--workers", workers, *self.args],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        # every actor holds its lock and every worker has its runner: the whole family is up
        kinds = {"up", "hub", "orchestrator", "scheduler", "monitor", "dashboard"}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            held = processes.find(self.data_dir)
            family = psutil.Process(self.proc.pid).children(recursive=True)
            if (
                kinds <= {h.kind for h in held}
                and sum(h.kind == "worker" for h in held) == self.workers
                and len(family) == 5 + 2 * self.workers
            ):
                self.family = family
                return self
            time.sleep(0.05)
        raise AssertionError(f"porch up did not come up in {timeout_s} s: {self.output()}")

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def pid(self, kind: str) -> int:
        return next(h.pid for h in processes.find(self.data_dir) if h.kind == kind)

    def close(self) -> None:
        """SIGTERM (it stops what it started, restarted actors too), then SIGKILL to all."""
        if self.proc is None:
            return
        family = list(self.family)
        with contextlib.suppress(psutil.NoSuchProcess):
            family += psutil.Process(self.proc.pid).children(recursive=True)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for proc in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


@pytest.fixture
def up(data_dir):
    started = Up(data_dir)
    try:
        yield started.start()
    finally:
        started.close()


def alive(family: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie has ended: only its parent has not looked yet)."""
    running = []
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.status() != psutil.STATUS_ZOMBIE:
                running.append(proc)
    return running


def wait_gone(family: list[psutil.Process], timeout_s: float = GONE_DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while alive(family) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [" ".join(p.cmdline()[2:4]) for p in alive(family)]
    assert not left, f"still running {timeout_s} s after their parent died: {left}"


def test_a_killed_porch_up_takes_every_actor_and_runner_with_it(up):
    # given `porch up` with its hub, orchestrator, scheduler, monitor, a worker and its runner
    family = up.family
    # when it is killed with no chance to stop anything
    assert up.proc is not None
    up.proc.send_signal(signal.SIGKILL)
    up.proc.wait(10)
    # then every process it started ends (within 2 s as a rule), and the data dir is free
    wait_gone(family)
    assert processes.find(up.data_dir) == []


def test_an_api_system_started_from_a_thread_ends_with_its_program(tmp_path):
    # given a program that starts the embedded system from a thread (the kernel's
    # parent-death signal follows the thread, so this takes the pipe the children watch)
    program = (
        "import sys, threading; from pathlib import Path; from actors.api.system import System\n"
        "s = System(data_dir=Path(sys.argv[1]), workers=1)\n"
        "t = threading.Thread(target=s.start); t.start(); t.join()\n"
        "print('up', flush=True); threading.Event().wait()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", program, str(tmp_path / "d")], stdout=subprocess.PIPE, text=True
    )
    family: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "up\n"
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 3  # hub, orchestrator, worker
        # when the program is killed while its thread is long gone
        proc.kill()
        proc.wait(10)
        # then its system goes with it
        wait_gone(family)
    finally:
        proc.kill()
        proc.wait(10)
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def test_a_killed_worker_takes_its_busy_runner_with_it(data_dir):
    # given a worker whose runner is in the middle of a minute-long stage
    write_sample(data_dir.parent / "in.parquet", 100, seed=1)
    up = Up(data_dir, 1, "--stage", "slow=tests.slowstages:slow")
    try:
        up.start()
        with Client.local(data_dir) as client:
            sub = client.subscribe(1, types={"StageStarted"})
            client.append(
                ExecutionRequested(
                    execution_id="busy", stages=["slow"], config={"slow": {"seconds": 120}},
                    input_data=str(data_dir.parent / "in.parquet"),
                )
            )  # fmt: skip
            deadline = time.monotonic() + 30
            started = []
            while not started and time.monotonic() < deadline:
                started = sub.receive(200)
            sub.close()
        assert started, "the stage did not start"
        worker = next(p for p in up.family if "worker" in p.cmdline())
        runner = worker.children()
        assert len(runner) == 1
        # when the worker is killed, then its runner ends too: no task runs unowned
        worker.kill()
        wait_gone(runner)
    finally:
        up.close()


def test_porch_down_stops_porch_up_cleanly_and_a_new_one_starts(up, data_dir):
    # given a running `porch up` and what it started
    pids = {h.kind: h.pid for h in processes.find(data_dir) if h.kind != "worker"}
    worker = up.pid("worker")
    # when `porch down` runs for its data dir
    result = run_porch("down", data_dir=data_dir, timeout=60)
    # then it names each process it stopped, `porch up` first and the hub last, and sums up
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"stopped up pid {pids['up']}"
    assert lines[-2] == f"stopped hub pid {pids['hub']}"
    for kind in ("orchestrator", "scheduler", "monitor", "dashboard"):
        assert f"stopped {kind} pid {pids[kind]}" in lines
    assert f"stopped worker pid {worker}" in lines
    assert lines[-1] == f"porch down: stopped 7 processes of data dir {data_dir}"
    # and `porch up` stopped its actors in order: the worker's last words are in the log
    assert up.proc is not None
    assert up.proc.wait(10) == 0
    wait_gone(up.family)
    assert processes.find(data_dir) == []
    replay = run_porch("replay", "--json", "--type", "WorkerStopped", data_dir=data_dir)
    stopped = [json.loads(line) for line in replay.stdout.splitlines()]
    assert [(e["worker"], e["reason"]) for e in stopped] == [("worker-1", "stopped")]
    # and the data dir takes a new `porch up`
    again = Up(data_dir)
    try:
        again.start()
    finally:
        again.close()


def test_a_second_porch_up_names_what_runs_and_how_to_stop_it(up, data_dir):
    # given a running `porch up`
    pids = {h.kind: h.pid for h in processes.find(data_dir)}
    # when another one starts on the same data dir
    result = run_porch("up", data_dir=data_dir, timeout=60)
    # then it is refused in one line naming the processes, and `porch down`
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert f"porch: up: a system already runs for data dir {data_dir} (" in result.stderr
    for kind in ("up", "hub", "orchestrator", "scheduler", "monitor", "worker"):
        assert f"{kind} pid {pids[kind]}" in result.stderr
    assert result.stderr.rstrip().endswith(f"stop it with: porch down --data-dir {data_dir}")
    assert up.proc is not None
    assert up.proc.poll() is None


def test_porch_down_stops_actors_started_without_porch_up_the_hub_last(tmp_path):
    # given a system started by a program (the Python API's embedded system): no `porch up`
    system = System(data_dir=tmp_path / "d", workers=1, log=subprocess.DEVNULL)
    system.start()
    try:
        deadline = time.monotonic() + 30
        while len(processes.find(system.data_dir)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        # when `porch down` runs
        result = run_porch("down", data_dir=system.data_dir, timeout=60)
        # then it stops each actor itself, the hub once the others have ended
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[-2] == f"stopped hub pid {system.pids()['hub']}"
        assert f"stopped orchestrator pid {system.pids()['orchestrator']}" in lines[:-2]
        assert f"stopped worker pid {system.pids()['worker-1']}" in lines[:-2]
        assert processes.find(system.data_dir) == []
    finally:
        system.stop()


def test_porch_down_with_nothing_running_says_so_and_refuses_a_missing_data_dir(tmp_path):
    # given a data dir where nothing runs, and one that does not exist
    (tmp_path / "d").mkdir()
    # when `porch down` runs for each, then it says so, or refuses in one line
    idle = run_porch("down", data_dir=tmp_path / "d")
    assert (idle.returncode, idle.stdout) == (
        0,
        f"porch down: nothing runs for data dir {tmp_path / 'd'}\n",
    )
    missing = run_porch("down", data_dir=tmp_path / "none")
    assert missing.returncode == 2
    assert missing.stderr == f"porch: down: data dir {tmp_path / 'none'} does not exist\n"


@pytest.fixture
def bystander():
    """A process that has nothing to do with porch, killed at teardown."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def test_porch_down_never_signals_a_pid_a_lock_file_names_without_holding_it(tmp_path, bystander):
    # given lock files naming an unrelated process: one that nobody holds (left by a killed
    # actor whose pid was reused), one held by this process (the file names someone else)
    run = tmp_path / "d" / "run"
    run.mkdir(parents=True)
    (run / "orchestrator.lock").write_text(str(bystander.pid))
    held = run / "monitor.lock"
    held.write_text(str(bystander.pid))
    fd = os.open(held, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert pidlock.owner(held) == -1
        # when `porch down` runs
        result = run_porch("down", data_dir=tmp_path / "d", timeout=60)
        # then it signals nothing, and says what it could not stop
        assert result.returncode == 1
        assert "still running: monitor pid unknown" in result.stdout
        assert bystander.poll() is None
    finally:
        os.close(fd)
    assert pidlock.owner(held) is None
