"""`porch logs EXECUTION [STEP] [--follow]`: what an execution's tasks wrote, each line prefixed
with its task (step, phase/part, attempt)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from actors.commands.common import add_data_dir, connect, reading
from actors.errors import UsageError
from store.tasklogs import TaskLogName, step_logs

TERMINAL: Final = ("completed", "failed", "cancelled", "timed_out")
POLL_MS: Final = 200  # while following: how long to wait for events before reading the files


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    logs = sub.add_parser(
        "logs", help="what an execution's tasks wrote (stdout, stderr, logging), per task"
    )
    add_data_dir(logs)
    logs.add_argument("execution_id", metavar="EXECUTION")
    logs.add_argument("step", nargs="?", metavar="STEP", help="only this step's tasks")
    logs.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing as the tasks write, until the execution ends (exit 1 unless it "
        "completes)",
    )
    logs.set_defaults(func=cmd_logs)


@dataclass(slots=True)
class _Tail:
    """How far a log file has been printed, and the start of a line not ended yet."""

    offset: int = 0
    partial: bytes = b""


@dataclass(slots=True)
class _Printer:
    """Prints new lines of an execution's task logs, each with its task's prefix."""

    steps: list[str]
    root: Path
    tails: dict[Path, _Tail] = field(default_factory=dict)
    lines: int = 0  # printed so far

    def files(self) -> Iterator[tuple[str, TaskLogName, Path]]:
        for step in self.steps:
            for name, path in step_logs(self.root, step):
                yield step, name, path

    def poll(self, *, final: bool = False) -> None:
        """Print what the files hold beyond what was printed; ``final``: lines not ended too."""
        for step, name, path in self.files():
            tail = self.tails.setdefault(path, _Tail())
            try:
                with path.open("rb") as handle:
                    handle.seek(tail.offset)
                    data = handle.read()
            except FileNotFoundError:  # removed meanwhile (retention)
                continue
            tail.offset += len(data)
            data = tail.partial + data
            lines = data.split(b"\n")
            tail.partial = lines.pop()
            if final and tail.partial:
                lines.append(tail.partial)
                tail.partial = b""
            prefix = f"[{step} {name.phase}/{name.partition} a{name.attempt}]"
            for line in lines:
                sys.stdout.write(f"{prefix} {line.decode('utf-8', 'replace')}\n")
            self.lines += len(lines)
        sys.stdout.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    if args.follow:
        return _follow(args)
    from actors.read.executions import fold_log
    from actors.read.model import execution_from_log

    with reading(args) as reader:
        state = fold_log(reader, wanted=lambda s: [args.execution_id])
        ex = state.executions.get(args.execution_id)
        if ex is None and state.evicted:  # finished long ago: its history is in the log still
            ex = execution_from_log(reader, args.execution_id)
    printer = _printer(args, ex)
    if printer is not None:
        printer.poll(final=True)
    if printer is None or not printer.lines:
        what = f"step {args.step} of execution" if args.step else "execution"
        _note(f"no task of {what} {args.execution_id} wrote anything yet")
    return 0


def _follow(args: argparse.Namespace) -> int:
    """Print as the files grow, until the hub's events say the execution ended."""
    from actors.read.executions import fold_log, fold_record
    from actors.read.model import execution_from_log
    from store.projections import executions as folds

    with connect(args) as client:
        state = fold_log(client)
        ex = state.executions.get(args.execution_id)
        if ex is None and state.evicted:  # finished long ago: nothing more will come
            ex = execution_from_log(client, args.execution_id)
        if ex is None or ex.status in TERMINAL:
            printer = _printer(args, ex)
            if printer is not None:
                printer.poll(final=True)
            _said_end(ex)
            return 0 if ex.status == "completed" else 1
        printer = None
        with client.subscribe(state.last_seq + 1, types=folds.TYPES) as sub:
            while True:
                ex = state.executions[args.execution_id]
                if printer is None and ex.plan:
                    printer = _printer(args, ex)
                if printer is not None:
                    printer.poll(final=ex.status in TERMINAL)
                if ex.status in TERMINAL:
                    _said_end(ex)
                    return 0 if ex.status == "completed" else 1
                for record in sub.receive(POLL_MS):
                    fold_record(record, state)


def _printer(args: argparse.Namespace, ex: Any) -> _Printer | None:
    """What to print of an execution: its steps' logs (or one step's); a one-line error for an
    unknown execution or step; None (and a note) when it has no tasks or its logs are gone."""
    if ex is None:
        raise UsageError(f"no execution {args.execution_id!r} in the log")
    steps = [step.id for step in ex.plan.steps] if ex.plan is not None else []
    if args.step is not None and args.step not in steps:
        known = ", ".join(steps) or "none"
        raise UsageError(
            f"execution {args.execution_id!r} has no step {args.step!r} (steps: {known})"
        )
    if ex.plan is None:  # not started yet, or refused: no task ran
        return None
    if ex.plan.dir.startswith("s3://"):
        _note(
            f"execution {ex.execution_id} keeps its artifacts on an object store: what its tasks"
            " wrote went to their workers' stderr, not to task logs"
        )
        return _Printer(steps=[], root=Path())  # nothing to print, said once
    wanted = [args.step] if args.step is not None else steps
    gone = [s for s in wanted if s in ex.removed_steps]
    if gone:
        reasons = sorted({ex.removed_steps[s][1] or "retention" for s in gone})
        _note(
            f"the logs of {', '.join(gone)} were removed with the artifacts ({', '.join(reasons)})"
        )
    return _Printer(steps=wanted, root=Path(ex.plan.dir))


def _said_end(ex: Any) -> None:
    text = f"execution {ex.execution_id} {ex.status}"
    _note(f"{text}: {ex.error}" if ex.error else text)


def _note(text: str) -> None:
    """A line for people about the logs, on stderr: stdout holds the log lines only."""
    print(f"porch: {text}", file=sys.stderr, flush=True)
