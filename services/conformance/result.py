"""The outcome of one conformance check."""

from __future__ import annotations

import msgspec


class CheckResult(msgspec.Struct, kw_only=True, frozen=True):
    check: str
    passed: bool
    # Why it passed (what was seen) or why it failed (what was missing), for a human.
    detail: str
    duration_s: float


class CheckFailed(Exception):
    """Raised by a check with the reason it failed; the runner records it."""
