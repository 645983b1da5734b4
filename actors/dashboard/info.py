"""Where a data dir's running dashboard listens (``run/dashboard.json``), for `porch up` and
`porch status` to show, without importing the dashboard itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bus.endpoints import run_dir
from store import pidlock

NAME = "dashboard"


def info_path(data_dir: Path) -> Path:
    return run_dir(data_dir) / f"{NAME}.json"


def lock_file(data_dir: Path) -> Path:
    return run_dir(data_dir) / f"{NAME}.lock"


def write_info(data_dir: Path, url: str, *, token_required: bool) -> None:
    path = info_path(data_dir)
    tmp = path.with_name(path.name + ".tmp")
    body = {"url": url, "pid": os.getpid(), "token_required": token_required}
    tmp.write_text(json.dumps(body), encoding="utf-8")
    tmp.replace(path)


def dashboard_url(data_dir: Path) -> str | None:
    """``http://host:port/`` of the dashboard running for the data dir, if one runs."""
    if not pidlock.held(lock_file(data_dir)):
        return None
    try:
        info = json.loads(info_path(data_dir).read_text(encoding="utf-8"))
        return str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
