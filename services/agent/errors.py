"""Errors of the agent package."""

from __future__ import annotations

from mesh.errors import TerminalError


class DriverError(TerminalError):
    """A driver cannot start or run an instance; the message says why, for a human."""
