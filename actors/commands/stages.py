"""`porch stages`, `porch pipeline check` and `porch reload-stages`: what stages exist, whether
a pipeline file holds and the running system can run it, and loading new local stages."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from actors.commands.common import (
    add_data_dir,
    connect,
    data_dir_of,
    network_of,
    print_json,
    settings_of,
    table,
)
from actors.errors import ActorError, UsageError
from stages.errors import StageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "stages",
        help="list the registered stages (built-ins, entry points, [stages] of porch.toml)",
    )
    cmd.add_argument("--config", metavar="FILE", help="porch.toml (env PORCH_CONFIG)")
    cmd.set_defaults(func=cmd_stages)
    pipe = sub.add_parser("pipeline", help="work with pipeline files")
    pipe_sub = pipe.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")
    check = pipe_sub.add_parser(
        "check",
        help="check a pipeline TOML file, print its steps, and say whether the running"
        " orchestrator and workers can run it",
    )
    add_data_dir(check)
    check.add_argument("file", metavar="FILE.toml")
    check.set_defaults(func=cmd_check)
    reload = sub.add_parser(
        "reload-stages",
        help="ask the orchestrator and every worker to load the [stages] of their config file"
        " again, and print what each now runs",
    )
    add_data_dir(reload)
    reload.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="wait this long for every answer (default 60)")  # fmt: skip
    reload.add_argument("--json", action="store_true", help="the answers as one JSON document")
    reload.set_defaults(func=cmd_reload)


def cmd_stages(args: argparse.Namespace) -> int:
    from actors.shared.stagecfg import registry_from

    registry = registry_from(settings_of(args, "stages").stage_set())
    rows = [
        [name, registry.get(name).partitioning.value, registry.get(name).description]
        for name in registry.names()
    ]
    print("\n".join(table(("STAGE", "PARTITIONING", "DESCRIPTION"), rows)))
    return 0


def _pipeline_stages(path: Path) -> dict[str, str]:
    """The pipeline file's own ``[stages]`` table (its form is checked by the loader)."""
    try:
        table_ = tomllib.loads(path.read_text(encoding="utf-8")).get("stages", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}  # the loader names what is wrong with the file
    return {str(k): str(v) for k, v in table_.items()} if isinstance(table_, dict) else {}


def cmd_check(args: argparse.Namespace) -> int:
    from actors.api.localstages import Origins, running_refusal
    from actors.read.stagesets import stage_sets
    from actors.shared.stagecfg import registry_from
    from bus.client import hub_running
    from stages.pipeline import load

    settings = settings_of(args, "")
    path = Path(args.file)
    try:
        pipeline = load(path, registry=registry_from(settings.stage_set()))
    except StageError as exc:
        raise UsageError(str(exc)) from exc
    print(
        f"pipeline {pipeline.name!r}: {len(pipeline.steps)} steps, outputs {', '.join(pipeline.outputs)}"
    )
    for step in pipeline.steps:
        after = f" after {', '.join(step.after)}" if step.after else ""
        keys = f" config: {', '.join(sorted(step.config))}" if step.config else ""
        print(f"  {step.id}: {step.stage} reads {step.source}{after}{keys}")
    endpoints, _ = network_of(args)
    data_dir = data_dir_of(args)
    if endpoints.is_local() and not hub_running(data_dir):
        print(f"no porch system runs for data dir {data_dir}: checked the file only")
        return 0
    with connect(args) as client:
        sets = stage_sets(client)
    origins = Origins(
        config_file=str(settings.file) if settings.file else None,
        config={name: v.value for name, v in settings.stages.items()},
        pipeline=_pipeline_stages(path),
    )
    refusal = running_refusal(dict.fromkeys(s.stage for s in pipeline.steps), sets, origins)
    if refusal is not None:
        raise UsageError(f"pipeline {pipeline.name!r}: {refusal}")
    workers = sets.announced()
    print(
        f"the running system can run it: the orchestrator and {len(workers)} of"
        f" {len(sets.workers)} workers know every stage"
        if all(all(s.stage in names for s in pipeline.steps) for names in workers.values())
        else f"the running system can run it: the orchestrator and at least one worker know"
        f" each stage (not every one of the {len(sets.workers)} workers knows them all)"
    )
    return 0


def _change(now: list[str], was: list[str] | None) -> str:
    if was is None:
        return ""
    added = sorted(set(now) - set(was))
    gone = sorted(set(was) - set(now))
    words = [f"+{s}" for s in added] + [f"-{s}" for s in gone]
    return f" ({' '.join(words)})" if words else " (unchanged)"


def cmd_reload(args: argparse.Namespace) -> int:
    from actors.api.localstages import reload_stages

    answers: list[dict[str, Any]] = []

    def each(answer: dict[str, Any], was: list[str] | None) -> None:
        answers.append(answer)
        if args.json:
            return
        stages = sorted(answer["stages"])
        if answer["error"]:
            print(
                f"{answer['actor']}: kept its {len(stages)} stages: {answer['error']}", flush=True
            )
        else:
            print(f"{answer['actor']}: {len(stages)} stages{_change(stages, was)}", flush=True)

    with connect(args) as client:
        silent = reload_stages(client, timeout_s=args.timeout, each=each)
    failed = [a for a in answers if a["error"]]
    if args.json:
        print_json({
            "answers": [
                {k: a[k] for k in ("actor", "role", "stages", "config", "error")} for a in answers
            ],
            "silent": silent,
        })  # fmt: skip
    if failed:
        first = failed[0]
        raise ActorError(
            f"{len(failed)} of {len(answers) + len(silent)} kept their stages;"
            f" {first['actor']}: {first['error']}"
        )
    if silent:
        raise ActorError(
            f"{', '.join(silent)} did not answer within {args.timeout:g} s (is it running?)"
        )
    return 0
