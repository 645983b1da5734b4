"""Schedule operations any client performs through the hub: add, trigger, the checks on remove."""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from actors.errors import ActorError, UsageError
from bus.events import ScheduleAdded, ScheduleFired, ScheduleUpdated


def add_schedules(
    client: Any, configs: list[dict[str, Any]], *, replace: bool, own_stages: Collection[str] = ()
) -> list[str]:
    """Append ScheduleAdded (or ScheduleUpdated with ``replace``) for checked configs. Their
    stages must be built in, in ``own_stages`` or announced by a live worker (see
    `door.check_stages`)."""
    from actors.api.door import check_stages, stages_of
    from actors.read.schedules import fold_schedules
    from actors.scheduler.specs import check_dependencies

    core = fold_schedules(client)
    known = core.state.schedules
    graph = {sid: list(s.config.get("dependencies", [])) for sid, s in known.items()}
    for config in configs:
        graph[config["schedule_id"]] = config["dependencies"]
    lines = []
    for config in configs:
        sid = config["schedule_id"]
        check_dependencies(sid, config["dependencies"], graph)
        if sid in known and not replace:
            raise UsageError(f"schedule {sid} exists; pass --replace to update it")
    stages = [s for config in configs for s in stages_of(config["execution_config"])]
    check_stages(client, stages, known=own_stages)
    for config in configs:
        sid = config["schedule_id"]
        if sid in known and known[sid].config == config:
            lines.append(f"schedule {sid} is unchanged")
            continue
        event = (ScheduleUpdated if sid in known else ScheduleAdded)(schedule_id=sid, config=config)
        seq = client.append(event)
        lines.append(f"{'updated' if sid in known else 'added'} schedule {sid} (seq {seq})")
    return lines


def refuse_removing_an_upstream(core: Any, schedule_id: str) -> None:
    dependents = sorted(
        sid
        for sid, s in core.state.schedules.items()
        if schedule_id in s.config.get("dependencies", [])
    )
    if dependents:
        raise UsageError(
            f"schedule {schedule_id} is an upstream of {', '.join(dependents)}; remove or change those first"
        )


def trigger(client: Any, schedule_id: str, override: dict[str, Any] | None) -> str:
    """Fire a schedule by hand: a ScheduleFired the scheduler queues like any other."""
    from actors.read.schedules import fold_schedules
    from actors.scheduler.specs import EXECUTION_KEYS, _execution

    core = fold_schedules(client)
    schedule = core.state.schedules.get(schedule_id)
    if schedule is None:
        raise ActorError(f"no schedule {schedule_id!r}")
    override = dict(override or {})
    unknown = sorted(set(override) - set(EXECUTION_KEYS))
    if unknown:
        raise UsageError(
            f"config_override: unknown key {unknown[0]!r}; known: {', '.join(EXECUTION_KEYS)}"
        )
    if "config_overrides" in override:  # the orchestrator API's name for it
        override["config"] = override.pop("config_overrides")
    if override:
        merged = {**schedule.config.get("execution_config", {}), **override}
        checked = _execution(merged, Path.cwd())
        override = {k: checked[k] for k in checked if k in override or k in ("stages", "steps")}
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    eid = f"{schedule_id}-manual-{stamp}-{secrets.token_hex(3)}"
    client.append(
        ScheduleFired(
            schedule_id=schedule_id,
            fire_time=now,
            key=f"{schedule_id}@manual-{eid}",
            execution_id=eid,
            manual=True,
            config_override=override,
        )
    )
    return eid
