"""`porch hub`, `porch publish`, `porch replay` and `porch log`: the event log and its hub."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actors.api.settings import config_path, hub_config, s3_options
from actors.commands.common import (
    add_data_dir,
    connect,
    data_dir_of,
    event_json,
    event_line,
    network_of,
    print_json,
)
from actors.commands.numbers import whole
from actors.errors import UsageError
from bus.client import hub_running
from bus.endpoints import log_dir
from bus.envelope import set_source
from bus.hub import Hub
from bus.schema import SCHEMAS, build, coerce, fields_of
from store import objstore
from store.projections.summary import SummaryState, evolve
from store.reader import LogReader
from store.verify import verify


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hub = sub.add_parser("hub", help="run the hub: the log writer and event publisher")
    add_data_dir(hub)
    hub.add_argument(
        "--fsync", choices=["always", "batch", "never"], help="fsync policy (default batch)"
    )
    hub.add_argument(
        "--ingest", metavar="ENDPOINT", help="bind ingest here instead of the data dir's ipc socket"
    )
    hub.add_argument("--publish", metavar="ENDPOINT", help="bind publish here")
    hub.add_argument("--request", metavar="ENDPOINT", help="bind the request socket here")
    hub.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow binding non-loopback TCP without encryption",
    )
    hub.set_defaults(func=cmd_hub)

    pub = sub.add_parser("publish", help="append one event through the hub and print its seq")
    add_data_dir(pub)
    pub.add_argument("type", nargs="?", metavar="TYPE", help="event type, e.g. MetricRecorded")
    pub.add_argument("fields", nargs="*", metavar="KEY=VALUE", help="event fields")
    pub.add_argument(
        "--json", dest="json_text", metavar="JSON", help='the whole event as JSON: {"type": ...}'
    )
    pub.set_defaults(func=cmd_publish)

    rep = sub.add_parser("replay", help="print events of the log, filter them, fold them")
    add_data_dir(rep)
    rep.add_argument("--from", dest="from_seq", type=whole(0), default=1, metavar="SEQ")
    rep.add_argument("--to", dest="to_seq", type=whole(0), metavar="SEQ")
    rep.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="TYPE",
        help="only this event type (repeatable)",
    )
    rep.add_argument("--execution", metavar="ID", help="only events of this execution")
    rep.add_argument("--json", action="store_true",
                     help="one JSON object per line (one document with --summary, --state, --queue)")  # fmt: skip
    rep.add_argument(
        "--follow", action="store_true", help="keep printing new events (needs a running hub)"
    )
    rep.add_argument(
        "--summary", action="store_true", help="print the folded overview instead of events"
    )
    rep.add_argument(
        "--state", metavar="EXECUTION_ID", help="print the folded execution instead of events"
    )
    rep.add_argument(
        "--queue", action="store_true", help="print the scheduler's queue instead of events"
    )
    rep.add_argument(
        "--at",
        type=whole(0),
        metavar="SEQ",
        help="with --state or --queue: fold only up to this seq",
    )
    rep.set_defaults(func=cmd_replay)

    log_cmd = sub.add_parser("log", help="check the event log")
    log_sub = log_cmd.add_subparsers(dest="log_command", required=True, metavar="COMMAND")
    ver = log_sub.add_parser("verify", help="check every record; name the first bad offset")
    add_data_dir(ver)
    ver.set_defaults(func=cmd_log_verify)
    rep = log_sub.add_parser(
        "repair", help="cut the log at its first bad record (the rest is kept aside, not deleted)"
    )
    add_data_dir(rep)
    rep.add_argument("--yes", action="store_true", help="do it (without it: say what it would do)")
    rep.set_defaults(func=cmd_log_repair)


def _reach_archive(args: argparse.Namespace) -> None:
    """This process reads an archive shipped to an object store with the config's [s3] keys."""
    environ = dict(os.environ)
    objstore.configure(s3_options(config_path(getattr(args, "config", None), environ), environ))


def cmd_hub(args: argparse.Namespace) -> int:
    _reach_archive(args)
    config = hub_config(
        data_dir=args.data_dir,
        config_file=config_path(args.config, os.environ),
        environ=dict(os.environ),
        flags={
            "fsync": args.fsync,
            "ingest": args.ingest,
            "publish": args.publish,
            "request": args.request,
            "insecure": args.insecure,
        },
    )
    logging.basicConfig(level=logging.INFO, format="porch hub: %(message)s", stream=sys.stderr)
    set_source("hub")
    hub = Hub(config)

    def stop(signum: int, frame: object) -> None:
        hub.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("porch.hub").info(
        "serving %s (head %d, fsync %s) at %s",
        log_dir(config.data_dir),
        hub.head,
        config.fsync.value,
        config.endpoints.request,
    )
    hub.run()
    logging.getLogger("porch.hub").info("stopped at head %d", hub.head)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    set_source("cli")
    if args.json_text is not None:
        if args.type or args.fields:
            raise UsageError("publish: give either TYPE KEY=VALUE... or --json, not both")
        try:
            obj = json.loads(args.json_text)
        except ValueError as exc:
            raise UsageError(f"publish: --json is not valid JSON: {exc}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise UsageError('publish: --json needs an object with a "type" string')
        kind = obj.pop("type")
        obj.pop("v", None)
        values: dict[str, Any] = obj
    else:
        if not args.type:
            raise UsageError(
                "publish: give an event TYPE, or --json; types: " + ", ".join(sorted(SCHEMAS))
            )
        kind = args.type
        values = {}
        for item in args.fields:
            key, eq, text = item.partition("=")
            if not eq or not key:
                raise UsageError(f"publish: {item!r} is not KEY=VALUE")
            values[key] = coerce(kind, key, text)
    event = build(kind, values)
    with connect(args) as client:
        print(client.append(event))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    root = data_dir_of(args)
    if args.follow and args.summary:
        raise UsageError("replay: --follow and --summary do not go together")
    if args.at is not None and not (args.state or args.queue):
        raise UsageError("replay: --at goes with --state EXECUTION_ID or --queue")
    if args.state:
        return _replay_state(args, root)
    if args.queue:
        return _replay_queue(args, root)
    records = _records(args, root)
    if args.summary:
        state = SummaryState()
        for seq, fields in records:
            evolve(seq, fields, state)
        if args.json:
            print_json(_summary(state))
        else:
            _print_summary(state)
        return 0
    out = sys.stdout
    render = event_json if args.json else event_line
    for seq, fields in records:
        out.write(render(seq, fields) + "\n")
        if args.follow:
            out.flush()
    return 0


def _replay_state(args: argparse.Namespace, root: Any) -> int:
    """The execution as the log had it at ``--at`` (default: now), folded from its own events
    from seq 1 (so however long ago it finished, and whatever left the fold since)."""
    from actors.commands.execution_text import execution_lines
    from actors.read.executions import execution_view
    from store.projections import executions as folds

    args.from_seq, args.to_seq, args.types, args.execution, args.follow = (
        1,
        args.at,
        sorted(folds.TYPES),
        args.state,
        False,
    )
    state = folds.ExecutionsState()
    for seq, fields in _records(args, root):
        folds.evolve(seq, fields, state)
    ex = state.executions.get(args.state)
    if ex is None:
        at = f" at seq {args.at}" if args.at else ""
        raise UsageError(f"replay: no execution {args.state!r} in the log{at}")
    view = execution_view(ex)
    if args.json:
        print_json(view)
    else:
        print(f"as of seq {args.at if args.at is not None else state.last_seq}:")
        print("\n".join(execution_lines(view)))
    return 0


def _replay_queue(args: argparse.Namespace, root: Any) -> int:
    """The scheduler's admission queue as the log had it at ``--at`` (default: now)."""
    from actors.read.schedules import queue_status
    from actors.scheduler.core import SchedulerCore

    args.from_seq, args.to_seq, args.types, args.execution, args.follow = (
        1, args.at, None, None, False,
    )  # fmt: skip
    core = SchedulerCore()
    last_ts = 0.0
    for seq, fields in _records(args, root):
        core.apply(seq, fields, 0.0)
        last_ts = float(fields.get("ts", last_ts))
    status = queue_status(core, last_ts)
    if args.json:
        print_json(status)
        return 0
    print(f"as of seq {core.state.last_seq}:")
    for title in ("queued", "running", "waiting_retries"):
        runs = status[title]
        print(f"{title.replace('_', ' ')}: {len(runs)}")
        for run in runs:
            print(f"  {run['execution_id']}  schedule={run['schedule_id']} priority={run['priority']} "
                  f"attempt={run['attempt']}")  # fmt: skip
    return 0


def _say_deleted(args: argparse.Namespace, root: Any) -> None:
    """Name, on stderr, every range of the asked seqs that log retention deleted: replay
    reads across archive and live log, and only what was deleted is missing."""
    from store import archive

    low, high = args.from_seq, args.to_seq if args.to_seq is not None else 1 << 63
    for span in archive.spans(archive.archive_dir(log_dir(root))):
        if span.deleted and span.first <= high and span.last >= low:
            print(f"porch replay: {archive.deleted_note(span)}", file=sys.stderr)


def _records(args: argparse.Namespace, root: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    _say_deleted(args, root)
    endpoints, _ = network_of(args)
    if hub_running(root) or not endpoints.is_local():  # a hub elsewhere: ask it
        client = connect(args)
        if args.follow:
            sub = client.subscribe(args.from_seq, types=args.types)
            for record in sub:
                if args.to_seq is not None and record.seq > args.to_seq:
                    return
                fields = record.fields()
                if args.execution is None or fields.get("execution_id") == args.execution:
                    yield record.seq, fields
        for record in client.read(
            args.from_seq, args.to_seq, types=args.types, execution_id=args.execution
        ):
            yield record.seq, record.fields()
        client.close()
        return
    if args.follow:
        raise UsageError(f"replay: --follow needs a running hub for data dir {root}")
    _reach_archive(args)
    reader = LogReader(log_dir(root))
    for seq, payload in reader.read(
        args.from_seq, args.to_seq, types=args.types, execution_id=args.execution
    ):
        yield seq, fields_of(payload)


def _summary(state: SummaryState) -> dict[str, Any]:
    return {
        "events": state.events,
        "last_seq": state.last_seq,
        "by_type": dict(sorted(state.by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
        "executions": dict(sorted(state.statuses().items())),
        "workers_up": sorted(state.workers),
        "schedules": len(state.schedules),
    }


def _print_summary(state: SummaryState) -> None:
    print(f"events: {state.events} (last seq {state.last_seq})")
    for kind, count in sorted(state.by_type.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {kind:<22} {count}")
    statuses = state.statuses()
    if statuses:
        print(
            f"executions: {len(state.executions)} ("
            + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items()))
            + ")"
        )
    if state.workers:
        print(f"workers up: {', '.join(sorted(state.workers))}")
    if state.schedules:
        print(f"schedules: {len(state.schedules)}")


def cmd_log_verify(args: argparse.Namespace) -> int:
    root = data_dir_of(args)
    directory = log_dir(root)
    if not directory.is_dir():
        raise UsageError(f"log verify: no log at {directory}")
    report = verify(directory)
    _reach_archive(args)
    span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "no records"
    if not _verify_archive(directory, report.first_seq if report.segments else None):
        return 1
    if not report.problem:
        print(f"ok: {report.records} records, {span}, {report.segments} segment(s)")
        return 0
    where = f"{report.problem_segment} at offset {report.problem_offset}"
    if report.torn_tail:
        print(
            f"ok: {report.records} records, {span}; torn tail at {where} ({report.problem}),"
            " cut off when the hub next opens the log"
        )
        return 0
    print(f"corrupt: {where}: {report.problem} ({report.records} good records before it, {span})")
    return 1


def _verify_archive(directory: Path, first_live: int | None) -> bool:
    """Check the archive beside the log, if there is one; print what it holds."""
    from store import archive

    where = archive.archive_dir(directory)
    if not archive.spans(where):
        return True
    report = archive.verify_archive(where, first_live)
    deleted = f", {report.deleted} deleted" if report.deleted else ""
    if report.problem:
        print(f"archive corrupt: {report.problem}")
        return False
    print(f"archive ok: {report.records} records in {report.files} file(s), "
          f"seq {report.first_seq}..{report.last_seq}{deleted}")  # fmt: skip
    return True


def cmd_log_repair(args: argparse.Namespace) -> int:
    import time

    from store.verify import repair

    directory = log_dir(data_dir_of(args))
    if not directory.is_dir():
        raise UsageError(f"log repair: no log at {directory}")
    report = verify(directory)
    if not report.problem:
        print(f"ok: {report.records} records are whole; nothing to repair")
        return 0
    where = f"{report.problem_segment} at offset {report.problem_offset}"
    if not args.yes:
        print(f"would cut the log at {where} ({report.problem}), keeping {report.records} records "
              f"up to seq {report.last_seq}; later bytes and segments go to a quarantine folder. "
              "Run again with --yes to do it.")  # fmt: skip
        return 2
    done = repair(directory, f"quarantine-{time.strftime('%Y%m%dT%H%M%S')}")
    print(f"repaired: cut {done.segment} at offset {done.offset}; {done.kept_records} records kept "
          f"(up to seq {done.last_seq}); the rest is in {done.quarantine}")  # fmt: skip
    return 0
