"""Chains: the tasks a sequential execution will run next, one after another, for certain.

When a task of a sequential execution is dispatched and the tasks after it follow one from the
other (each the only one that its predecessor's completion makes ready, and reading nothing
else not done yet), its ``StageDispatched`` carries them (``then``), each as the dispatch the
orchestrator will decide once the one before has completed. The runner that runs the task goes
on to the next as soon as its completion is durable, instead of waiting for the orchestrator
to fold it, decide and push: Celery's chains go from worker to worker the same way. The
orchestrator still logs each dispatch (the same event, with the same ids), pushes it to
nobody, and holds the runner's results for it if they come first (DESIGN 4, Dispatch).

Pure: reads the execution fold, decides nothing.
"""

from __future__ import annotations

from typing import Final

from store.projections import plan as plans
from store.projections.executions import ExecutionState
from store.projections.task import TaskKey

AHEAD: Final = 8  # tasks a dispatch names to follow it: one push of the orchestrator per 9 tasks
MAX_BYTES: Final = 64 * 1024  # and at most this much of them (a dispatch is logged, and pushed)


def following(ex: ExecutionState, key: TaskKey, limit: int = AHEAD) -> list[TaskKey]:
    """The tasks that will run after ``key``, in order, each once the one before completed:
    empty unless the execution is sequential and nothing else is ready or failed. Each one
    follows only if it was never dispatched, and everything it waits for is completed but the
    one before it (so that one's output is the only input a runner fills in)."""
    plan = ex.plan
    if plan is None or ex.mode != "sequential" or limit <= 0:
        return []
    first = ex.tasks.get(key)
    # a task that completed once (and was reopened) has an artifact the dispatch after it
    # would name: only a task that never completed starts a chain
    if first is None or first.artifact or any(k != key for k in ex.failed):
        return []
    if any(k != key for k in ex.ready):
        return []
    chain: list[TaskKey] = []
    before = key
    while len(chain) < limit:
        ready = [
            d
            for d in ex.dependents.get(before, ())
            if ex.tasks[d].status == "pending" and _next_after(ex, d, before)
        ]
        if len(ready) != 1:
            return chain
        task = ex.tasks[ready[0]]
        if task.attempt or task.reopened:
            return chain
        chain.append(task.key)
        before = task.key
    return chain


def _next_after(ex: ExecutionState, key: TaskKey, before: TaskKey) -> bool:
    """Will ``key`` be ready once ``before`` completes (everything else it waits for is)?"""
    assert ex.plan is not None
    for dep in plans.depends_on(ex.plan, key):
        if dep != before and ex.tasks[dep].status != "completed":
            return False
    return True
