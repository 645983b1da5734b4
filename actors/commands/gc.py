"""`porch gc`: what the retention policy would remove of finished executions; ``--yes`` removes it.

Each removal is appended as ``ArtifactsRemoved`` through the hub, acknowledged, before any file
is deleted, so the log always knows at least what is gone; a deletion cut short is redone by the
orchestrator at its next start. Needs a running hub for that reason, even for the dry run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any

from actors.api.settings import config_path, retention_policy, s3_options_of
from actors.commands.common import (
    add_data_dir,
    connect,
    data_dir_of,
    network_of,
    print_json,
    settings_of,
    table,
)
from actors.commands.numbers import real, whole
from actors.errors import UsageError
from bus.client import hub_running
from bus.events import ArtifactsRemoved
from store import objstore, retention

GC_REASON = "porch gc"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gc = sub.add_parser(
        "gc",
        help="show the artifacts retention would remove of finished executions; --yes removes",
        description="Show what the retention policy ([retention] in the config file, or the"
        " defaults: the newest 3 finished executions of each pipeline and all of the last"
        " 7 days kept whole, outputs kept) would remove, with sizes; --yes removes it.",
    )
    add_data_dir(gc)
    gc.add_argument("--yes", action="store_true", help="remove them (default: only show)")
    gc.add_argument("--keep-last", type=whole(0), metavar="N",
                    help="keep everything of the newest N finished executions per pipeline")  # fmt: skip
    gc.add_argument("--keep-days", type=real(0), metavar="D",
                    help="keep everything of executions that finished in the last D days")  # fmt: skip
    gc.add_argument("--outputs", action="store_true",
                    help="remove the final outputs too, not only intermediates")  # fmt: skip
    gc.add_argument("--json", action="store_true", help="print the removals as JSON")
    gc.set_defaults(func=cmd_gc)


def _policy(args: argparse.Namespace) -> retention.RetentionPolicy:
    environ = dict(os.environ)
    policy = retention_policy(config_path(args.config, environ), environ)
    overrides: dict[str, Any] = {}
    if args.keep_last is not None:
        overrides["keep_last"] = args.keep_last
    if args.keep_days is not None:
        overrides["keep_days"] = args.keep_days
    if args.outputs:
        overrides["remove_outputs"] = True
    try:
        return dataclasses.replace(policy, **overrides)
    except ValueError as exc:
        raise UsageError(f"gc: {exc}") from None


def cmd_gc(args: argparse.Namespace) -> int:
    from actors.read.executions import fold_log, human_bytes
    from store import artifacts  # pandas and pyarrow: only for this command, not every command

    policy = _policy(args)
    environ = dict(os.environ)
    objstore.configure(s3_options_of(settings_of(args, "gc"), environ))  # s3:// checkpoints
    endpoints, _ = network_of(args)
    root = data_dir_of(args)
    if endpoints.is_local() and not hub_running(root):
        raise UsageError(
            f"gc: no hub runs for data dir {root}; start `porch up` or `porch hub`"
            " (each removal is logged as an event first)"
        )
    with connect(args) as client:
        now = time.time()
        removals = retention.decide(fold_log(client), policy, now, reason=GC_REASON)
        sized = [(r, artifacts.disk_bytes(r.paths)) for r in removals]
        total = sum(size for _, size in sized)
        if not args.json:
            _show(sized, total, now, policy)
        if not args.yes:
            if args.json:
                print_json(_as_json(sized, total, now, policy, removed=False))
            elif removals:
                print("dry run: nothing removed; `porch gc --yes` removes them")
            return 0
        freed = 0
        for removal, size in sized:
            seq = client.append(
                ArtifactsRemoved(
                    execution_id=removal.execution_id,
                    steps=list(removal.steps),
                    bytes=size,
                    reason=removal.reason,
                    finals=removal.finals,
                )
            )  # acknowledged: durable in the log before a file goes
            artifacts.remove_paths(removal.paths, inside=removal.root)
            freed += size
            if not args.json:
                print(
                    f"removed {removal.execution_id}: {human_bytes(size)} (seq {seq})", flush=True
                )
    if args.json:
        print_json(_as_json(sized, total, now, policy, removed=True))
    else:
        print(f"removed the artifacts of {len(sized)} executions, {human_bytes(freed)}")
    return 0


def _what(removal: retention.Removal) -> str:
    steps = ", ".join(removal.steps)
    if removal.finals:
        return f"{steps} + outputs" if steps else "outputs"
    return steps


def _show(
    sized: list[tuple[retention.Removal, int]],
    total: int,
    now: float,
    policy: retention.RetentionPolicy,
) -> None:
    from actors.read.executions import human_bytes

    if not sized:
        print(f"nothing to remove ({policy.describe()})")
        return
    rows = [[r.execution_id, _age(r.age_s(now)), human_bytes(size), _what(r)] for r, size in sized]
    print("\n".join(table(("EXECUTION", "AGE", "SIZE", "REMOVES"), rows, right=("AGE", "SIZE"))))
    print(f"total: {human_bytes(total)} of {len(sized)} executions ({policy.describe()})")


def _as_json(
    sized: list[tuple[retention.Removal, int]],
    total: int,
    now: float,
    policy: retention.RetentionPolicy,
    *,
    removed: bool,
) -> dict[str, Any]:
    return {
        "policy": dataclasses.asdict(policy),
        "removed": removed,
        "total_bytes": total,
        "removals": [
            {
                "execution_id": r.execution_id,
                "pipeline": r.pipeline,
                "steps": list(r.steps),
                "outputs": r.finals,
                "bytes": size,
                "age_s": round(r.age_s(now), 1),
                "reason": r.reason,
            }
            for r, size in sized
        ],
    }


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86_400:.1f}d"
