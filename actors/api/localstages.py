"""Local stages against a running system: can its orchestrator and workers run these stages
(and if not, the step that fixes it), and asking them to reload their ``[stages]``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from actors.errors import NotRunningError
from actors.read.stagesets import stage_sets
from bus.client import Client
from bus.events import StagesReloadRequested
from store.projections.stagesets import StageSetsState

RELOAD_HINT = "run `porch reload-stages`"


@dataclass(frozen=True, slots=True)
class Origins:
    """Where this host finds each local stage: the config file's ``[stages]`` and a
    pipeline file's own ``[stages]`` (name -> ``module:function``)."""

    config_file: str | None
    config: Mapping[str, str]
    pipeline: Mapping[str, str]


def running_refusal(stages: Iterable[str], sets: StageSetsState, origins: Origins) -> str | None:
    """Why the running system cannot run these stages (each known to the orchestrator and to
    at least one live worker), with the step that fixes it; None if it can."""
    if sets.orchestrator is None:
        return (
            "the orchestrator has not said which stages it runs (it does once live):"
            " start the system with `porch up`, or check again in a moment"
        )
    if not sets.workers:
        return "no worker is running: start them with `porch up` (or `porch worker`)"
    announced = sets.announced()
    if not announced:
        return (
            "no running worker has said which stages it runs yet (each does once it has"
            " loaded them): check again in a moment"
        )
    for stage in stages:
        by_orchestrator = stage in sets.orchestrator
        by_worker = any(stage in names for names in announced.values())
        if by_orchestrator and by_worker:
            continue
        who = (
            "orchestrator and workers"
            if not by_orchestrator and not by_worker
            else "orchestrator"
            if not by_orchestrator
            else "workers"
        )
        return missing(stage, who, origins)
    return None


def missing(stage: str, who: str, origins: Origins) -> str:
    """A stage the running ``who`` do not know, and the step that makes them know it."""
    verb = "has" if who == "orchestrator" else "have"
    file = origins.config_file or "porch.toml (the config file every actor reads)"
    if stage in origins.config:
        return (
            f"stage {stage!r} is under [stages] in {file}, but the running {who} {verb} not"
            f" loaded it: {RELOAD_HINT}"
        )
    if stage in origins.pipeline:
        return (
            f"stage {stage!r} is not registered with the running {who} (a pipeline file's"
            f" [stages] is read only where the file is loaded): add"
            f' `{stage} = "{origins.pipeline[stage]}"` under [stages] in {file} (its folder'
            f" under [stages] path) and {RELOAD_HINT}"
        )
    return (
        f"stage {stage!r} is not registered with the running {who}: add"
        f' `{stage} = "module:function"` under [stages] in {file}, or install the package'
        f" that provides it where they run, and {RELOAD_HINT}"
    )


def reload_stages(
    client: Client, *, timeout_s: float, each: Callable[[dict[str, Any], list[str] | None], None]
) -> list[str]:
    """Ask the orchestrator and every live worker to reload their local ``[stages]``; call
    ``each(answer, stages before)`` as each answers; return those that did not answer within
    ``timeout_s`` (an actor that stops meanwhile is not waited for)."""
    head = client.head()
    before = stage_sets(client)
    waiting = set(before.workers) | ({"orchestrator"} if before.orchestrator is not None else set())
    if not waiting:
        raise NotRunningError(
            "no orchestrator or worker of this system has said which stages it runs:"
            " nothing to reload (start them with `porch up`)"
        )
    sub = client.subscribe(head + 1, types=["StagesLoaded", "WorkerStopped", "WorkerLost"])
    try:
        request = StagesReloadRequested(reason="porch reload-stages")
        client.append(request)
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            for record in sub.receive(200):
                fields = record.fields()
                if fields["type"] != "StagesLoaded":
                    waiting.discard(fields["worker"])
                elif fields["request_id"] == request.id:
                    waiting.discard(fields["actor"])
                    was = (
                        before.orchestrator
                        if fields["role"] == "orchestrator"
                        else before.known.get(fields["actor"])
                    )
                    each(fields, was)
    finally:
        sub.close()
    return sorted(waiting)
