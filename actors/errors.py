"""Errors of the actors layer."""

from __future__ import annotations


class ActorError(Exception):
    """Root of every error raised by `actors`."""


class UsageError(ActorError, ValueError):
    """A command-line argument or config value that is not allowed."""


class NotRunningError(ActorError, ConnectionError):
    """The command needs a running system and none runs for the data dir."""


class AlreadyRunningError(ActorError, RuntimeError):
    """A system (or an actor of a kind there is one of) already runs for the data dir."""
