"""`porch orchestrator`, `porch worker`, `porch up` and `porch down`: the processes that run
pipelines."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from actors.api import processes
from actors.api.settings import (
    config_path,
    retention_policy_of,
    s3_options_of,
    snapshot_policy_of,
)
from actors.api.system import System
from actors.commands.announce import Announcer
from actors.commands.common import add_data_dir, data_dir_of, need_hub, network_of, settings_of
from actors.commands.dashboard import add_dashboard_flags, dashboard_args
from actors.commands.monitoring import add_monitor_flags, monitor_args
from actors.commands.numbers import whole
from actors.errors import AlreadyRunningError, UsageError
from actors.shared.stagecfg import StageSet, registry_from
from bus.client import hub_running
from store import objstore, pidlock


def _stage_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="NAME=MODULE:FUNCTION",
        help="register a local stage (repeatable)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    orch = sub.add_parser("orchestrator", help="run the orchestrator (needs a running hub)")
    add_data_dir(orch)
    orch.add_argument(
        "--checkpoint-dir", metavar="DIR", help="artifacts (default DATA_DIR/checkpoints)"
    )
    orch.add_argument("--lease-ms", type=whole(100, 3_600_000), help="task lease (default 10000)")
    orch.add_argument("--workers", type=whole(1), help="workers to plan partitions for (default 2)")
    orch.add_argument("--hybrid-min-rows", type=whole(1), metavar="N",
                      help="hybrid mode: rows per partition worth splitting for")  # fmt: skip
    orch.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding the tasks socket on non-loopback TCP without encryption",
    )
    _stage_flag(orch)
    orch.set_defaults(func=cmd_orchestrator)

    work = sub.add_parser("worker", help="run one stage worker (needs a running hub)")
    add_data_dir(work)
    work.add_argument("--name", help="worker name (default worker-HOST-PID)")
    work.add_argument("--prefetch", type=whole(1, 64), help="tasks held ready (default 8)")
    work.add_argument("--no-compress-frames", action="store_true",
                      help="write frames between stages plain, not LZ4-compressed")  # fmt: skip
    _stage_flag(work)
    work.set_defaults(func=cmd_worker)

    up = sub.add_parser(
        "up", help="run hub, orchestrator, workers, scheduler and monitor; Ctrl-C stops them"
    )
    add_data_dir(up)
    up.add_argument("--workers", type=whole(0), help="how many workers (default 2)")
    up.add_argument(
        "--checkpoint-dir", metavar="DIR", help="artifacts (default DATA_DIR/checkpoints)"
    )
    up.add_argument("--max-concurrent", type=whole(1), metavar="N",
                    help="scheduled executions running at once (default 3)")  # fmt: skip
    up.add_argument(
        "--schedules", metavar="FILE.toml", help="add or update these schedules at start"
    )
    up.add_argument(
        "--insecure",
        action="store_true",
        help="let the hub and orchestrator bind non-loopback TCP without encryption, and the"
        " dashboard a non-loopback address without a token",
    )
    add_monitor_flags(up)
    add_dashboard_flags(up, prefix="dashboard-")
    up.add_argument("--no-dashboard", action="store_true", help="do not serve the web dashboard")
    _stage_flag(up)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser(
        "down", help="stop the system running for a data dir (`porch up` or its actors)"
    )
    add_data_dir(down)
    down.add_argument("--timeout", type=float, default=30.0, metavar="S",
                      help="seconds to stop cleanly before SIGKILL (default 30)")  # fmt: skip
    down.set_defaults(func=cmd_down)


def _location(text: str) -> Path | str:
    """A checkpoint folder made absolute, or an ``s3://`` URL as it is."""
    return text if objstore.is_remote(text) else Path(text).resolve()


def cmd_orchestrator(args: argparse.Namespace) -> int:
    from actors.orchestrator.actor import OrchestratorConfig, run_orchestrator

    settings = settings_of(args, "orchestrator")
    endpoints, tasks = need_hub(args, "orchestrator")
    objstore.configure(s3_options_of(settings, os.environ))  # retention removes artifacts
    try:
        config = OrchestratorConfig(
            data_dir=Path(settings["data_dir"]),
            endpoints=endpoints,
            tasks=tasks,
            checkpoint_dir=_location(settings["orchestrator.checkpoint_dir"]),
            lease_ms=settings["orchestrator.lease_ms"],
            hybrid_min_rows=settings["orchestrator.hybrid_min_rows"],
            default_workers=settings["orchestrator.plan_workers"],
            insecure=settings["orchestrator.insecure"],
            snapshots=snapshot_policy_of(settings),
            retention=retention_policy_of(settings),
        )
    except ValueError as exc:
        raise UsageError(f"orchestrator: {exc}") from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # the form of the stages is checked at the door; their code is imported once live
    return run_orchestrator(config, settings.stage_set(), _stage_loader(args, "orchestrator"))


def cmd_worker(args: argparse.Namespace) -> int:
    from actors.worker.actor import WorkerConfig, run_worker
    from actors.worker.child import compression_env

    settings = settings_of(args, "worker")
    endpoints, tasks = need_hub(args, "worker")
    if not endpoints.is_local() and tasks.startswith("ipc://"):
        raise UsageError(
            "worker: the config names a hub over TCP but no [orchestrator] tasks address;"
            " the worker would wait for tasks on this host's ipc socket"
        )
    config = WorkerConfig(
        data_dir=Path(settings["data_dir"]),
        endpoints=endpoints,
        tasks=tasks,
        name=settings["workers.name"],
        heartbeat_s=settings["workers.heartbeat_s"],
        stages=settings.stage_set(),
        prefetch=settings["workers.prefetch"],
        runner_env={
            **s3_options_of(settings, os.environ).environ(),
            **compression_env(compress=settings["workers.compress_frames"]),
        },
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run_worker(config, _stage_loader(args, "worker"))


def cmd_up(args: argparse.Namespace) -> int:
    settings = settings_of(args, "up")
    data_dir = Path(settings["data_dir"])
    network_of(args)  # refuse a bad config file before starting anything
    registry_from(settings.stage_set())  # a stage that does not import is refused here
    schedules = settings["scheduler.schedules"]
    if schedules is not None:
        from actors.scheduler.specs import load_file

        load_file(Path(schedules), now=None)  # refuse a broken file before starting anything
    if not args.no_dashboard:  # another address without a token: refused before anything starts
        from actors.dashboard.access import token_for_bind

        token_for_bind(data_dir, args.dashboard_host, insecure=args.insecure)
    # held while `porch up` runs: a second one is refused, and `porch down` finds this one
    up_fd, _ = pidlock.hold(processes.up_lock(data_dir))
    if up_fd is None or hub_running(data_dir):
        raise AlreadyRunningError(
            f"up: {processes.already_runs(data_dir, processes.find(data_dir))}"
        )
    # the children read the config file themselves: only what flags gave is handed on
    system = System(
        data_dir=data_dir,
        workers=settings["workers.count"],
        checkpoint_dir=_location(args.checkpoint_dir) if args.checkpoint_dir else None,
        stages=tuple(args.stage),
        log=sys.stderr,
        scheduler=True,
        max_concurrent=settings["scheduler.max_concurrent"],
        schedules_file=Path(args.schedules).resolve() if args.schedules else None,
        monitor=True,
        monitor_args=monitor_args(args),
        config_file=_config_file(args),
        insecure=args.insecure,
    )
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    system.start()
    if not args.no_dashboard:
        system.add_child("dashboard", "dashboard", *dashboard_args(args))
    announcer = Announcer(network_of(args)[0]).start()  # a line per execution start and end
    pids = ", ".join(f"{name} {pid}" for name, pid in system.pids().items())
    print(f"porch up: data dir {data_dir}; {pids}; Ctrl-C stops", flush=True)
    shown_url = ""
    try:
        while not stopping.wait(0.2):
            for name in system.check():
                _say(f"porch up: restarted {name}")
            if not args.no_dashboard:
                shown_url = _show_dashboard(data_dir, shown_url)
    finally:
        announcer.stop()
        _say("porch up: stopping")
        system.stop()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    if not data_dir.is_dir():
        raise UsageError(f"down: data dir {data_dir} does not exist")
    if not 0 <= args.timeout <= 3600:
        raise UsageError(f"down: --timeout must be 0..3600 s, got {args.timeout}")
    found = processes.find(data_dir)
    if not found:
        print(f"porch down: nothing runs for data dir {data_dir}")
        return 0

    def gone(held: processes.Held, outcome: processes.Outcome) -> None:
        _say(f"{outcome} {held.kind} pid {held.pid}")

    ended = processes.stop(found, timeout_s=args.timeout, gone=gone)
    processes.sweep(data_dir)
    stopped = sum(outcome != "running" for _, outcome in ended)
    killed = sum(outcome == "killed" for _, outcome in ended)
    running = [held for held, outcome in ended if outcome == "running"]
    summary = f"porch down: stopped {stopped} process{'es' if stopped != 1 else ''} of data dir {data_dir}"
    if killed:
        summary += f" ({killed} killed after {args.timeout:g} s)"
    if running:
        summary += f"; still running: {processes.describe(running)}"
    _say(summary)
    return 1 if running else 0


def _stage_loader(args: argparse.Namespace, command: str) -> Callable[[], StageSet]:
    """What a reload of the stages reads: this actor's own config file (and its flags)."""
    return lambda: settings_of(args, command).stage_set()


def _show_dashboard(data_dir: Path, shown: str) -> str:
    """Say where the dashboard listens once it does (again after a restart on a new port)."""
    from actors.dashboard.info import dashboard_url

    url = dashboard_url(data_dir) or shown
    if url != shown:
        _say(f"porch up: dashboard {url}")
    return url


def _say(text: str) -> None:
    """Print a status line; a closed stdout (a pipe whose reader left) must not stop the
    supervision, or the stop of every actor after it."""
    with contextlib.suppress(OSError, ValueError):
        print(text, flush=True)


def _config_file(args: argparse.Namespace) -> Path | None:
    path = config_path(args.config, os.environ)
    return Path(path).resolve() if path else None
