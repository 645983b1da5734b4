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
