"""Errors of the takeover package."""

from __future__ import annotations

from mesh.errors import RetryableError, TerminalError


class DigestMismatch(RetryableError):
    """The data read from the store is not what was exported: never imported or cut
    over; the step is tried again from the source or from the next-newest backup."""

    def __init__(self, name: str, expected: str, actual: str) -> None:
        super().__init__(f"digest mismatch on {name}: expected sha256 {expected[:16]}…, "
                         f"got {actual[:16]}…")
        self.expected = expected
        self.actual = actual


class NoData(TerminalError):
    """Neither the source nor any backup can provide a stateful workload's data."""


class Superseded(Exception):
    """Another member took this saga over (our lease ended): stop coordinating it."""
