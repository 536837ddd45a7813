"""Founding by files: each founder's public card, a genesis proposal, signatures added one by one.

Founders never share private keys and need no running bus to found. The flow:

1. each founder runs `stekker federation init --member ID` → its key (kept) and
   `founders/ID.card.json` (its public key; sent to the other founders by any channel
   they trust, and compared by key id over a second channel, e.g. a call);
2. one founder runs `init` again with every card (`--founder FILE ...`): this writes
   `genesis-proposal.json` (version 1, unsigned) and signs it;
3. the proposal goes round; each founder runs `stekker roster sign genesis-proposal.json`;
4. the signature that completes it makes the file a valid genesis: `roster sign` then
   writes `genesis.json` next to it, which nodes put in force on first start.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import msgspec

from contracts.iam import Roster, RosterBody, RosterMember, RosterSignature
from mesh.errors import ConfigError, Rejected
from mesh.keys import Identity
from mesh.trust import quorum_of, roster_payload, verify_genesis

CARDS_DIR = "founders"
PROPOSAL_FILE = "genesis-proposal.json"


class FounderCard(msgspec.Struct, kw_only=True, frozen=True):
    """What a founder gives the others: who it is and its public key."""

    id: str
    name: str
    public_key: str
    key_id: str


def card_of(identity: Identity, name: str) -> FounderCard:
    return FounderCard(id=identity.member, name=name, public_key=identity.public_b64,
                       key_id=identity.key_id)


def genesis_body(federation: str, cards: Sequence[FounderCard], now: dt.datetime,
                 threshold: int | None = None) -> RosterBody:
    ids = [c.id for c in cards]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"a founder appears twice among {sorted(ids)}")
    members = [RosterMember(id=c.id, name=c.name, public_key=c.public_key, key_id=c.key_id,
                            roles=["founder"]) for c in sorted(cards, key=lambda c: c.id)]
    return RosterBody(federation=federation, version=1, issued_at=now,
                      threshold=threshold or quorum_of(len(members)), members=members)


def add_signature(roster: Roster, identity: Identity) -> Roster:
    """`roster` with `identity`'s signature over its body (replacing an older one of it)."""
    sig = RosterSignature(member=identity.member, key_id=identity.key_id,
                          signature=identity.sign(roster_payload(roster.body)))
    others = [s for s in roster.signatures if s.key_id != identity.key_id]
    return Roster(body=roster.body, signatures=[*others, sig])


def genesis_complete(roster: Roster) -> bool:
    try:
        verify_genesis(roster)
    except Rejected:
        return False
    return True


def read_json(path: Path, kind: type[msgspec.Struct]) -> msgspec.Struct:
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{path}: not a {kind.__name__}: {exc}") from None


def write_json(path: Path, value: msgspec.Struct) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(value)) + b"\n")
    return path
