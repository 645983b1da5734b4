"""``porch orchestrator``: folds the log into executions, decides, and hands tasks to workers.

It runs the shared actor loop (`actors.shared.loop`) around `OrchestratorCore`, and does the
I/O the core asks for. Startup loads the newest snapshot and folds the log after it, so a
restarted orchestrator continues every running execution where the log left it. Then, live:

1. fold each event in seq order;
2. decide (the core) and send the decisions as events (ids derived from what is decided, so a
   repeat is a duplicate the hub drops);
3. push each task to the workers as its ``StageDispatched`` is sent, without waiting for it to
   come back durable (DESIGN 4, Dispatch): a result logged before its dispatch waits for it in
   the fold, and a dispatch decided again (given up, or after a restart) is the same task id,
   so one completion is accepted; everything else waits until it is back in the log;
4. leases: a pushed task must show signs of life (started, progress, or its worker's heartbeat
   naming it) within ``lease_ms``, or it fails as retryable and runs again as a new attempt;
5. retention: every ``interval_s`` and after each execution ends, the retention policy names
   artifacts of finished executions to remove; each removal is logged as ``ArtifactsRemoved``
   and the files go when that event comes back durable (at start, deletions the log has and
   the disk does not yet are redone).

The stage registry (the built-in stages' pandas, any custom stage's code) is loaded once the
orchestrator is live: folding the log and following the running executions need none of it,
only planning a new execution does. It says which stages it runs (``StagesLoaded``) then, and
again after each ``StagesReloadRequested``, for which it reads its own config's ``[stages]``.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import zmq

from actors.errors import ActorError
from actors.orchestrator.core import (
    LIVE_TYPES,
    TYPES,
    CoreConfig,
    OrchestratorCore,
)
from actors.orchestrator.decide import refused
from actors.shared import loop
from actors.shared.loop import Actor, LoopConfig, Now, Watched
from actors.shared.snapshotter import ORCHESTRATOR, SnapshotPolicy
from actors.shared.stagecfg import StageLoader, StageSet, registry_from
from bus.client import Client, Record
from bus.curve import Authenticator, needs_auth, secure
from bus.endpoints import Endpoints, check
from bus.errors import BusError
from bus.events import Event, StagesLoaded
from bus.protocol import MAX_MESSAGE_BYTES
from store import retention
from store.objstore import is_remote
from store.projections import executions as folds

if TYPE_CHECKING:
    from stages.registry import Registry

log = logging.getLogger("porch.orchestrator")
STAGE_TYPES = frozenset({"StagesReloadRequested", "StagesLoaded"})  # not the core's: local stages


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestratorConfig:
    data_dir: Path
    endpoints: Endpoints
    tasks: str
    checkpoint_dir: Path | str  # a folder, or an s3:// URL (`store.objstore`)
    lease_ms: int = 10_000
    prefetch: int = 8
    dispatch_window: int = 256
    hybrid_min_rows: int = 250_000
    default_workers: int = 2
    insecure: bool = False
    snapshots: SnapshotPolicy = field(default_factory=SnapshotPolicy)
    retention: retention.RetentionPolicy = field(default_factory=retention.RetentionPolicy)

    def __post_init__(self) -> None:
        if not 100 <= self.lease_ms <= 3_600_000:
            raise ValueError(f"lease_ms must be 100..3600000, got {self.lease_ms}")
        check(self.tasks, bind=True, insecure=self.insecure, curve=self.endpoints.curve)

    def core(self) -> CoreConfig:
        return CoreConfig(
            lease_ms=self.lease_ms,
            prefetch=self.prefetch,
            dispatch_window=self.dispatch_window,
            default_workers=self.default_workers,
            retention=self.retention,
        )


# an object store's calls go to this thread: a store that hangs must not stall the loop
_STORE_CALLS = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="porch-store")
MEASURE_WAIT_S: Final = 2.0


def _measure(paths: Sequence[str]) -> int:
    """Bytes under ``paths``; on an object store that does not answer within `MEASURE_WAIT_S`,
    0 (the removal goes ahead, its size unknown)."""
    from store import artifacts  # pyarrow and pandas: loaded with the registry once live

    if not any(is_remote(p) for p in paths):
        return artifacts.disk_bytes(paths)
    job = _STORE_CALLS.submit(artifacts.disk_bytes, paths)
    try:
        return job.result(timeout=MEASURE_WAIT_S)
    except concurrent.futures.TimeoutError:
        log.warning("orchestrator: the object store did not say in %g s how big %s is",
                    MEASURE_WAIT_S, paths[0])  # fmt: skip
        return 0


def _remove(deletion: Any) -> None:
    from store import artifacts

    try:
        gone = artifacts.remove_paths(list(deletion.paths), inside=deletion.inside)
    except (artifacts.ArtifactError, OSError) as exc:
        log.error("orchestrator: cannot remove artifacts of %s: %s", deletion.execution_id, exc)
        return
    if gone:
        names = ", ".join(p.rstrip("/").rsplit("/", 1)[-1] for p in gone)
        log.info("orchestrator: removed artifacts of %s: %s", deletion.execution_id, names)


class Orchestrator(Actor):
    """The orchestrator actor: `OrchestratorCore` plus the tasks socket and artifact files."""

    name = "orchestrator"
    lock = "exclusive"
    types = TYPES | STAGE_TYPES
    live_types = LIVE_TYPES
    snapshot_tag = ORCHESTRATOR

    def __init__(
        self,
        config: OrchestratorConfig,
        stages: Sequence[str] | StageSet = (),
        reload: StageLoader | None = None,
    ) -> None:
        self.config = config
        self.stages = stages if isinstance(stages, StageSet) else StageSet(specs=tuple(stages))
        self.reload = reload
        self.registry: Registry | None = None
        self._said: list[Event] = []  # StagesLoaded to send this turn
        self.core = OrchestratorCore(config.core(), planner=self._plan, measure=_measure)
        self._auth: Authenticator | None = None
        self.tasks: zmq.Socket[Any] | None = None

    # --- the loop's hooks --------------------------------------------------------------------

    def open(self, ctx: zmq.Context[Any], client: Client) -> None:
        tasks = ctx.socket(zmq.PUSH)
        tasks.setsockopt(zmq.SNDHWM, 1)
        tasks.setsockopt(zmq.LINGER, 0)
        curve = self.config.endpoints.curve
        try:
            if needs_auth([self.config.tasks], curve):
                assert curve is not None
                self._auth = Authenticator(ctx, curve)
            secure(tasks, self.config.tasks, curve, server=True)
            tasks.bind(self.config.tasks)
        except (zmq.ZMQError, BusError) as exc:
            tasks.close(linger=0)
            if self._auth is not None:
                self._auth.stop()
                self._auth = None
            raise ActorError(
                f"orchestrator: cannot bind tasks at {self.config.tasks}: {exc}"
            ) from None
        self.tasks = tasks

    def restore(self, body: Any) -> None:
        self.core.restore(body, Now.read())

    def snapshot_body(self) -> Any:
        return self.core.snapshot_body()

    def apply(self, record: Record, fields: dict[str, Any], now: Now) -> None:
        if fields["type"] in STAGE_TYPES:
            if fields["type"] == "StagesReloadRequested" and self.loop.live:
                self._reload_stages(str(fields["id"]))
            return
        self.core.apply(record.seq, fields, record.payload, now)

    def heard(self, record: Record, fields: dict[str, Any], now: Now) -> None:
        self.core.heard(fields, now)

    def went_live(self, position: int, now: Now) -> list[Event]:
        log.info(
            "orchestrator: live at seq %d with %d executions (from snapshot at seq %d)",
            position,
            len(self.core.state.executions),
            self.loop.snapshots.loaded_seq if self.loop.snapshots else 0,
        )
        self.core.go_live(now)
        self.registry = registry_from(self.stages)
        return [self._loaded()]

    def watch(self) -> Iterable[tuple[Watched, int]]:
        if self.tasks is not None and self.core.pushes and self.core.room(Now.read()) > 0:
            return ((self.tasks, zmq.POLLOUT),)
        return ()

    def act(self, ready: dict[Any, int], now: Now) -> None:
        # tasks whose dispatch just came back go out before anything is decided
        if self.core.pushes:
            self._push(now)
        if self.core.deletions:
            self._delete()

    def decide(self, now: Now) -> list[Event]:
        said, self._said = self._said, []
        return [*said, *self.core.decide(now)]

    def sending(self, now: Now) -> None:
        # a task goes to the workers before its dispatch goes to the hub: the runner starts
        # while the hub logs the dispatch (a completion logged first waits for it in the fold)
        if self.core.pushes:
            self._push(now)

    def sent(self, event: Event, payload: bytes) -> None:
        self.core.going(event, payload)

    def forget(self, event_ids: list[str], now: Now) -> None:
        self.core.forget(event_ids)

    def next_due(self, now: Now) -> float:
        return self.core.next_due(now)

    def too_big(self, event: Event, size: int) -> Event | None:
        return self.core.too_big(event, size, MAX_MESSAGE_BYTES)

    def close(self) -> None:
        if self.tasks is not None:
            self.tasks.close(linger=0)
        if self._auth is not None:
            self._auth.stop()

    # --- local stages ------------------------------------------------------------------------

    def _reload_stages(self, request_id: str) -> None:
        """Read the config's ``[stages]`` again and import them anew; on any error keep what
        runs, and say why."""
        try:
            stages = self.reload() if self.reload is not None else self.stages
            registry = registry_from(stages, reimport=True)
        except ActorError as exc:
            log.error("orchestrator: stages not reloaded: %s", exc)
            self._said.append(self._loaded(request_id, error=str(exc)))
            return
        self.stages, self.registry = stages, registry
        log.info("orchestrator: stages reloaded: %s", ", ".join(registry.names()))
        self._said.append(self._loaded(request_id))

    def _loaded(self, request_id: str = "", error: str = "") -> StagesLoaded:
        assert self.registry is not None
        return StagesLoaded(
            actor="orchestrator",
            role="orchestrator",
            stages=self.registry.names(),
            config=self.stages.config,
            request_id=request_id,
            error=error,
        )

    # --- I/O the core asks for ---------------------------------------------------------------

    def _plan(
        self, ex: folds.ExecutionState, workers: int, earlier: folds.ExecutionState | None
    ) -> Event:
        from actors.orchestrator.planning import PlanRefusedError, plan_execution

        assert self.registry is not None, "planning before the registry is loaded"
        try:
            event = plan_execution(
                ex.request,
                registry=self.registry,
                checkpoint_dir=self.config.checkpoint_dir,
                workers=workers,
                hybrid_min_rows=self.config.hybrid_min_rows,
                earlier=earlier,
            )
        except PlanRefusedError as exc:
            return refused(ex.execution_id, str(exc))
        except Exception as exc:
            log.exception("orchestrator: planning execution %s failed", ex.execution_id)
            return refused(ex.execution_id, f"cannot plan it: {type(exc).__name__}: {exc}")
        for note in getattr(event, "plan", {}).get("notes", []):
            log.warning("orchestrator: execution %s: %s", ex.execution_id, note)
        return event

    def _push(self, now: Now) -> None:
        assert self.tasks is not None
        while self.core.pushes:
            bundle = self.core.take_bundle(now)
            if not bundle:
                return
            try:
                self.tasks.send_multipart([payload for _, _, payload in bundle], zmq.NOBLOCK)
            except zmq.Again:
                self.core.put_back(bundle)
                return
            self.core.pushed(bundle, now)

    def _delete(self) -> None:
        """Delete what the log says is removed (again, harmlessly, if it is gone)."""
        from store import artifacts

        deletions, self.core.deletions = self.core.deletions, []
        for deletion in deletions:
            if is_remote(deletion.inside):
                _STORE_CALLS.submit(_remove, deletion)  # logged in the log already: redone at start
                continue
            try:
                gone = artifacts.remove_paths(list(deletion.paths), inside=deletion.inside)
            except (artifacts.ArtifactError, OSError) as exc:
                log.error(
                    "orchestrator: cannot remove artifacts of %s: %s", deletion.execution_id, exc
                )
                continue
            if gone:
                names = ", ".join(Path(p).name for p in gone)
                log.info("orchestrator: removed artifacts of %s: %s", deletion.execution_id, names)


def run_orchestrator(
    config: OrchestratorConfig,
    stages: Sequence[str] | StageSet = (),
    reload: StageLoader | None = None,
) -> int:
    """Run until SIGTERM or SIGINT; ``stages`` are the local stages (``NAME=module:function``),
    ``reload`` reads them again from the local config."""
    actor = Orchestrator(config, stages, reload)
    return loop.run(
        actor,
        LoopConfig(
            data_dir=config.data_dir, endpoints=config.endpoints, snapshots=config.snapshots
        ),
    )
