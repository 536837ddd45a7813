"""Roster changes: admission, suspension, removal. Pure: (roster, change) -> next body.

Every endorser recomputes the proposed body from the roster in force and the change, and
signs only when it equals the body proposed on the bus; so no one can slip a different
member list under a "suspend X" label. At the threshold of the current version's
distinct keys, the collected signatures make the next version (`services.iam.chain`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable

import msgspec

from contracts.iam import (
    AdmissionRequested,
    KeyRotation,
    Roster,
    RosterBody,
    RosterChange,
    RosterMember,
    RosterProposal,
    RosterSignature,
)
from mesh.errors import Rejected, TerminalError
from mesh.keys import Identity, key_id_of, public_key_from_b64, verify
from mesh.trust import quorum_of, roster_payload
from services.iam.chain import body_hash, counted_signers, verify_successor
from services.iam.rotation import check_key_changes, retired_entry


def admission_payload(federation: str, candidate: str, key_id: str, report_sha256: str,
                      requested_at: dt.datetime) -> bytes:
    return "\n".join(("stekker-admission-v1", federation, candidate, key_id, report_sha256,
                      requested_at.isoformat())).encode()


def make_admission_request(identity: Identity, federation: str, name: str, report: str,
                           report_bytes: bytes, now: dt.datetime) -> AdmissionRequested:
    sha = hashlib.sha256(report_bytes).hexdigest()
    payload = admission_payload(federation, identity.member, identity.key_id, sha, now)
    return AdmissionRequested(candidate=identity.member, name=name,
                              public_key=identity.public_b64, key_id=identity.key_id,
                              requested_at=now, conformance_report=report,
                              conformance_sha256=sha,
                              candidate_signature=identity.sign(payload))


def check_admission_request(federation: str, request: AdmissionRequested) -> None:
    """The candidate holds the key it names, and the key id is that key's fingerprint."""
    import base64

    try:
        public_raw = base64.b64decode(request.public_key, validate=True)
        public = public_key_from_b64(request.public_key)
    except ValueError:
        raise Rejected("admission_bad_key", request.candidate) from None
    if key_id_of(public_raw) != request.key_id:
        raise Rejected("admission_bad_key", "key id is not the key's fingerprint")
    payload = admission_payload(federation, request.candidate, request.key_id,
                                request.conformance_sha256, request.requested_at)
    if not verify(public, request.candidate_signature, payload):
        raise Rejected("admission_unsigned", f"{request.candidate} did not sign its request")


def _members_after(prev: Roster, change: RosterChange, subject: str,
                   candidate: AdmissionRequested | None,
                   rotation: KeyRotation | None = None) -> list[RosterMember]:
    members = list(prev.body.members)
    by_id = {m.id: m for m in members}
    if change == "rotate":
        return [_rotated(m, rotation) if m.id == subject else m
                for m in _checked_rotation(members, subject, rotation)]
    if change == "admit":
        if candidate is None or candidate.candidate != subject:
            raise TerminalError(f"no admission request of {subject}")
        if subject in by_id:
            raise TerminalError(f"{subject} is in the roster already")
        members.append(RosterMember(id=subject, name=candidate.name,
                                    public_key=candidate.public_key, key_id=candidate.key_id,
                                    roles=["member"]))
        return sorted(members, key=lambda m: m.id)
    if subject not in by_id:
        raise TerminalError(f"{subject} is not in the roster")
    if change == "remove":
        return [m for m in members if m.id != subject]
    if by_id[subject].state == "suspended":
        raise TerminalError(f"{subject} is suspended already")
    return [RosterMember(id=m.id, name=m.name, public_key=m.public_key, key_id=m.key_id,
                         roles=m.roles, state="suspended" if m.id == subject else m.state)
            for m in members]


def _checked_rotation(members: list[RosterMember], subject: str,
                   rotation: KeyRotation | None) -> list[RosterMember]:
    """The members, after checking that `rotation` is a rotation of `subject`'s current key."""
    current = next((m for m in members if m.id == subject), None)
    if current is None:
        raise TerminalError(f"{subject} is not in the roster")
    if rotation is None or rotation.member != subject:
        raise TerminalError(f"no key rotation request of {subject}")
    if current.state != "active":
        raise TerminalError(f"{subject} is not active; a suspended member cannot rotate")
    if rotation.old_key_id != current.key_id:
        raise TerminalError(f"the rotation replaces {rotation.old_key_id}, but {subject}'s "
                            f"key is {current.key_id}")
    return members


def _rotated(member: RosterMember, rotation: KeyRotation | None) -> RosterMember:
    assert rotation is not None
    return msgspec.structs.replace(member, public_key=rotation.new_public_key,
                                   key_id=rotation.new_key_id)


def next_body(prev: Roster, change: RosterChange, subject: str, issued_at: dt.datetime,
              candidate: AdmissionRequested | None = None,
              rotation: KeyRotation | None = None) -> RosterBody:
    """The body of version N+1 after `change`; threshold ⌈2n/3⌉ of its active members."""
    members = _members_after(prev, change, subject, candidate, rotation)
    active = sum(1 for m in members if m.state == "active")
    if active == 0:
        raise TerminalError("a roster without active members cannot be changed again")
    retired = list(prev.body.retired_keys)
    if change == "rotate" and rotation is not None:
        old = next(m for m in prev.body.members if m.id == subject)
        retired.append(retired_entry(rotation, old.public_key))
    # Retired keys of members no longer in the roster go; nothing else of them counts.
    kept = {m.id for m in members}
    retired = [r for r in retired if r.member in kept]
    body = RosterBody(federation=prev.body.federation, version=prev.body.version + 1,
                      issued_at=issued_at, threshold=quorum_of(active), members=members,
                      retired_keys=retired)
    if change == "rotate":
        check_key_changes(prev.body, body)  # both keys signed it, or nobody endorses it
    return body


def proposal(prev: Roster, change: RosterChange, subject: str, issued_at: dt.datetime,
             candidate: AdmissionRequested | None = None,
             rotation: KeyRotation | None = None) -> RosterProposal:
    body = next_body(prev, change, subject, issued_at, candidate, rotation)
    return RosterProposal(change=change, member=subject, body=body, body_sha256=body_hash(body))


def check_proposal(prev: Roster, stored: RosterProposal,
                   candidate: AdmissionRequested | None = None,
                   rotation: KeyRotation | None = None) -> bool:
    """Whether a stored proposal is exactly what this change on `prev` gives (so: signable)."""
    if stored.body.version != prev.body.version + 1:
        return False
    try:
        mine = next_body(prev, stored.change, stored.member, stored.body.issued_at, candidate,
                         rotation)
    except TerminalError:
        return False
    return mine == stored.body and body_hash(mine) == stored.body_sha256


def endorse(identity: Identity, body: RosterBody) -> RosterSignature:
    return RosterSignature(member=identity.member, key_id=identity.key_id,
                           signature=identity.sign(roster_payload(body)))


class Tally:
    """Endorsements seen per proposed body, by key id. Pure; rebuilt from the stream."""

    def __init__(self) -> None:
        self._bodies: dict[str, RosterBody] = {}
        self._sigs: dict[str, dict[str, RosterSignature]] = {}

    def add(self, body: RosterBody, signature: RosterSignature) -> str:
        digest = body_hash(body)
        self._bodies[digest] = body
        # Keyed by key id: a key endorsing the same body twice counts once.
        self._sigs.setdefault(digest, {})[signature.key_id] = signature
        return digest

    def counted(self, prev: Roster, digest: str) -> int:
        body = self._bodies.get(digest)
        if body is None:
            return 0
        return len(counted_signers(prev, body, list(self._sigs[digest].values())))

    def ready(self, prev: Roster) -> Roster | None:
        """A next version that holds, if some body reached the threshold of `prev`."""
        for digest, body in self._bodies.items():
            if body.version != prev.body.version + 1:
                continue
            candidate = Roster(body=body, signatures=list(self._sigs[digest].values()))
            try:
                verify_successor(prev, candidate)
            except Rejected:
                continue
            return candidate
        return None

    def pending(self, prev: Roster) -> dict[str, int]:
        return {d: self.counted(prev, d) for d, b in self._bodies.items()
                if b.version == prev.body.version + 1}

    def forget_below(self, version: int) -> None:
        for digest in [d for d, b in self._bodies.items() if b.version <= version]:
            del self._bodies[digest]
            del self._sigs[digest]


def all_signers(signatures: Iterable[RosterSignature]) -> list[str]:
    return sorted({s.member for s in signatures})
