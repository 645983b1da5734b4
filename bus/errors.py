"""Errors of the bus layer: one root, narrow subclasses that also subclass a builtin."""

from __future__ import annotations


class BusError(Exception):
    """Root of every error raised by `bus`."""


class MalformedEventError(BusError, ValueError):
    """Bytes or a map that are not a valid event of the catalogue; keeps the offending bytes."""

    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw


class EventRefusedError(BusError, ValueError):
    """The hub answered an append with an error."""


class HubUnavailableError(BusError, ConnectionError):
    """No hub answered in time at the endpoint."""


class EndpointError(BusError, ValueError):
    """An endpoint that cannot be used: bad scheme, path too long, non-loopback without keys."""


class ConfigError(BusError, ValueError):
    """A configuration value that is not allowed."""
