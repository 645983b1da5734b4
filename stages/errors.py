"""Errors of the stages layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StageError(Exception):
    """Root of every error raised by `stages`."""


class StageConfigError(StageError, ValueError):
    """A stage, pipeline or sample-data setting that is not allowed."""


class StageInputError(StageError, ValueError):
    """The data handed to a stage cannot be processed (a column it needs is missing, ...)."""


class StageRuleError(StageError):
    """A validation rule of severity ``error`` failed; `report` holds every rule's outcome."""

    def __init__(self, message: str, report: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.report = dict(report)


class NonRetryableError(StageError):
    """Raise it (or any exception with ``retryable = False``) from a stage to say a retry is futile.

    The execution fails at once: the orchestrator does not run the task again and the scheduler
    schedules no retry of the execution.
    """

    retryable = False


def is_permanent(exc: BaseException) -> bool:
    """True when running the same task again cannot help: the stage said so, or its config or
    data is wrong (a `StageError`), which a retry would meet again."""
    return getattr(exc, "retryable", None) is False or isinstance(exc, StageError)
