"""The orchestrator core's retention decisions: which artifacts go, logged before deleted.

Every ``interval_s`` and after each execution ends, the retention policy names artifacts of
finished executions to remove; each removal is decided as an ``ArtifactsRemoved`` (measured on
disk first), and the files are deleted by the actor once that event is back durable. An
execution requested while removals are on their way waits for them: what was decided to go
before a start is gone before it (its space is the new one's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from actors.shared.ids import decision_id
from actors.shared.now import Now
from bus.events import ArtifactsRemoved, Event
from store import retention
from store.projections import executions as folds

REMOVALS_PER_PASS: Final = 64


@dataclass(frozen=True, slots=True)
class Deletion:
    """Artifact files the log says are removed: to delete (again, harmlessly, if gone)."""

    execution_id: str
    paths: tuple[str, ...]
    inside: str


class Removals:
    """The retention part of `OrchestratorCore` (which sets these attributes)."""

    state: folds.ExecutionsState
    sent: set[str]
    dirty: set[str]
    removing: set[str]  # removals on their way
    held: set[str]  # executions waiting to start until they are back
    deletions: list[Deletion]
    measure: Callable[[Sequence[str]], int]
    retention_policy: retention.RetentionPolicy
    _send: Callable[[Event], bool]  # the core's: decide an event, False if on its way

    # --- retention ---------------------------------------------------------------------------

    def _drop_checkpoints(self, ex: folds.ExecutionState | None) -> None:
        """``save_checkpoints=False``: keep the outputs, remove the intermediate artifacts
        (logged first, deleted when the log has it)."""
        if ex is None:
            return
        removal = retention.without_checkpoints(ex, retention.protected(self.state))
        if removal is not None:
            self._remove(removal)

    def _apply_retention(self, now: Now) -> bool:
        """Decide what retention removes now and log it; with the automatic pass off, only
        ``save_checkpoints=False`` leftovers. At most `REMOVALS_PER_PASS` go out at once (each
        is measured on disk): True when more are left for the next turn."""
        policy = self.retention_policy
        if policy.enabled:
            removals = retention.decide(self.state, policy, now.wall)
        else:
            keep = retention.protected(self.state)
            found = (
                retention.without_checkpoints(ex, keep) for ex in self.state.executions.values()
            )
            removals = [r for r in found if r is not None]
        sent = 0
        for removal in removals:
            if sent == REMOVALS_PER_PASS:
                return True
            sent += self._remove(removal)
        return False

    def _remove(self, removal: retention.Removal) -> bool:
        """Decide a removal (deleting comes when it is back durable); False if it is on its way."""
        event_id = decision_id(
            removal.execution_id, "artifacts-removed", *removal.steps, removal.finals
        )
        if event_id in self.sent:
            return False  # measured and on its way already
        self.removing.add(event_id)
        return self._send(
            ArtifactsRemoved(
                id=event_id,
                execution_id=removal.execution_id,
                steps=list(removal.steps),
                bytes=self.measure(removal.paths),
                reason=removal.reason,
                finals=removal.finals,
            )
        )

    def _removal_back(self, event_id: str) -> None:
        """A removal came back (or was given up): the executions held for it may start."""
        self.removing.discard(event_id)
        if not self.removing and self.held:
            self.dirty |= self.held
            self.held = set()

    def _delete_removed(self, ex: folds.ExecutionState | None) -> None:
        if ex is None or not ex.plan:
            return
        paths = retention.removed_paths(ex)
        if paths:
            self.deletions.append(Deletion(ex.execution_id, tuple(paths), ex.plan.dir))
