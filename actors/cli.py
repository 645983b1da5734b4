"""The `porch` command: parses arguments, runs a subcommand, turns errors into one line and exit 2."""

from __future__ import annotations

import argparse
import os
import sys

from actors.commands import actors as actor_commands
from actors.commands import config as config_commands
from actors.commands import dashboard as dashboard_commands
from actors.commands import executions as execution_commands
from actors.commands import gc as gc_commands
from actors.commands import keys as key_commands
from actors.commands import log as log_commands
from actors.commands import monitoring as monitoring_commands
from actors.commands import sample as sample_commands
from actors.commands import schedules as schedule_commands
from actors.commands import stages as stage_commands
from actors.commands import tasklogs as task_log_commands
from actors.errors import ActorError
from actors.shared import lifeline
from bus.errors import BusError
from stages.errors import StageError
from store import fsutil, powercut
from store.errors import StoreError

ROOT_ERRORS = (ActorError, BusError, StoreError, StageError)
# the actors create the data dir's files: the log, artifacts, sockets, run files. They are the
# user's data, so they are private: directories 0700, files 0600.
PRIVATE_COMMANDS = frozenset(
    {"hub", "orchestrator", "worker", "scheduler", "monitor", "dashboard", "up"}
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"porch: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="porch", description="porch: an event-sourced pipeline orchestrator")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    log_commands.register(sub)
    actor_commands.register(sub)
    execution_commands.register(sub)
    task_log_commands.register(sub)
    gc_commands.register(sub)
    sample_commands.register(sub)
    stage_commands.register(sub)
    schedule_commands.register(sub)
    monitoring_commands.register(sub)
    key_commands.register(sub)
    config_commands.register(sub)
    dashboard_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    lifeline.hold(os.environ)  # started by `porch up` or the Python API: stop when it dies
    args = build_parser().parse_args(argv)
    fsutil.observe_syncs(powercut.from_environ(os.environ))  # a crash test's sync journal
    if args.command in PRIVATE_COMMANDS:
        os.umask(0o077)
    try:
        return int(args.func(args) or 0)
    except ROOT_ERRORS as exc:
        print(f"porch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
