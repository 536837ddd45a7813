"""Founding a federation: every founder's key, one roster version 1 signed by them all."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from contracts.iam import Roster, RosterBody, RosterMember
from contracts.registry import MemberProfile
from mesh.errors import ConfigError
from mesh.keys import Identity, load_or_create_identity
from mesh.trust import quorum_of, sign_roster, verify_genesis

GENESIS_FILE = "genesis.json"


def build_genesis(
    federation: str,
    profiles: Sequence[MemberProfile],
    identities: Mapping[str, Identity],
    now: dt.datetime,
) -> Roster:
    """Roster version 1: all given members are founders; threshold ⌈2n/3⌉."""
    members = [
        RosterMember(
            id=p.id,
            name=p.name,
            public_key=identities[p.id].public_b64,
            key_id=identities[p.id].key_id,
            roles=["founder"],
        )
        for p in sorted(profiles, key=lambda p: p.id)
    ]
    body = RosterBody(
        federation=federation,
        version=1,
        issued_at=now,
        threshold=quorum_of(len(members)),
        members=members,
    )
    return sign_roster(body, [identities[m.id] for m in members])


def found_local_federation(
    data_dir: Path, federation: str, profiles: Sequence[MemberProfile]
) -> Roster:
    """For `stekker up`: founders' keys in `data_dir/keys`, the genesis in `genesis.json`.

    Idempotent: an existing genesis is kept as long as it still matches the keys.
    """
    keys_dir = data_dir / "keys"
    identities = {p.id: load_or_create_identity(keys_dir, p.id) for p in profiles}
    path = data_dir / GENESIS_FILE
    if path.exists():
        roster = read_genesis(path)
        known = {m.id: m.key_id for m in roster.body.members}
        if known == {i: ident.key_id for i, ident in identities.items()}:
            return roster
    roster = build_genesis(federation, profiles, identities, dt.datetime.now(dt.UTC))
    path.write_bytes(msgspec.json.format(msgspec.json.encode(roster)))
    return roster


def read_genesis(path: Path) -> Roster:
    try:
        roster = msgspec.json.decode(path.read_bytes(), type=Roster)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: not a roster: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    verify_genesis(roster)
    return roster
