"""The roster chain: which roster versions may follow which (TUF-style root rotation).

Pure functions. Version 1 is the genesis (signed by every founder, `verify_genesis`).
Version N+1 is valid only when at least `threshold` DISTINCT keys of version N's active
members signed its body: a key is counted once however often it signed, and a signature
with a key that version N does not hold for that member counts not at all (so a member
cannot vouch for a change with a key it only gets in that very change).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from contracts.iam import Roster, RosterBody, RosterSignature
from mesh.errors import Rejected
from mesh.keys import public_key_from_b64, verify
from mesh.trust import roster_payload, verify_genesis
from services.iam.rotation import check_key_changes


def body_hash(body: RosterBody) -> str:
    """sha256 of what the signatures cover; endorsements name a proposed body by it."""
    return hashlib.sha256(roster_payload(body)).hexdigest()


def counted_signers(prev: Roster, body: RosterBody,
                    signatures: Sequence[RosterSignature]) -> set[str]:
    """Key ids of `prev`'s active members whose signature over `body` verifies.

    A set: the same key signing twice (or under two member names) counts once.
    """
    payload = roster_payload(body)
    keys = {(m.id, m.key_id): m for m in prev.body.members if m.state == "active"}
    good: set[str] = set()
    for sig in signatures:
        member = keys.get((sig.member, sig.key_id))
        if member is None or sig.key_id in good:
            continue
        if verify(public_key_from_b64(member.public_key), sig.signature, payload):
            good.add(sig.key_id)
    return good


def check_body(prev: Roster, body: RosterBody) -> None:
    """The shape rules of a successor body, without looking at signatures."""
    want = prev.body.version + 1
    if body.federation != prev.body.federation:
        raise Rejected("roster_federation_mismatch",
                       f"{body.federation!r} follows {prev.body.federation!r}")
    if body.version > want:
        raise Rejected("roster_version_skipped", f"version {body.version} after {want - 1}")
    if body.version < want:
        raise Rejected("roster_version_stale", f"version {body.version} after {want - 1}")
    active = [m for m in body.members if m.state == "active"]
    if len({m.id for m in body.members}) != len(body.members):
        raise Rejected("roster_duplicate_member", f"version {body.version}")
    if body.threshold > len(active):
        raise Rejected("roster_threshold",
                       f"threshold {body.threshold} above {len(active)} active members")


def verify_successor(prev: Roster, nxt: Roster) -> None:
    """Raise `Rejected` unless `nxt` may follow `prev` (see the module docstring)."""
    check_body(prev, nxt.body)
    check_key_changes(prev.body, nxt.body)
    signers = counted_signers(prev, nxt.body, nxt.signatures)
    if len(signers) < prev.body.threshold:
        raise Rejected(
            "roster_threshold_not_met",
            f"version {nxt.body.version} has {len(signers)} valid distinct key(s) of "
            f"version {prev.body.version}; needs {prev.body.threshold}",
        )


def verify_chain(rosters: Sequence[Roster]) -> Roster:
    """Check versions 1..N in order; return version N. Raises `Rejected` at the first break."""
    if not rosters:
        raise Rejected("roster_missing", "no roster versions")
    good, broken = longest_valid_prefix(rosters)
    if broken is not None:
        raise broken
    return good[-1]


@dataclass(frozen=True)
class LinkReport:
    """One version of the chain as `stekker roster verify` reports it."""

    version: int
    ok: bool
    reason: str
    signers: list[str]
    threshold_needed: int | None


def chain_report(rosters: Sequence[Roster]) -> list[LinkReport]:
    """Every version with whether it holds; a version after a break does not hold either."""
    reports: list[LinkReport] = []
    broken = False
    for index, roster in enumerate(rosters):
        signers = sorted({s.member for s in roster.signatures})
        needed: int | None = None
        reason = ""
        try:
            if broken:
                raise Rejected("roster_chain_broken", "an earlier version does not hold")
            if index == 0:
                verify_genesis(roster)
            else:
                needed = rosters[index - 1].body.threshold
                verify_successor(rosters[index - 1], roster)
        except Rejected as exc:
            broken = True
            reason = str(exc)
        reports.append(LinkReport(version=roster.body.version, ok=not broken, reason=reason,
                                  signers=signers, threshold_needed=needed))
    return reports


def longest_valid_prefix(rosters: Sequence[Roster]) -> tuple[list[Roster], Rejected | None]:
    """The versions that hold, from 1 up to the first break, and that break (if any).

    A service keeps the last version that holds in force when a later one is bad.
    """
    good: list[Roster] = []
    for roster in rosters:
        try:
            if good:
                verify_successor(good[-1], roster)
            else:
                verify_genesis(roster)
        except Rejected as exc:
            return good, exc
        good.append(roster)
    return good, None
