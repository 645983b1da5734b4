"""Where a data dir's running monitor listens, and a cheap GET of its HTTP API for clients.

Kept apart from `actors.monitor.actor` so that a query (``porch metrics``) finds and asks the monitor
without importing the monitor itself (psutil, the HTTP server, the alert engine).
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from bus.endpoints import run_dir
from store import pidlock


def info_path(data_dir: Path) -> Path:
    return run_dir(data_dir) / "monitor.json"


def monitor_running(data_dir: Path) -> bool:
    return pidlock.held(run_dir(data_dir) / "monitor.lock")


def monitor_hostport(data_dir: Path) -> tuple[str, int] | None:
    """The running monitor's HTTP host and port, if a monitor runs for the data dir."""
    if not monitor_running(data_dir):
        return None
    try:
        info = json.loads(info_path(data_dir).read_text(encoding="utf-8"))
        return str(info["host"]), int(info["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def monitor_address(data_dir: Path) -> str | None:
    """``http://host:port`` of the running monitor of a data dir, if any."""
    hostport = monitor_hostport(data_dir)
    return None if hostport is None else f"http://{hostport[0]}:{hostport[1]}"


def get(hostport: tuple[str, int], path: str, timeout_s: float = 5.0) -> bytes:
    """The body of a GET of ``path``; raises OSError on no answer or a status other than 200."""
    conn = http.client.HTTPConnection(*hostport, timeout=timeout_s)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        body = reply.read()
    except http.client.HTTPException as exc:
        raise OSError(f"monitor at {hostport[0]}:{hostport[1]}: {exc}") from exc
    finally:
        conn.close()
    if reply.status != 200:
        raise OSError(f"monitor at {hostport[0]}:{hostport[1]}: {path} answered {reply.status}")
    return body
