"""A running system seen through one subscription: what the system tests wait on."""

from __future__ import annotations

import time
from pathlib import Path

from actors.api.system import System
from bus.client import Client


class Watched:
    """Starts ``system`` and keeps every event of its log in ``seen``, in seq order."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.data_dir: Path = system.data_dir
        self.system.start()
        self.client = Client.local(self.data_dir)
        self.sub = self.client.subscribe(1)
        self.seen: list[dict] = []

    def _collect(self, timeout_ms: int) -> None:
        for record in self.sub.receive(timeout_ms):
            self.seen.append({**record.fields(), "seq": record.seq})
        for record in self.sub.take_live():  # heartbeats and samples, with seq 0
            self.seen.append({**record.fields(), "seq": 0})

    def wait(self, until, timeout: float = 30.0) -> list[dict]:
        """Collect events (live ones too) from the subscription until `until(events)` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._collect(200)
            if until(self.seen):
                return self.seen
        raise AssertionError(
            f"not reached in {timeout} s; saw {[e['type'] for e in self.seen][-30:]}"
        )

    def listen(self, seconds: float) -> None:
        """Keep collecting events for a while: the wait is the subscription's receive."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._collect(max(1, int(left * 1000)))

    def of(self, kind: str, **match) -> list[dict]:
        return [
            e
            for e in self.seen
            if e["type"] == kind and all(e.get(k) == v for k, v in match.items())
        ]

    def stop(self) -> None:
        self.sub.close()
        self.client.close()
        self.system.stop()


class Logged(Watched):
    """A watched system started with a config file, its actors' output kept in a file."""

    def __init__(self, tmp_path: Path, config: str, **system: object) -> None:
        self.config = tmp_path / "porch.toml"
        self.config.write_text(config)
        self.log_path = tmp_path / f"system-{time.monotonic_ns()}.log"
        self.log_file = self.log_path.open("wb")
        super().__init__(System(data_dir=tmp_path / "porch", log=self.log_file,
                                config_file=self.config, **system))  # fmt: skip

    def text(self) -> str:
        """What the actors have printed so far."""
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.log_file.close()
