"""Key rotation: a member replaces its key by a roster change, signed by old and new key.

Pure. A rotation is endorsed like any roster change (threshold of the current version's
keys) and additionally carries two signatures over the same statement: by the old key
(the member hands over) and by the new key (the member holds it). The next roster keeps
the old key as a `RetiredKey` with its `retired_at`: messages it signed up to then still
verify, later ones are refused (`key_retired`, mesh.envelope).

The chain rule (`check_key_changes`, applied by `chain.verify_successor`): a member's key
may change between two versions only with such a retired entry, and a version may add a
retired entry only for such a change; so no endorsement majority can slip a stranger's
key into the roster as a "retired" key of a member.
"""

from __future__ import annotations

import datetime as dt

from contracts.iam import KeyRotation, RetiredKey, RosterBody
from mesh.errors import Rejected
from mesh.keys import Identity, key_id_of, public_key_from_b64, verify


def rotation_payload(federation: str, member: str, old_key_id: str, new_key_id: str,
                     retired_at: dt.datetime) -> bytes:
    return "\n".join(("stekker-key-rotation-v1", federation, member, old_key_id, new_key_id,
                      retired_at.astimezone(dt.UTC).isoformat())).encode()


def make_rotation(old: Identity, new: Identity, federation: str,
                  retired_at: dt.datetime) -> KeyRotation:
    if old.member != new.member:
        raise ValueError("old and new key must belong to the same member")
    payload = rotation_payload(federation, old.member, old.key_id, new.key_id, retired_at)
    return KeyRotation(member=old.member, old_key_id=old.key_id, new_public_key=new.public_b64,
                       new_key_id=new.key_id, retired_at=retired_at,
                       old_key_signature=old.sign(payload), new_key_signature=new.sign(payload))


def retired_entry(rotation: KeyRotation, old_public_key: str) -> RetiredKey:
    return RetiredKey(member=rotation.member, public_key=old_public_key,
                      key_id=rotation.old_key_id, successor_key_id=rotation.new_key_id,
                      retired_at=rotation.retired_at,
                      old_key_signature=rotation.old_key_signature,
                      new_key_signature=rotation.new_key_signature)


def _check_signed(federation: str, entry: RetiredKey, new_public_key: str) -> None:
    import base64

    try:
        new_raw = base64.b64decode(new_public_key, validate=True)
        old_pub = public_key_from_b64(entry.public_key)
        new_pub = public_key_from_b64(new_public_key)
    except ValueError:
        raise Rejected("rotation_bad_key", entry.member) from None
    if key_id_of(new_raw) != entry.successor_key_id:
        raise Rejected("rotation_bad_key", "the new key id is not the new key's fingerprint")
    payload = rotation_payload(federation, entry.member, entry.key_id, entry.successor_key_id,
                               entry.retired_at)
    if not verify(old_pub, entry.old_key_signature, payload):
        raise Rejected("rotation_unsigned", f"{entry.member}'s old key did not sign it")
    if not verify(new_pub, entry.new_key_signature, payload):
        raise Rejected("rotation_unsigned", f"{entry.member}'s new key did not sign it")


def check_key_changes(prev: RosterBody, nxt: RosterBody) -> None:
    """Raise `Rejected` unless every key change from `prev` to `nxt` is a signed rotation
    and every retired entry `nxt` adds is one (see the module docstring)."""
    before = {m.id: m for m in prev.members}
    added = {(r.member, r.key_id): r for r in nxt.retired_keys if r not in prev.retired_keys}
    for member in nxt.members:
        old = before.get(member.id)
        if old is None or old.key_id == member.key_id:
            continue
        entry = added.pop((member.id, old.key_id), None)
        if entry is None or entry.successor_key_id != member.key_id \
                or entry.public_key != old.public_key:
            raise Rejected("roster_key_change_unsigned",
                           f"{member.id}'s key changed without a rotation signed by both keys")
        _check_signed(nxt.federation, entry, member.public_key)
    if added:
        raise Rejected("roster_retired_key_unexplained",
                       "retired key(s) without a matching rotation: "
                       + ", ".join(f"{m}/{k}" for m, k in sorted(added)))
