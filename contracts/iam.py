"""The roster: the signed list of members, their keys and the threshold (DESIGN §3, §6 iam)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, ClassVar, Literal

import msgspec

from contracts.base import Event, MemberId
from contracts.registry import MemberProfile

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


class RetiredKey(msgspec.Struct, kw_only=True, frozen=True):
    """A member's key replaced by a rotation. Messages it signed with a Fed-Time up to
    `retired_at` still verify; later ones are refused (`key_retired`).

    Both signatures cover `rotation_payload(...)` (services.iam.rotation): the old key
    hands over, the new key proves it is held. The roster chain checks them.
    """

    member: MemberId
    public_key: str
    key_id: str
    successor_key_id: str
    retired_at: dt.datetime
    old_key_signature: str
    new_key_signature: str


class RosterBody(msgspec.Struct, kw_only=True, frozen=True):
    """What the signatures cover: the canonical JSON of this struct (an empty
    `retired_keys` is left out, so rosters signed before it existed still verify)."""

    federation: str
    version: Annotated[int, msgspec.Meta(ge=1)]
    issued_at: dt.datetime
    threshold: Annotated[int, msgspec.Meta(ge=1)]
    members: list[RosterMember]
    retired_keys: list[RetiredKey] = msgspec.field(default_factory=list)


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


RosterChange = Literal["admit", "suspend", "remove", "rotate"]


class AdmissionRequested(Event, kw_only=True):
    """A candidate asks to join; filed on the bus by a member (the candidate cannot publish
    before it is admitted). The candidate's own signature proves it holds the key."""

    DOMAIN: ClassVar[str] = "iam"
    EVENT: ClassVar[str] = "admission-requested"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A candidate member asks to be admitted to the federation."

    candidate: MemberId
    name: str
    public_key: str
    key_id: str
    requested_at: dt.datetime
    # Where the conformance report ("zwemdiploma") is, and its sha256.
    conformance_report: str
    conformance_sha256: str
    profile: MemberProfile | None = None
    # The candidate's Ed25519 signature over `admission_payload(...)`, base64.
    candidate_signature: str

    def target(self) -> str | None:
        return self.candidate


class RosterChangeEndorsed(Event, kw_only=True):
    """A member signs a proposed next roster body (admit, suspend or remove a member).

    The signature is a roster signature: at the threshold of the current version's keys
    the endorsements together ARE the next roster version's signatures.
    """

    DOMAIN: ClassVar[str] = "iam"
    EVENT: ClassVar[str] = "endorsed"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A member endorses a roster change (admission, suspension, removal)."

    change: RosterChange
    # The member the change is about (the candidate, for an admission).
    member: MemberId
    base_version: int
    body: RosterBody
    body_sha256: str
    signature: RosterSignature

    def target(self) -> str | None:
        return self.member


class KeyRotation(msgspec.Struct, kw_only=True, frozen=True):
    """KV `fed_decisions/rotation.<member>`: a member's request to replace its key, signed
    by the old and the new key; endorsers build the next roster from it."""

    member: MemberId
    old_key_id: str
    new_public_key: str
    new_key_id: str
    retired_at: dt.datetime
    old_key_signature: str
    new_key_signature: str


class RosterProposal(msgspec.Struct, kw_only=True, frozen=True):
    """KV `fed_decisions/roster-proposal.<member>`: the body endorsers co-sign, so that
    everyone signs the very same bytes (each endorser recomputes and compares it)."""

    change: RosterChange
    member: MemberId
    body: RosterBody
    body_sha256: str
