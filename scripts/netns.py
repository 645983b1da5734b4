"""Other hosts on this machine: network namespaces joined to this one by veth pairs.

Each namespace gets one veth pair: ``10.N.i.1/24`` on this side, ``10.N.i.2/24`` inside, and a
route to ``10.N.0.0/16`` through its pair, so a process inside reaches every address on this
side (the hub binds ``10.N.1.1``) and nothing else: no default route, no forwarding. Everything
is removed on exit. It needs root and a kernel that allows namespaces; `available` says why not.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def _free_net() -> int:
    """A ``10.N`` block no route of this machine uses yet (other test runs included)."""
    routes = _ip("route", "show", check=False).stdout
    free = [n for n in range(100, 251) if f"10.{n}." not in routes]
    if not free:
        raise RuntimeError("no free 10.N.0.0/16 block for test hosts")
    return random.choice(free)


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"porch-probe-{os.getpid()}"
    try:
        made = _ip("netns", "add", name, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"`ip` is not usable here: {exc}"
    if made.returncode != 0:
        return f"the kernel refused a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


@dataclass
class Hosts:
    """``count`` namespaces; ``hub_ip`` is the address on this side every one of them reaches."""

    count: int
    net: int = field(default_factory=lambda: _free_net())
    names: list[str] = field(default_factory=list)
    _veths: list[str] = field(default_factory=list)

    @property
    def hub_ip(self) -> str:
        return f"10.{self.net}.1.1"

    def address(self, index: int) -> str:
        return f"10.{self.net}.{index + 1}.2"

    def prefix(self, index: int) -> list[str]:
        """The argv prefix that runs a command inside namespace ``index``."""
        return ["ip", "netns", "exec", self.names[index]]

    def create(self) -> None:
        tag = f"{os.getpid() % 100000}{random.randint(0, 99):02d}"
        for index in range(self.count):
            name = f"porch-{tag}-{index}"
            outer, inner = f"pv{tag}o{index}", f"pv{tag}i{index}"
            _ip("netns", "add", name)
            self.names.append(name)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            self._veths.append(outer)
            _ip("link", "set", inner, "netns", name)
            _ip("addr", "add", f"10.{self.net}.{index + 1}.1/24", "dev", outer)
            _ip("link", "set", outer, "up")
            inside = ["-n", name]
            _ip(*inside, "addr", "add", f"{self.address(index)}/24", "dev", inner)
            _ip(*inside, "link", "set", inner, "up")
            _ip(*inside, "link", "set", "lo", "up")
            _ip(
                *inside,
                "route",
                "add",
                f"10.{self.net}.0.0/16",
                "via",
                f"10.{self.net}.{index + 1}.1",
            )

    def remove(self) -> None:
        for name in self.names:
            pids = _ip("netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            _ip("netns", "del", name, check=False)
        for veth in self._veths:  # gone with its namespace's end; make sure
            _ip("link", "del", veth, check=False)
        self.names.clear()
        self._veths.clear()


@contextlib.contextmanager
def hosts(count: int) -> Iterator[Hosts]:
    made = Hosts(count)
    try:
        made.create()
        yield made
    finally:
        made.remove()


def free_ports(count: int) -> list[int]:
    """Ports no socket of this machine holds now (bound and released at once)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def tcp_config(path: Path, keys: Path | None, host: str = "127.0.0.1") -> Path:
    """A porch config with the hub and the tasks socket on ``host`` (free ports), and the key
    folder when given: what every process of a several-host system is started with."""
    ingest, publish, request, tasks = free_ports(4)
    text = (
        f'[hub]\ningest = "tcp://{host}:{ingest}"\npublish = "tcp://{host}:{publish}"\n'
        f'request = "tcp://{host}:{request}"\n'
        f'[orchestrator]\ntasks = "tcp://{host}:{tasks}"\n'
    )
    if keys is not None:
        text += f'[curve]\nkeys = "{keys}"\n'
    path.write_text(text)
    return path
