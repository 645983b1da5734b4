"""`porch schedule add|list|show|pause|resume|remove|trigger|preview` and `porch scheduler`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from actors.api.schedules import add_schedules, refuse_removing_an_upstream, trigger
from actors.api.settings import snapshot_policy_of
from actors.commands.common import (
    add_data_dir,
    connect,
    need_hub,
    network_of,
    print_json,
    reading,
    settings_of,
    table,
)
from actors.commands.numbers import real, whole
from actors.errors import ActorError, UsageError
from bus.events import (
    SchedulePaused,
    ScheduleRemoved,
    ScheduleResumed,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    actor = sub.add_parser("scheduler", help="run the scheduler (needs a running hub)")
    add_data_dir(actor)
    actor.add_argument("--max-concurrent", type=whole(1), metavar="N",
                       help="scheduled executions running at once (default 3)")  # fmt: skip
    actor.add_argument(
        "--schedules", metavar="FILE.toml", help="add or update these schedules at start"
    )
    actor.set_defaults(func=cmd_scheduler)

    schedule = sub.add_parser("schedule", help="add, list, pause, trigger and preview schedules")
    verbs = schedule.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = verbs.add_parser("add", help="add a schedule (or --replace one)")
    add_data_dir(add)
    add.add_argument("schedule_id", nargs="?", help="the schedule's id (not with --file)")
    when = add.add_mutually_exclusive_group()
    when.add_argument("--cron", metavar="EXPR", help='a cron expression, e.g. "0 2 * * *"')
    when.add_argument("--interval", metavar="DURATION", help='e.g. "90s", "15m", "2h"')
    when.add_argument("--at", metavar="ISO", help="one time, e.g. 2026-12-01T02:00:00+01:00")
    when.add_argument(
        "--after", metavar="IDS", help="fire when these schedules succeeded (comma-separated)"
    )
    when.add_argument("--file", metavar="FILE.toml", help="add every [[schedule]] of a file")
    add.add_argument("--input", metavar="INPUT.parquet", help="the input data")
    what = add.add_mutually_exclusive_group()
    what.add_argument("--stages", help="comma-separated stage names (default: the four built-ins)")
    what.add_argument("--pipeline", metavar="FILE.toml", help="a pipeline file")
    add.add_argument("--mode", choices=["sequential", "parallel", "hybrid"], default="sequential")
    add.add_argument("--tz", help="IANA time zone of the cron or date (default UTC)")
    add.add_argument("--name", help="a display name")
    add.add_argument(
        "--priority", type=whole(-1_000_000, 1_000_000), help="higher runs first (default 0)"
    )
    add.add_argument("--timeout-minutes", type=real(0, 525_600, above=True, note="leave it out for none"),
                     help="cancel a run after this long")  # fmt: skip
    add.add_argument("--retry", metavar="STRATEGY",
                     help="no_retry (default), fixed_delay, linear_backoff or exponential_backoff")  # fmt: skip
    add.add_argument("--max-retries", type=whole(0, 100), help="default 3")
    add.add_argument("--retry-delay-minutes", type=real(0, 10_080), help="default 5")
    add.add_argument("--misfire", help="skip, run_once (default) or catch_up")
    add.add_argument(
        "--grace-seconds", type=real(0, 31_536_000), help="lateness still on time (default 60)"
    )
    add.add_argument("--max-catch-up", type=whole(1, 10_000), help="default 10")
    add.add_argument("--jitter-seconds", type=real(0, 86_400), help="default 0")
    add.add_argument("--cpu-cores", type=real(0, 100_000, above=True))
    add.add_argument("--memory-gb", type=real(0, 1_000_000, above=True))
    add.add_argument(
        "--max-concurrent-jobs", type=whole(1, 100_000), help="runs of this schedule at once"
    )
    add.add_argument("--paused", action="store_true", help="add it paused")
    add.add_argument("--replace", action="store_true", help="update a schedule that exists")
    add.set_defaults(func=cmd_add)

    lst = verbs.add_parser("list", help="schedules with their next fire times")
    add_data_dir(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

    show = verbs.add_parser("show", help="one schedule, its runs and its queue state")
    add_data_dir(show)
    show.add_argument("schedule_id")
    show.set_defaults(func=cmd_show)

    for verb, helptext in (("pause", "stop new fires (running ones go on)"),
                           ("resume", "fire again"), ("remove", "delete the schedule")):  # fmt: skip
        cmd = verbs.add_parser(verb, help=helptext)
        add_data_dir(cmd)
        cmd.add_argument("schedule_id")
        cmd.set_defaults(func=cmd_control, verb=verb)

    trigger = verbs.add_parser(
        "trigger", help="fire a schedule now (it still goes through the queue)"
    )
    add_data_dir(trigger)
    trigger.add_argument("schedule_id")
    trigger.add_argument(
        "--override", metavar="JSON", help="execution_config keys to change for this run"
    )
    trigger.set_defaults(func=cmd_trigger)

    preview = verbs.add_parser("preview", help="print the next fire times of an expression")
    preview.add_argument("expression")
    preview.add_argument("--type", choices=["cron", "interval"], default="cron")
    preview.add_argument("--tz", default="UTC")
    preview.add_argument(
        "--from", dest="start", metavar="ISO", help="start after this instant (default now)"
    )
    preview.add_argument("--count", type=whole(1, 10_000), default=10)
    preview.set_defaults(func=cmd_preview)


def cmd_scheduler(args: argparse.Namespace) -> int:
    from actors.scheduler.actor import SchedulerConfig, run_scheduler
    from actors.scheduler.specs import load_file

    settings = settings_of(args, "scheduler")
    endpoints, _ = need_hub(args, "scheduler")
    schedules = settings["scheduler.schedules"]
    if schedules is not None:
        load_file(Path(schedules), now=None)  # refuse a broken file before starting
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run_scheduler(
        SchedulerConfig(
            data_dir=Path(settings["data_dir"]),
            endpoints=endpoints,
            max_concurrent=settings["scheduler.max_concurrent"],
            schedules_file=Path(schedules) if schedules is not None else None,
            snapshots=snapshot_policy_of(settings),
        )
    )


def _config_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    if not args.schedule_id:
        raise UsageError("schedule add: give a SCHEDULE_ID (or --file FILE.toml)")
    kinds = {
        "cron": args.cron,
        "interval": args.interval,
        "one_time": args.at,
        "dependency": args.after,
    }
    chosen = [k for k, v in kinds.items() if v]
    if not chosen:
        raise UsageError("schedule add: say when with --cron, --interval, --at or --after")
    if not args.input:
        raise UsageError("schedule add: --input INPUT.parquet is required")
    execution: dict[str, Any] = {"input_data": args.input, "mode": args.mode}
    if args.stages:
        execution["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    if args.pipeline:
        execution["pipeline"] = args.pipeline
    resources = {
        k: v
        for k, v in (
            ("cpu_cores", args.cpu_cores),
            ("memory_gb", args.memory_gb),
            ("max_concurrent_jobs", args.max_concurrent_jobs),
        )
        if v is not None
    }
    given = {
        "schedule_id": args.schedule_id,
        "name": args.name,
        "schedule_type": chosen[0],
        "schedule_expression": "" if chosen[0] == "dependency" else kinds[chosen[0]],
        "dependencies": args.after or [],
        "timezone": args.tz,
        "enabled": not args.paused,
        "priority": args.priority,
        "execution_timeout_minutes": args.timeout_minutes,
        "retry_strategy": args.retry,
        "max_retries": args.max_retries,
        "retry_delay_minutes": args.retry_delay_minutes,
        "misfire_policy": args.misfire,
        "misfire_grace_seconds": args.grace_seconds,
        "max_catch_up": args.max_catch_up,
        "jitter_seconds": args.jitter_seconds,
        "resource_requirements": resources,
        "execution_config": execution,
    }
    # a flag not given leaves the setting to its default (declared once, in ScheduleSpec)
    return {k: v for k, v in given.items() if v is not None}


def cmd_add(args: argparse.Namespace) -> int:
    from actors.scheduler.specs import load_file, normalize

    if args.file:
        configs = load_file(Path(args.file), now=time.time())
    else:
        configs = [normalize(_config_from_flags(args), now=time.time(), base_dir=Path.cwd())]
    with connect(args) as client:
        for line in add_schedules(client, configs, replace=args.replace):
            print(line)
    here = network_of(args)[0].is_local()  # else the input is on the system's hosts
    for config in configs:  # added: a file that comes later is allowed, but say so
        path = config["execution_config"]["input_data"]
        if here and not Path(path).exists():
            print(
                f"porch: warning: schedule {config['schedule_id']}: input {path} does not exist"
                " yet; a fire fails unless it does by then",
                file=sys.stderr,
            )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from actors.read.schedules import fold_schedules, schedule_status

    now = time.time()
    with reading(args) as reader:
        core = fold_schedules(reader)
    rows = [schedule_status(core, s, now) for s in core.state.schedules.values()]
    if args.json:
        print_json([{k: v for k, v in row.items() if k != "config"} for row in rows])
        return 0
    if not rows:
        print("no schedules; add one with `porch schedule add`")
        return 0
    lines = []
    for row in rows:
        last = row["last_execution"]
        lines.append([
            row["schedule_id"], row["schedule_type"],
            row["schedule_expression"] or ",".join(row["dependencies"]), row["state"],
            row["next_fire_time"] or ("on upstream success" if row["dependencies"] else "-"),
            f"{last['status']} {last['execution_id']}" if last else "-",
        ])  # fmt: skip
    print("\n".join(table(("SCHEDULE", "TYPE", "WHEN", "STATE", "NEXT_FIRE", "LAST_RUN"), lines)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from actors.read.schedules import fold_schedules, schedule_status
    from store.projections.schedules import describe

    with reading(args) as reader:
        core = fold_schedules(reader)
    schedule = core.state.schedules.get(args.schedule_id)
    if schedule is None:
        raise ActorError(f"no schedule {args.schedule_id!r}")
    status = schedule_status(core, schedule, time.time())
    status["runs"] = [
        {k: v for k, v in describe(core.state, core.state.runs[e]).items() if v is not None}
        for e in schedule.runs[-20:]
    ]
    print(json.dumps(status, indent=2, default=str))
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from actors.read.schedules import fold_schedules

    with connect(args) as client:
        core = fold_schedules(client)
        if args.schedule_id not in core.state.schedules:
            raise ActorError(f"no schedule {args.schedule_id!r}")
        if args.verb == "remove":
            refuse_removing_an_upstream(core, args.schedule_id)
        kind = {"pause": SchedulePaused, "resume": ScheduleResumed, "remove": ScheduleRemoved}[
            args.verb
        ]
        seq = client.append(kind(schedule_id=args.schedule_id))
    done = {"pause": "paused", "resume": "resumed", "remove": "removed"}[args.verb]
    print(f"{done} schedule {args.schedule_id} (seq {seq})")
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    override = None
    if args.override:
        try:
            override = json.loads(args.override)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--override is not JSON: {exc}") from None
        if not isinstance(override, dict):
            raise UsageError("--override must be a JSON object")
    with connect(args) as client:
        print(trigger(client, args.schedule_id, override))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from actors.scheduler.specs import timetable
    from actors.scheduler.timetable import Cron, iso, parse_duration_s, parse_instant, zone

    if not 1 <= args.count <= 10_000:
        raise UsageError(f"--count must be 1..10000, got {args.count}")
    tz = zone(args.tz)
    start = time.time() if args.start is None else parse_instant(args.start, tz, "--from")
    if args.type == "cron":
        table = Cron.parse(args.expression, args.tz)
    else:
        every = parse_duration_s(args.expression)
        table = timetable(
            {
                "schedule_type": "interval",
                "interval_s": every,
                "start_date": start,
                "end_date": None,
            },
            start,
        )
        start -= 1e-6  # an interval from --from fires at --from first
    t: float | None = start
    for _ in range(args.count):
        t = table.next_after(t)  # type: ignore[arg-type]
        if t is None:
            break
        print(iso(t, tz))
    return 0
