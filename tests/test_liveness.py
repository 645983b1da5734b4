"""Liveness is not history: an idle system appends nothing, yet a silent worker is counted out in
the log (WorkerLost) and counted back in when it is heard again (WorkerReturned), once each."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from actors.api.system import System
from tests.watching import Watched


@pytest.fixture
def watched(tmp_path):
    running = Watched(System(data_dir=tmp_path / "porch", workers=1, log=subprocess.DEVNULL,
                             monitor=True, monitor_args=["--sampling-interval", "0.2"]))  # fmt: skip
    yield running
    for child in running.system.children:  # a stopped worker must not outlive the test
        if child.proc is not None and child.proc.poll() is None:
            os.kill(child.proc.pid, signal.SIGCONT)
    running.stop()


def test_an_idle_system_writes_nothing_but_a_silent_worker_is_counted_out_and_back(watched):
    # given a running system whose worker has started and said which stages it runs (once its
    # runner has loaded them), heartbeats and samples flowing
    watched.wait(lambda s: {e["role"] for e in s if e["type"] == "StagesLoaded"} == {
        "orchestrator", "worker"})  # fmt: skip
    watched.wait(lambda s: any(e["type"] == "WorkerHeartbeat" for e in s))
    watched.wait(lambda s: any(e["type"] == "MetricSampled" for e in s))
    # when it idles, then its log does not grow: heartbeats and samples are live only
    head = watched.client.head()
    watched.listen(3.0)
    assert watched.client.head() == head
    assert not any(
        e["seq"] and e["type"] in ("WorkerHeartbeat", "MetricSampled") for e in watched.seen
    )
    # when the worker falls silent (stopped, not dead), then the log counts it out
    (worker,) = [c for c in watched.system.children if c.name.startswith("worker")]
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        lost = watched.wait(lambda s: any(e["type"] == "WorkerLost" for e in s), timeout=20)
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    # and when it is heard again, back in, once
    watched.wait(lambda s: any(e["type"] == "WorkerReturned" for e in s), timeout=20)
    watched.listen(2.0)
    assert len(watched.of("WorkerLost")) == 1
    assert len(watched.of("WorkerReturned")) == 1
    assert next(e for e in lost if e["type"] == "WorkerLost")["silent_s"] == 5.0


def test_a_restarted_orchestrator_counts_a_worker_back_that_returned_while_it_was_away(watched):
    watched.wait(lambda s: any(e["type"] == "WorkerHeartbeat" for e in s))
    (worker,) = [c for c in watched.system.children if c.name.startswith("worker")]
    (orchestrator,) = [c for c in watched.system.children if c.name == "orchestrator"]
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        watched.wait(lambda s: any(e["type"] == "WorkerLost" for e in s), timeout=20)
        # the orchestrator goes down before the worker is heard again
        os.kill(orchestrator.proc.pid, signal.SIGKILL)
        orchestrator.proc.wait(10)
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    watched.system.check()  # the supervisor's restart, as `porch up` does it
    watched.wait(lambda s: any(e["type"] == "WorkerReturned" for e in s), timeout=30)
    assert len(watched.of("WorkerLost")) == 1
