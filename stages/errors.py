"""Errors of the stages layer."""

from __future__ import annotations


class StageError(Exception):
    """Root of every error raised by `stages`."""


class StageConfigError(StageError, ValueError):
    """A stage or sample-data setting that is not allowed."""
