"""A worker's local stages over time: what it said it runs, a reload waiting for its runner to
be idle, and the stages it had while a runner with the reloaded ones starts.

The runner says which stages it loaded; the worker says so too (``StagesLoaded``) at start and
whenever that changes. On ``StagesReloadRequested`` it reads its own config's ``[stages]``
again (never code an event names), lets the tasks in the runner finish, hands it no new ones,
and starts a runner with the reloaded stages; if they do not load, the runner dies and comes
back with the ones it had, and the worker says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final, Protocol

from actors.errors import ActorError
from actors.shared.stagecfg import StageLoader, StageSet
from bus.events import StagesLoaded

log = logging.getLogger("porch.worker")
RELOAD: Final = "StagesReloadRequested"


class RunnerLike(Protocol):
    stages: StageSet
    ready: bool

    def restart(self) -> None: ...


@dataclass(slots=True)
class StageSwap:
    worker: str
    reload: StageLoader | None = None
    announced: list[str] | None = None  # the stages it last said it runs
    pending: tuple[StageSet, str] | None = None  # reloaded stages and the request's id
    before: tuple[StageSet, str] | None = None  # the stages it had, while the new ones load

    @property
    def holding(self) -> bool:
        """Tasks wait in the worker's queue: a reload waits for the runner to be idle."""
        return self.pending is not None

    def requested(self, request_id: str, runner: RunnerLike) -> StagesLoaded | None:
        """Read the local config again; a config that does not read is said at once."""
        try:
            stages = self.reload() if self.reload is not None else runner.stages
        except ActorError as exc:
            log.error("worker %s: stages not reloaded: %s", self.worker, exc)
            return self._said(runner, self.announced or [], request_id, str(exc))
        self.pending = (stages, request_id)
        return None

    def swap_if_idle(self, runner: RunnerLike, *, idle: bool) -> None:
        """Start a runner with the reloaded stages once the old one runs nothing."""
        if self.pending is None or self.before is not None or not idle:
            return
        stages, request_id = self.pending
        self.pending = None
        self.before = (runner.stages, request_id)
        runner.stages = stages
        runner.restart()

    def runner_said(self, runner: RunnerLike, frame: dict[str, Any]) -> StagesLoaded | None:
        """The runner's first frame: the stages it loaded (said when they changed, or when a
        reload asked), or why it could not load them."""
        request_id = self.before[1] if self.before is not None else ""
        if frame.get("ready"):
            runner.ready = True
            self.before = None
            names = sorted(str(n) for n in frame.get("stages", []))
            if names == self.announced and not request_id:
                return None
            self.announced = names
            return self._said(runner, names, request_id)
        error = str(frame.get("error", "the stages did not load"))
        if self.before is None:
            raise ActorError(f"worker {self.worker}: its runner cannot load the stages: {error}")
        runner.stages = self.before[0]  # the runner exits; its restart brings these back
        self.before = None
        log.error("worker %s: stages not reloaded: %s", self.worker, error)
        return self._said(runner, self.announced or [], request_id, error)

    def _said(
        self, runner: RunnerLike, names: list[str], request_id: str, error: str = ""
    ) -> StagesLoaded:
        return StagesLoaded(
            actor=self.worker,
            role="worker",
            stages=names,
            config=runner.stages.config,
            request_id=request_id,
            error=error,
        )
