"""What every subcommand shares: the data dir flag, reaching the hub, printing events, JSON
and tables."""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shlex
import sys
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actors.api.config import Settings, flags_of, resolve
from actors.api.settings import config_path, network
from actors.errors import NotRunningError, UsageError
from bus.client import Client, hub_running
from bus.endpoints import Endpoints

ENVELOPE_HIDDEN = ("type", "v", "id", "ts", "src")


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the log, artifacts and sockets live (env PORCH_DATA_DIR, default ./.porch)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="porch.toml: every setting of porch up and the actors (env PORCH_CONFIG;"
        " default ./porch.toml if there is one)",
    )


def settings_of(args: argparse.Namespace, command: str) -> Settings:
    """The effective settings of ``command``: defaults, the config file, ``PORCH_*``, its flags."""
    environ = dict(os.environ)
    return resolve(
        config_file=config_path(getattr(args, "config", None), environ),
        environ=environ,
        flags=flags_of(args, command),
        stage_flags=getattr(args, "stage", None) or (),
    )


def local_registry(args: argparse.Namespace) -> Any:
    """The stage registry of this host: built-ins, entry points and the config's [stages]."""
    from actors.shared.stagecfg import registry_from

    return registry_from(settings_of(args, "").stage_set())


def data_dir_of(args: argparse.Namespace) -> Path:
    """``--data-dir``, else ``PORCH_DATA_DIR``, else the config file's ``data_dir``, else
    ``./.porch``."""
    return Path(settings_of(args, "")["data_dir"])


def network_of(args: argparse.Namespace) -> tuple[Endpoints, str]:
    """The hub's endpoints and the tasks address, from ``--config``/``PORCH_CONFIG`` or local."""
    environ = dict(os.environ)
    return network(
        data_dir=args.data_dir,
        config_file=config_path(getattr(args, "config", None), environ),
        environ=environ,
    )


def need_hub(args: argparse.Namespace, what: str) -> tuple[Endpoints, str]:
    """The hub's endpoints and the tasks address; for a local hub, a clear error if none runs."""
    endpoints, tasks = network_of(args)
    data_dir = data_dir_of(args)
    if endpoints.is_local() and not hub_running(data_dir):
        raise UsageError(
            f"{what}: no hub runs for data dir {data_dir}; start `porch hub` or `porch up`"
        )
    return endpoints, tasks


def connect(args: argparse.Namespace, *, timeout_ms: int = 10_000) -> Client:
    """A client of the hub of the data dir (or the config's); a clear error when none runs."""
    endpoints, _ = network_of(args)
    root = data_dir_of(args)
    if endpoints.is_local() and not hub_running(root):
        raise NotRunningError(f"no hub is running for data dir {root}; start one with `porch hub`")
    return Client(endpoints, timeout_ms=timeout_ms)


def reading(args: argparse.Namespace) -> Any:
    """What a query reads the log through: the hub when one runs (or the config names one
    elsewhere), else the data dir's log files. Use it as a context manager."""
    from actors.shared.sources import FileSource
    from bus.endpoints import log_dir

    endpoints, _ = network_of(args)
    root = data_dir_of(args)
    if not endpoints.is_local() or hub_running(root):
        return Client(endpoints)
    if not log_dir(root).is_dir():
        raise NotRunningError(
            f"no log in data dir {root}: nothing has run there yet (start with `porch up`)"
        )
    return FileSource(root)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return repr(value)


def event_json(seq: int, fields: dict[str, Any]) -> str:
    return json.dumps({"seq": seq, **fields}, default=_json_default, separators=(",", ":"))


def event_line(seq: int, fields: dict[str, Any]) -> str:
    ts = fields.get("ts")
    when = (
        datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        if isinstance(ts, int | float)
        else "-"
    )
    rest = " ".join(f"{k}={_short(v)}" for k, v in fields.items() if k not in ENVELOPE_HIDDEN)
    return f"{seq:>8}  {when}  {fields.get('type', '?'):<20} {rest}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=_json_default)
    return text if len(text) <= 80 else text[:77] + "..."


def print_json(value: Any) -> None:
    """One JSON document on stdout: ``--json`` prints this and nothing else there. NaN and
    infinities, which JSON has no words for, become null."""
    print(json.dumps(_finite(value), default=_json_default))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def say(text: str, *, json_out: bool) -> None:
    """A line for people: on stdout, or on stderr when stdout is kept for ``--json``."""
    print(text, file=sys.stderr if json_out else sys.stdout, flush=True)


def table(
    header: Sequence[str], rows: Iterable[Sequence[object]], *, right: Collection[str] = ()
) -> list[str]:
    """The lines of a table: the header, then one line per row, each column as wide as its
    widest cell and two spaces from the next. Columns named in ``right``, and columns of
    integers, are aligned right (numbers); the rest left. No line ends in spaces."""
    raw = [list(row) for row in rows]
    cells = [["-" if c is None else str(c) for c in row] for row in raw]
    widths = [len(h) for h in header]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    numeric = [
        name in right or (bool(raw) and all(type(row[i]) is int for row in raw))
        for i, name in enumerate(header)
    ]

    def line(row: Sequence[str]) -> str:
        out = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(out).rstrip()

    return [line(header), *(line(row) for row in cells)]


def porch_command(args: argparse.Namespace, *words: str) -> str:
    """A ``porch`` command line a user can paste into the same shell: ``words``, then the
    ``--data-dir`` and ``--config`` this command was given, if any."""
    argv = ["porch", *words]
    if getattr(args, "data_dir", None):
        argv += ["--data-dir", str(args.data_dir)]
    if getattr(args, "config", None):
        argv += ["--config", str(args.config)]
    return shlex.join(argv)
