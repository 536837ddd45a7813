"""Key rotation: a roster change signed by old and new key; the old key retires."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from contracts.iam import Roster, RosterMember
from contracts.workload import WorkloadReleased
from mesh.envelope import open_message, seal
from mesh.errors import Rejected
from mesh.keys import Identity
from mesh.trust import TrustStore, roster_payload, sign_roster
from services.iam.chain import verify_chain, verify_successor
from services.iam.changes import next_body
from services.iam.genesis import build_genesis
from services.iam.rotation import make_rotation
from services.iam.tokens import issue_token, verify_token
from support import demo_profiles

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
RETIRE = NOW + dt.timedelta(minutes=5)


@pytest.fixture
def fed() -> tuple[dict[str, Identity], Roster]:
    profiles = demo_profiles()
    ids = {p.id: Identity.generate(p.id) for p in profiles}
    return ids, build_genesis("stekker-test", profiles, ids, NOW)


def rotated(ids: dict[str, Identity], v1: Roster, new: Identity) -> Roster:
    rotation = make_rotation(ids["amstel"], new, "stekker-test", RETIRE)
    body = next_body(v1, "rotate", "amstel", NOW, rotation=rotation)
    return sign_roster(body, [ids["amstel"], ids["dommel"]])


def message(identity: Identity, sent: dt.datetime) -> tuple[str, dict[str, str], bytes]:
    event = WorkloadReleased(workload="wl-1", member=identity.member, cause="test")
    subject = WorkloadReleased.subject(identity.member, "wl-1")
    body = msgspec.json.encode(event)
    return subject, seal(identity, subject, WorkloadReleased.type_name(), body, now=sent), body


def test_a_rotation_retires_the_old_key_at_its_time(fed) -> None:
    ids, v1 = fed
    new = Identity.generate("amstel")
    v2 = rotated(ids, v1, new)
    assert verify_chain([v1, v2]) == v2
    trust = TrustStore(v2)
    before = RETIRE - dt.timedelta(seconds=30)
    subject, headers, body = message(ids["amstel"], before)
    open_message(subject, headers, body, trust, received=before)  # still valid
    after = RETIRE + dt.timedelta(seconds=1)
    subject, headers, body = message(ids["amstel"], after)
    with pytest.raises(Rejected) as caught:
        open_message(subject, headers, body, trust, received=after)
    assert caught.value.reason == "key_retired"
    subject, headers, body = message(new, after)
    open_message(subject, headers, body, trust, received=after)
    # Tokens of the old key stop at once: only active keys issue tokens.
    token = issue_token(ids["amstel"], "tenant", "minbzk", 600, NOW)
    with pytest.raises(Rejected) as caught:
        verify_token(token, trust, NOW)
    assert caught.value.reason == "token_issuer_not_active"
    verify_token(issue_token(new, "tenant", "minbzk", 600, NOW), trust, NOW)


def test_a_rotation_needs_the_endorsement_threshold(fed) -> None:
    ids, v1 = fed
    rotation = make_rotation(ids["amstel"], Identity.generate("amstel"), "stekker-test", RETIRE)
    body = next_body(v1, "rotate", "amstel", NOW, rotation=rotation)
    with pytest.raises(Rejected) as caught:
        verify_successor(v1, sign_roster(body, [ids["amstel"]]))
    assert caught.value.reason == "roster_threshold_not_met"


def test_a_key_change_without_both_signatures_is_refused(fed) -> None:
    ids, v1 = fed
    new = Identity.generate("amstel")
    v2 = rotated(ids, v1, new)
    entry = v2.body.retired_keys[0]
    # The new key's signature made by someone else: the new key is not proven held.
    stranger = make_rotation(ids["amstel"], Identity.generate("amstel"), "stekker-test", RETIRE)
    bad_entry = msgspec.structs.replace(entry, new_key_signature=stranger.new_key_signature)
    body = msgspec.structs.replace(v2.body, retired_keys=[bad_entry])
    with pytest.raises(Rejected) as caught:
        verify_successor(v1, sign_roster(body, [ids["amstel"], ids["dommel"]]))
    assert caught.value.reason == "rotation_unsigned"
    # No retired entry at all: a plain key swap by a majority.
    body = msgspec.structs.replace(v2.body, retired_keys=[])
    with pytest.raises(Rejected) as caught:
        verify_successor(v1, sign_roster(body, [ids["amstel"], ids["dommel"]]))
    assert caught.value.reason == "roster_key_change_unsigned"


def test_a_retired_key_without_a_rotation_is_refused(fed) -> None:
    ids, v1 = fed
    v2 = rotated(ids, v1, Identity.generate("amstel"))
    # A "retired" key slipped in for dommel, whose key does not change: it would let the
    # stranger speak for dommel until retired_at.
    forged = msgspec.structs.replace(v2.body.retired_keys[0], member="dommel")
    body = msgspec.structs.replace(v1.body, version=2, retired_keys=[forged])
    with pytest.raises(Rejected) as caught:
        verify_successor(v1, sign_roster(body, [ids["amstel"], ids["dommel"]]))
    assert caught.value.reason == "roster_retired_key_unexplained"


def test_rosters_without_retired_keys_sign_the_same_bytes_as_before(fed) -> None:
    _, v1 = fed

    class OldBody(msgspec.Struct, kw_only=True, frozen=True):  # before key rotation
        federation: str
        version: int
        issued_at: dt.datetime
        threshold: int
        members: list[RosterMember]

    b = v1.body
    old = OldBody(federation=b.federation, version=b.version, issued_at=b.issued_at,
                  threshold=b.threshold, members=b.members)
    assert roster_payload(b) == b"stekker-roster-v1\n" + msgspec.json.encode(old)
