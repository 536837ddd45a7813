"""A member's status as the federation sees it, from facts read elsewhere. Pure."""

from __future__ import annotations

from typing import Literal

Status = Literal["active", "suspected", "down", "frozen"]


def member_status(
    *,
    heartbeat_age_s: float | None,
    suspicion_timeout_s: float,
    declared_down: bool,
    frozen: bool,
) -> Status:
    """Down (a quorum said so) wins over frozen (a takeover runs) over suspected (silent)."""
    if declared_down:
        return "down"
    if frozen:
        return "frozen"
    if heartbeat_age_s is None or heartbeat_age_s > suspicion_timeout_s:
        return "suspected"
    return "active"
