"""`porch run`, `status`, `history`, `stats`, `pause`, `resume`, `cancel`: executions from a shell."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from actors.api.door import MAX_ATTEMPTS_MAX, PARTITIONS_MAX
from actors.commands.common import (
    add_data_dir,
    connect,
    data_dir_of,
    network_of,
    porch_command,
    print_json,
    reading,
    say,
    table,
)
from actors.commands.execution_text import execution_lines, progress_text
from actors.commands.numbers import whole
from actors.errors import ActorError, NotRunningError, UsageError
from bus.events import CancelRequested, ExecutionRequested, PauseRequested, ResumeRequested

TERMINAL = ("completed", "failed", "cancelled", "timed_out")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="start an execution of a pipeline over a parquet file")
    add_data_dir(run)
    run.add_argument("input", metavar="INPUT.parquet", help="the input data")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--stages", help="comma-separated stage names (default: the four built-ins)")
    group.add_argument("--pipeline", metavar="FILE.toml", help="a pipeline file (list or DAG)")
    run.add_argument("--mode", choices=["sequential", "parallel", "hybrid"], default="sequential")
    run.add_argument("--id", dest="execution_id", help="execution id (default: generated)")
    run.add_argument(
        "--resume-from", metavar="EXECUTION_ID", help="reuse that execution's checkpoints"
    )
    run.add_argument(
        "--no-checkpoints", action="store_true", help="remove intermediate artifacts at the end"
    )
    run.add_argument("--partitions", type=whole(0, PARTITIONS_MAX, note="0: one per worker"),
                     default=0, help="input partitions (default: one per worker)")  # fmt: skip
    run.add_argument("--max-attempts", type=whole(1, MAX_ATTEMPTS_MAX), default=2,
                     help="attempts per task for transient failures (default 2)")  # fmt: skip
    run.add_argument(
        "--wait", action="store_true", help="show progress until it ends; exit 1 if it fails"
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print only JSON on stdout: the final status with --wait, else the id and seq",
    )
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="one execution's status per stage (default: the latest)")
    add_data_dir(status)
    status.add_argument("execution_id", nargs="?")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    history = sub.add_parser("history", help="recent executions")
    add_data_dir(history)
    history.add_argument("--limit", type=whole(1), default=20)
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)

    stats = sub.add_parser("stats", help="per-stage statistics over all executions")
    add_data_dir(stats)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)

    for name, helptext in (
        ("pause", "stop new dispatches of an execution"),
        ("resume", "continue a paused execution"),
        ("cancel", "stop an execution and abort its running tasks"),
    ):
        cmd = sub.add_parser(name, help=helptext)
        add_data_dir(cmd)
        cmd.add_argument("execution_id", nargs="?", help="default: the only active execution")
        cmd.set_defaults(func=cmd_control, action=name)


def _request(args: argparse.Namespace, *, input_here: bool) -> ExecutionRequested:
    """The request the flags describe, its input checked when it is on this host."""
    from actors.api.door import check_input

    path = (
        check_input(args.input)
        if input_here or str(args.input).startswith("s3://")
        else str(Path(args.input).expanduser().resolve())
    )
    steps: list[dict[str, Any]] = []
    stages: list[str] = [
        "data_cleaning",
        "feature_engineering",
        "data_aggregation",
        "data_validation",
    ]
    if args.pipeline:
        from actors.commands.common import local_registry
        from stages.errors import StageError
        from stages.pipeline import load

        try:  # the stages of the config file are known here too, as the actors know them
            pipeline = load(Path(args.pipeline), registry=local_registry(args))
        except StageError as exc:
            raise UsageError(str(exc)) from exc
        steps = pipeline.to_dict()["steps"]
        stages = [s["stage"] for s in steps]
    elif args.stages:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        if not stages:
            raise UsageError("--stages names no stage")
    return ExecutionRequested(
        execution_id=args.execution_id
        or f"ex-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        stages=stages,
        steps=steps,
        input_data=path,
        mode=args.mode,
        resume_from=args.resume_from,
        save_checkpoints=not args.no_checkpoints,
        partitions=args.partitions,
        max_attempts=args.max_attempts,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from actors.api import door

    endpoints, _ = network_of(args)
    request = _request(args, input_here=endpoints.is_local())
    eid = request.execution_id
    with connect(args) as client:
        root = data_dir_of(args)
        if args.wait and endpoints.is_local() and not door.orchestrator_running(root):
            raise NotRunningError(
                f"no orchestrator runs for data dir {root}, so nothing would start the execution:"
                " start `porch up` (or `porch orchestrator`), or run without --wait to queue it"
            )
        door.check_ids(client, args.execution_id, request.resume_from)
        door.check_stages(client, request.stages or door.stages_of({"steps": request.steps}))
        seq = client.append(request)
        if not args.wait:
            if args.json:
                print_json({"execution_id": eid, "seq": seq})
            else:
                print(f"execution {eid} requested (seq {seq})")
            return 0
        say(f"execution {eid} requested (seq {seq})", json_out=args.json)
        try:
            view = wait_for(client, eid, seq, show=not args.json)
        except KeyboardInterrupt:
            # Ctrl-C stops the watching, not the execution: say so, and how to stop that too
            print(
                f"porch: stopped watching; execution {eid} goes on. To cancel it: "
                + porch_command(args, "cancel", eid),
                file=sys.stderr,
                flush=True,
            )
            return 130
    if args.json:
        print_json(view)
    return 0 if view["status"] == "completed" else 1


def wait_for(client: Any, execution_id: str, from_seq: int, *, show: bool = True) -> dict[str, Any]:
    """Follow the execution until it ends, printing each stage's progress; returns its view."""
    from actors.read.executions import execution_view, fold_log, fold_record
    from actors.read.workers import ALIVE_S, WorkerSilence
    from store.projections import executions as folds

    # the newest snapshot and the tail up to the head, then whatever comes after it
    state = fold_log(client) if from_seq > 1 else folds.ExecutionsState()
    shown: dict[str, str] = {}
    started = time.monotonic()
    silence = WorkerSilence()
    with client.subscribe(state.last_seq + 1, types=folds.TYPES | silence.TYPES) as sub:
        while True:
            for record in sub.receive(500):
                fold_record(record, state)
                silence.see([record])
            silence.see(sub.take_live())
            if silence.due():
                print(f"porch: no worker is alive (none heard for {ALIVE_S:g} s): execution"
                      f" {execution_id} waits for one; start `porch worker` or `porch up`",
                      file=sys.stderr, flush=True)  # fmt: skip
            ex = state.executions.get(execution_id)
            if ex is None:
                continue
            view = execution_view(ex)
            if show:
                for step_id, step in view["steps"].items():
                    doing = progress_text(step)  # the stage's last word on how far it is
                    line = f"{step['status']} {step['parts_done']}/{step['parts']} {doing}"
                    if shown.get(step_id) != line:
                        shown[step_id] = line
                        rows = (
                            f", {step['records_out']} rows out"
                            if step["status"] == "completed"
                            else ""
                        )
                        parts = (
                            f" ({step['parts_done']}/{step['parts']} parts)"
                            if step["parts"] > 1
                            else ""
                        )
                        print(
                            f"[{time.monotonic() - started:7.1f}s] {step_id}: {step['status']}{parts}{rows}"
                            + (f" {doing}" if doing else ""),
                            flush=True,
                        )
            if ex.status in TERMINAL:
                if show:
                    print("\n".join(execution_lines(view)), flush=True)
                return view


def _state(args: argparse.Namespace, wanted: Any = None) -> Any:
    from actors.read.executions import fold_log

    with reading(args) as reader:
        return fold_log(reader, wanted=wanted)


def cmd_status(args: argparse.Namespace) -> int:
    from actors.dashboard.info import dashboard_url
    from actors.read.executions import execution_view
    from actors.read.model import execution_from_log
    from store.projections.execstate import latest

    state = _state(args, lambda s: [args.execution_id or latest(s) or ""])
    dashboard = dashboard_url(data_dir_of(args))
    if not state.order and not state.evicted:
        raise ActorError(
            "no executions in the log yet" + (f" (dashboard: {dashboard})" if dashboard else "")
        )
    eid = args.execution_id or latest(state) or ""
    ex = state.executions.get(eid)
    if ex is None and state.evicted:  # finished long ago: its history is in the log still
        with reading(args) as reader:
            ex = execution_from_log(reader, eid)
    if ex is None:
        raise UsageError(f"no execution {eid!r} in the log")
    view = execution_view(ex)
    if args.json:
        print_json(view)
    else:
        print("\n".join(execution_lines(view)))
        if dashboard:
            print(f"dashboard: {dashboard}#/execution/{eid}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from actors.read.executions import execution_view
    from store.projections.execstate import newest

    state = _state(args, lambda s: newest(s, max(1, args.limit)))
    views = [
        execution_view(state.executions[e])
        for e in reversed(newest(state, max(1, args.limit)))
        if e in state.executions
    ]
    if args.json:
        print_json(views)
        return 0
    if not views:
        print("no executions in the log yet")
        return 0
    rows = [
        [
            v["execution_id"], v["status"], v["mode"],
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["started_ts"]))
            if v["started_ts"] else "-",
            v["records_processed"], f"{v['duration_s']:.2f}",
        ]
        for v in views
    ]  # fmt: skip
    header = ("EXECUTION", "STATUS", "MODE", "STARTED", "RECORDS", "DURATION_S")
    print("\n".join(table(header, rows, right=("DURATION_S",))))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from actors.read.executions import fold_log, stage_statistics

    rows: dict[str, list[list[Any]]] = {}  # of the executions not decoded, from the snapshot
    with reading(args) as reader:
        state = fold_log(reader, wanted=lambda s: (), rows=rows)
    stats = stage_statistics(state.executions.values(), (r for rs in rows.values() for r in rs))
    if args.json:
        print_json(stats)
        return 0
    if not stats:
        print("no stage has run yet")
        return 0
    rows = [
        [name, s["runs"], s["failures"], f"{s['mean_s']:.3f}", f"{s['p50_s']:.3f}",
         f"{s['p95_s']:.3f}", s["records"]]
        for name, s in stats.items()
    ]  # fmt: skip
    header = ("STAGE", "RUNS", "FAILURES", "MEAN_S", "P50_S", "P95_S", "RECORDS")
    print("\n".join(table(header, rows, right=("MEAN_S", "P50_S", "P95_S"))))
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from actors.api.door import check_control
    from actors.read.executions import fold_log

    with connect(args) as client:
        eid = args.execution_id
        if not eid:
            state = fold_log(client)
            active = [
                e
                for e in state.order
                if state.executions[e].status in ("requested", "running", "paused")
            ]
            if len(active) != 1:
                raise UsageError(f"{args.action}: name the execution ({len(active)} are active)")
            eid = active[0]
        check_control(client, args.action, eid)
        event = {"pause": PauseRequested, "resume": ResumeRequested, "cancel": CancelRequested}[
            args.action
        ]
        seq = client.append(event(execution_id=eid))
    print(f"{args.action} of {eid} requested (seq {seq})")
    return 0
