"""The roster as a trust store: which keys speak for which members, and quorum sizes.

Roster signatures cover the canonical JSON of the roster body. Version 1 (genesis) is
valid when every founder listed in it signed it; later versions (issue 5) need the
threshold of the previous version's keys.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contracts.iam import Roster, RosterBody, RosterMember, RosterSignature
from mesh.errors import Rejected
from mesh.keys import Identity, public_key_from_b64, verify


def quorum_of(n_voters: int) -> int:
    """⌈2n/3⌉ of the voters, at least 1: the default threshold of DESIGN §3."""
    return max(1, math.ceil(2 * n_voters / 3))


def roster_payload(body: RosterBody) -> bytes:
    # msgspec encodes struct fields in definition order: stable across processes. An empty
    # `retired_keys` (added with key rotation) is left out, so the bytes of every roster
    # without one are what they were before the field existed and old signatures hold.
    if body.retired_keys:
        return b"stekker-roster-v1\n" + msgspec.json.encode(body)
    plain = msgspec.to_builtins(body)
    del plain["retired_keys"]
    return b"stekker-roster-v1\n" + msgspec.json.encode(plain)


def sign_roster(body: RosterBody, signers: Iterable[Identity]) -> Roster:
    payload = roster_payload(body)
    sigs = [
        RosterSignature(member=i.member, key_id=i.key_id, signature=i.sign(payload))
        for i in signers
    ]
    return Roster(body=body, signatures=sigs)


def verify_genesis(roster: Roster) -> None:
    """A genesis roster must be version 1 and signed by each of its founders."""
    body = roster.body
    if body.version != 1:
        raise Rejected("roster_version", f"genesis must be version 1, not {body.version}")
    payload = roster_payload(body)
    by_key = {m.key_id: m for m in body.members}
    good: set[str] = set()
    for sig in roster.signatures:
        member = by_key.get(sig.key_id)
        if member is None or member.id != sig.member:
            continue
        if verify(public_key_from_b64(member.public_key), sig.signature, payload):
            good.add(member.id)
    founders = {m.id for m in body.members if "founder" in m.roles}
    missing = founders - good
    if not founders or missing:
        raise Rejected("roster_unsigned", f"founders without a valid signature: {sorted(missing)}")
    if body.threshold > len(body.members):
        raise Rejected("roster_threshold", "threshold larger than the number of members")


class TrustStore:
    """Answers: is this key a key of that member in the roster in force?"""

    def __init__(self, roster: Roster | None = None) -> None:
        self._keys: dict[tuple[str, str], Ed25519PublicKey] = {}
        self._retired: dict[tuple[str, str], tuple[Ed25519PublicKey, dt.datetime]] = {}
        self._members: dict[str, RosterMember] = {}
        self.roster: Roster | None = None
        if roster is not None:
            self.install(roster)

    def install(self, roster: Roster) -> None:
        """Take a verified roster into force (the caller verified its chain)."""
        self.roster = roster
        self._members = {m.id: m for m in roster.body.members}
        self._keys = {
            (m.id, m.key_id): public_key_from_b64(m.public_key)
            for m in roster.body.members
            if m.state == "active"
        }
        # Rotated-out keys of active members: valid for what they signed before retiring.
        active = {m.id for m in roster.body.members if m.state == "active"}
        self._retired = {
            (r.member, r.key_id): (public_key_from_b64(r.public_key), r.retired_at)
            for r in roster.body.retired_keys
            if r.member in active
        }

    @property
    def ready(self) -> bool:
        return self.roster is not None

    @property
    def version(self) -> int:
        return self.roster.body.version if self.roster else 0

    def member_ids(self, *, active_only: bool = True) -> list[str]:
        return sorted(
            m.id for m in self._members.values() if not active_only or m.state == "active"
        )

    def is_member(self, member: str) -> bool:
        return member in self._members

    def key(self, member: str, key_id: str) -> Ed25519PublicKey | None:
        return self._keys.get((member, key_id))

    def retired_key(self, member: str, key_id: str) -> tuple[Ed25519PublicKey, dt.datetime] | None:
        """A rotated-out key of an active member and when it retired, else None."""
        return self._retired.get((member, key_id))

    def quorum_against(self, subject_member: str) -> int:
        """Signatures needed to act on a member: ⌈2n/3⌉ of the *other* active members."""
        others = [m for m in self.member_ids() if m != subject_member]
        return quorum_of(len(others))
