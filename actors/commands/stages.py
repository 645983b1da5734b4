"""`porch stages` and `porch pipeline check`: what stages exist, and whether a pipeline file holds."""

from __future__ import annotations

import argparse

from actors.commands.common import table
from actors.errors import UsageError
from stages.errors import StageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("stages", help="list the registered stages (built-ins and entry points)")
    cmd.set_defaults(func=cmd_stages)
    pipe = sub.add_parser("pipeline", help="work with pipeline files")
    pipe_sub = pipe.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")
    check = pipe_sub.add_parser("check", help="check a pipeline TOML file and print its steps")
    check.add_argument("file", metavar="FILE.toml")
    check.set_defaults(func=cmd_check)


def cmd_stages(args: argparse.Namespace) -> int:
    from stages.registry import Registry  # pandas only for the commands that need it

    try:
        registry = Registry.default()
    except StageError as exc:
        raise UsageError(str(exc)) from exc
    rows = [
        [name, registry.get(name).partitioning.value, registry.get(name).description]
        for name in registry.names()
    ]
    print("\n".join(table(("STAGE", "PARTITIONING", "DESCRIPTION"), rows)))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stages.pipeline import load

    try:
        pipeline = load(Path(args.file))
    except StageError as exc:
        raise UsageError(str(exc)) from exc
    print(
        f"pipeline {pipeline.name!r}: {len(pipeline.steps)} steps, outputs {', '.join(pipeline.outputs)}"
    )
    for step in pipeline.steps:
        after = f" after {', '.join(step.after)}" if step.after else ""
        keys = f" config: {', '.join(sorted(step.config))}" if step.config else ""
        print(f"  {step.id}: {step.stage} reads {step.source}{after}{keys}")
    return 0
