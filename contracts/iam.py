"""The roster: the signed list of members, their keys and the threshold (DESIGN §3, §6 iam)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, ClassVar, Literal

import msgspec

from contracts.base import Event, MemberId

Role = Literal["founder", "member"]
MemberState = Literal["active", "suspended"]


class RosterMember(msgspec.Struct, kw_only=True, frozen=True):
    id: MemberId
    name: str
    # Ed25519 public key, base64 (raw 32 bytes), and its key id (sha256 prefix).
    public_key: str
    key_id: str
    roles: list[Role] = msgspec.field(default_factory=lambda: ["member"])
    state: MemberState = "active"


class RosterBody(msgspec.Struct, kw_only=True, frozen=True):
    """What the signatures cover: the canonical JSON of this struct."""

    federation: str
    version: Annotated[int, msgspec.Meta(ge=1)]
    issued_at: dt.datetime
    threshold: Annotated[int, msgspec.Meta(ge=1)]
    members: list[RosterMember]


class RosterSignature(msgspec.Struct, kw_only=True, frozen=True):
    member: str
    key_id: str
    signature: str


class Roster(msgspec.Struct, kw_only=True, frozen=True):
    body: RosterBody
    signatures: list[RosterSignature]


class RosterPublished(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "iam"
    EVENT: ClassVar[str] = "roster"
    SUMMARY: ClassVar[str] = "A roster version takes effect (version 1: the genesis)."

    roster: Roster
