"""`porch up --config FILE` started as a user starts it, for the tests that need a whole system."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from bus.client import Client
from tests.conftest import PORCH


def porch(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60):
    """Run one `porch` command in ``cwd`` with no PORCH_* variable but those of ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PORCH_")}
    return subprocess.run(
        [*PORCH, *args], cwd=cwd, env={**environ, **(env or {})}, capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip


class PorchUp:
    """`porch up --config FILE` as a user starts it, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, folder: Path, config: Path, data_dir: Path) -> None:
        self.folder, self.config, self.data_dir = folder, config, data_dir
        self.log = folder / "up.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*PORCH, "up", "--config", str(config)], cwd=folder, stdout=out, stderr=out,
                env={k: v for k, v in os.environ.items() if not k.startswith("PORCH_")},
            )  # fmt: skip
        self.client = Client.local(data_dir, timeout_ms=30_000)
        try:
            self.client.head()  # waits on the socket until the hub answers
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> PorchUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, kind: str, count: int, timeout: float = 60) -> list[dict]:
        sub = self.client.subscribe(1, types=[kind])
        seen: list[dict] = []
        deadline = time.monotonic() + timeout
        try:
            while len(seen) < count and time.monotonic() < deadline:
                seen += [r.fields() for r in sub.receive(200)]
                assert self.proc.poll() is None, self.log.read_text()
        finally:
            sub.close()
        assert len(seen) >= count, f"{kind}: {seen}\n{self.log.read_text()}"
        return seen

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
