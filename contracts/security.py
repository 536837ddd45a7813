"""Security violations: every refused message is recorded and reaches SOCs (invariant 6)."""

from __future__ import annotations

from typing import ClassVar

from contracts.base import Event


class SecurityViolation(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "security"
    EVENT: ClassVar[str] = "violation"
    SUMMARY: ClassVar[str] = "A service refused a message: forged, unsigned, replayed, malformed."

    # Short machine word: bad_signature, unknown_member, unknown_key, subject_mismatch,
    # stale_time, unknown_type, malformed_body, missing_header, oversized.
    reason: str
    detail: str = ""
    offending_subject: str
    claimed_member: str | None = None
    claimed_type: str | None = None
    msg_id: str | None = None
    # Which service saw it.
    service: str = ""
