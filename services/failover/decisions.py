"""The `fed_decisions/down.<member>` record: its allowed transitions. Pure.

absent → down (epoch 1); down → recovered (same epoch); recovered → down (epoch + 1).
A site of a member has its own record, `fed_decisions/down.<member>.<site>`, with the same
transitions: one site going dark is declared without declaring the member.
Each transition is written by compare-and-set at the revision read, so one observer wins
it and only the winner publishes the event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from contracts.failover import Evidence, MemberDown, MemberRecovered
from contracts.state import DownDecision

DOWN_PREFIX = "down."


def target_key(member: str, site: str = "") -> str:
    """What failover watches: a member, or one site of it (``member/site``)."""
    return f"{member}/{site}" if site else member


def split_target(target: str) -> tuple[str, str]:
    member, _, site = target.partition("/")
    return member, site


def down_key(member: str, site: str = "") -> str:
    return f"{DOWN_PREFIX}{member}.{site}" if site else f"{DOWN_PREFIX}{member}"


def down_msg_id(member: str, epoch: int, site: str = "") -> str:
    return f"down-{member}.{site}-{epoch}" if site else f"down-{member}-{epoch}"


def recovered_msg_id(member: str, epoch: int, site: str = "") -> str:
    return f"recovered-{member}.{site}-{epoch}" if site else f"recovered-{member}-{epoch}"


def next_down(
    current: DownDecision | None,
    *,
    member: str,
    declared_by: str,
    now: dt.datetime,
    evidence: Iterable[Evidence],
    quorum: int,
    site: str = "",
) -> DownDecision | None:
    """The record declaring `member` down, or None when it is down already."""
    if current is not None and current.state == "down":
        return None
    epoch = current.epoch + 1 if current is not None else 1
    proof = sorted(evidence, key=lambda e: e.observer)
    return DownDecision(member=member, state="down", epoch=epoch, declared_by=declared_by,
                        declared_at=now, observers=[e.observer for e in proof],
                        quorum=quorum, evidence=proof, site=site)


def next_recovered(
    current: DownDecision | None, *, recovered_by: str, now: dt.datetime
) -> DownDecision | None:
    """The record marking a down member recovered (same epoch), or None if not down."""
    if current is None or current.state != "down":
        return None
    return DownDecision(
        member=current.member, state="recovered", epoch=current.epoch,
        declared_by=current.declared_by, declared_at=current.declared_at,
        observers=current.observers, replaced=current.replaced,
        recovered_by=recovered_by, recovered_at=now,
        quorum=current.quorum, evidence=current.evidence, site=current.site,
    )


def down_event(record: DownDecision) -> MemberDown:
    return MemberDown(member=record.member, epoch=record.epoch, quorum=record.quorum,
                      evidence=list(record.evidence), site=record.site)


def recovered_event(record: DownDecision) -> MemberRecovered:
    return MemberRecovered(member=record.member, epoch=record.epoch, site=record.site)


def confirms(record: DownDecision | None, event: MemberDown, publisher: str) -> bool | None:
    """Does the KV record back a `member.down` event? True/False; None = cannot tell yet
    (the record read may lag the event, e.g. on a replica)."""
    if record is None or record.epoch < event.epoch:
        return None
    if record.epoch == event.epoch:
        return record.declared_by == publisher
    return True  # a later epoch: this event is history, its own record was overwritten
