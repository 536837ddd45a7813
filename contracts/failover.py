"""Suspicion, quorum-confirmed down declarations and recovery (DESIGN §6 failover)."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import msgspec

from contracts.base import Event, MemberId


class MemberSuspected(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "member"
    EVENT: ClassVar[str] = "suspected"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "An observer has heard no heartbeat from a member for too long."

    member: MemberId
    last_heartbeat: dt.datetime | None = None
    silence_s: float
    # False when the observer hears the member again and withdraws its suspicion.
    suspected: bool = True
    # Set when only this site of the member is silent (absent from its heartbeats'
    # `sites_up` while the member itself still beats).
    site: str = ""

    def target(self) -> str:
        return self.member


class Evidence(msgspec.Struct, kw_only=True, frozen=True):
    observer: str
    msg_id: str
    silence_s: float


class MemberDown(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "member"
    EVENT: ClassVar[str] = "down"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A quorum of observers confirmed a member down; one declaration."

    member: MemberId
    epoch: int
    quorum: int
    evidence: list[Evidence]
    # Set when only this site of the member is declared down: only its replicas move.
    site: str = ""

    def target(self) -> str:
        return self.member


class MemberRecovered(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "member"
    EVENT: ClassVar[str] = "recovered"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A member declared down heartbeats again; no automatic move back."

    member: MemberId
    epoch: int
    site: str = ""  # set when a site declared down is back

    def target(self) -> str:
        return self.member


class SitesReported(Event, kw_only=True):
    """A member's own word about its sites, e.g. a power cut at one datacenter. Its agent
    leaves the dark sites out of its heartbeats' `sites_up`; the site is declared down
    only by a quorum of the others' observers, as for a site that went dark unannounced."""

    DOMAIN: ClassVar[str] = "member"
    EVENT: ClassVar[str] = "sites"
    SUMMARY: ClassVar[str] = "A member reports which of its sites are dark (all others up)."

    dark: list[str] = []
