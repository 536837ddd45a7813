"""Escalation: a down member's stateful workloads past their RTO call for a takeover.

Pure. Failover re-places a down member's workloads, but a stateful one whose data must
come along may still sit on it (no member could take it, or its data has to move).
Once any such workload has been down longer than its `rto_seconds`, the takeover
services of the other members race to create `fed_decisions/escalation.<m>.<epoch>`
(create-only CAS); the winner requests a takeover (reason calamity). Its approvers
approve because the member was declared down by a quorum of observers: the quorum is
the one that declared it down, and no member acts on its own word.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from contracts.state import DownDecision, PlacementRecord, SagaRecord
from services.takeover.plan import hosted_on

PREFIX = "escalation."


def escalation_key(member: str, epoch: int) -> str:
    return f"{PREFIX}{member}.{epoch}"


def overdue(
    down: DownDecision, placements: Iterable[PlacementRecord], now: dt.datetime
) -> list[str]:
    """Stateful workloads still on the down member, down longer than their RTO. Never
    for one dark site (`down.<member>.<site>`): failover moves its replicas, and the
    member itself is not down."""
    if down.state != "down" or down.site:
        return []
    waited = (now - down.declared_at).total_seconds()
    return sorted(p.spec.id for p in hosted_on(down.member, placements)
                  if p.spec.stateful and waited >= p.spec.rto_seconds)


def takeover_under_way(member: str, sagas: Iterable[SagaRecord]) -> bool:
    return any(s.member == member and not s.drill and s.state not in ("completed", "failed")
               for s in sagas)
