"""`porch dashboard` (the web dashboard of a running system) and `porch dashboard-token`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Final

from actors.commands.common import add_data_dir, data_dir_of, need_hub
from actors.commands.numbers import whole
from actors.errors import UsageError

# how much lower than its parent's the dashboard's CPU priority is (a nice increment): a UI
# server yields to the hub, the workers and the other actors on a busy machine, and catches up
# when they leave it room (its subscription misses no event)
NICE_DEFAULT: Final = 19


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dash = sub.add_parser(
        "dashboard", help="serve the web dashboard of a running system (porch up starts one)"
    )
    add_data_dir(dash)
    add_dashboard_flags(dash, prefix="")
    dash.set_defaults(func=cmd_dashboard)

    token = sub.add_parser(
        "dashboard-token",
        help="print the token a dashboard on a non-loopback address asks for (made once)",
    )
    add_data_dir(token)
    token.add_argument("--new", action="store_true", help="replace the token with a new one")
    token.set_defaults(func=cmd_token)


def add_dashboard_flags(parser: argparse.ArgumentParser, *, prefix: str) -> None:
    """The dashboard's flags; `porch up` takes them as ``--dashboard-host`` and so on."""
    parser.add_argument(
        f"--{prefix}host", dest="dashboard_host", default="127.0.0.1", metavar="ADDRESS",
        help="address to serve on (default 127.0.0.1; another needs `porch dashboard-token`"
        " or --insecure)",
    )  # fmt: skip
    parser.add_argument(
        f"--{prefix}port", dest="dashboard_port", type=whole(0, 65535), default=0,
        metavar="PORT", help="port (default: any free one; the address is printed)",
    )  # fmt: skip
    parser.add_argument(
        f"--{prefix}nice", dest="dashboard_nice", type=whole(0, 19), default=NICE_DEFAULT,
        metavar="N", help="run N steps of CPU priority below its parent (a nice increment, 0..19;"
        f" default {NICE_DEFAULT}), so that it yields to the actors on a busy machine",
    )  # fmt: skip
    if prefix == "":
        parser.add_argument(
            "--insecure", action="store_true",
            help="serve a non-loopback address without a token (anyone who reaches it can act)",
        )  # fmt: skip
        parser.add_argument(
            "--quiet", action="store_true",
            help="do not print the address once serving (`porch up` prints it itself)",
        )  # fmt: skip


def dashboard_args(args: argparse.Namespace) -> list[str]:
    """The `porch dashboard` flags given to `porch up`."""
    out = ["--host", args.dashboard_host, "--port", str(args.dashboard_port)]
    out += ["--nice", str(args.dashboard_nice), "--quiet"]
    return out + (["--insecure"] if args.insecure else [])


def cmd_dashboard(args: argparse.Namespace) -> int:
    _yield_cpu(args.dashboard_nice)  # first: importing the server starts threads of its own
    from actors.dashboard.server import Dashboard, DashboardConfig

    endpoints, _ = need_hub(args, "dashboard")
    try:
        config = DashboardConfig(
            data_dir=data_dir_of(args),
            endpoints=endpoints,
            host=args.dashboard_host,
            port=args.dashboard_port,
            insecure=args.insecure,
        )
    except ValueError as exc:
        raise UsageError(f"dashboard: {exc}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    dashboard = Dashboard(config)
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url = dashboard.start()
    if not args.quiet:
        print(f"porch dashboard: {url}", flush=True)
    try:
        stopping.wait()
    finally:
        dashboard.stop()
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from actors.dashboard.access import make_token, token_path

    data_dir = data_dir_of(args)
    token, made = make_token(data_dir, renew=args.new)
    print(token)
    if made:
        print(
            f"porch dashboard-token: written to {token_path(data_dir)} (0600); restart the"
            " dashboard (porch up) to use it; open http://HOST:PORT/?token=TOKEN once per browser",
            file=sys.stderr,
            flush=True,
        )
    return 0


def _yield_cpu(increment: int) -> None:
    """Lower this process's CPU priority by ``increment`` (a nice increment). On Linux a
    priority is a thread's own, and a new thread takes its creator's: so every thread running
    now (a library's pool started at import) is lowered too, and all started later follow.
    The threads are listed again until no new one shows: one that a thread not lowered yet
    started meanwhile took the old priority (seen once in the suite)."""
    target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + increment)
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, target)
        return
    lowered: set[int] = set()
    while new := {int(t.name) for t in tasks.iterdir()} - lowered:
        for tid in new:
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.setpriority(os.PRIO_PROCESS, tid, target)
        lowered |= new
