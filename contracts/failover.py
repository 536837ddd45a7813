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

    def target(self) -> str:
        return self.member


class MemberRecovered(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "member"
    EVENT: ClassVar[str] = "recovered"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A member declared down heartbeats again; no automatic move back."

    member: MemberId
    epoch: int

    def target(self) -> str:
        return self.member
