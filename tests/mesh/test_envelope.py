"""Signatures: accepted when right, refused with a named reason for every kind of wrong."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from contracts.iam import RosterBody, RosterMember
from contracts.security import SecurityViolation
from contracts.workload import WorkloadReleased
from mesh.envelope import H_SIG, H_TIME, format_time, open_message, seal
from mesh.errors import Rejected
from mesh.keys import Identity
from mesh.trust import TrustStore, sign_roster, verify_genesis

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def members() -> dict[str, Identity]:
    return {m: Identity.generate(m) for m in ("amstel", "dommel", "zuidas")}


@pytest.fixture
def trust(members: dict[str, Identity]) -> TrustStore:
    body = RosterBody(
        federation="t", version=1, issued_at=NOW, threshold=2,
        members=[RosterMember(id=i.member, name=i.member, public_key=i.public_b64,
                              key_id=i.key_id, roles=["founder"]) for i in members.values()],
    )
    roster = sign_roster(body, members.values())
    verify_genesis(roster)
    return TrustStore(roster)


def _signed(identity: Identity, event: WorkloadReleased | SecurityViolation,
            *, now: dt.datetime = NOW) -> tuple[str, dict[str, str], bytes]:
    subject = type(event).subject(identity.member, event.target())
    body = msgspec.json.encode(event)
    return subject, seal(identity, subject, type(event).type_name(), body, now=now), body


EVENT = WorkloadReleased(workload="wl-1", member="dommel", cause="test")


def test_a_good_message_opens(members: dict[str, Identity], trust: TrustStore) -> None:
    subject, headers, body = _signed(members["amstel"], EVENT)
    event, env = open_message(subject, headers, body, trust, received=NOW)
    assert event == EVENT
    assert env.member == "amstel" and env.type_name == "workload.released.v1"
    assert subject == "fed.v1.workload.released.amstel.wl-1"


def _reason(subject: str, headers: dict[str, str], body: bytes, trust: TrustStore,
            received: dt.datetime = NOW) -> str:
    with pytest.raises(Rejected) as caught:
        open_message(subject, headers, body, trust, received=received)
    return caught.value.reason


def test_tampered_body_is_refused(members: dict[str, Identity], trust: TrustStore) -> None:
    subject, headers, body = _signed(members["amstel"], EVENT)
    tampered = body.replace(b"dommel", b"zuidas")
    assert _reason(subject, headers, tampered, trust) == "bad_signature"


def test_wrong_key_is_refused(members: dict[str, Identity], trust: TrustStore) -> None:
    impostor = Identity.generate("amstel")  # same name, a key the roster does not know
    subject, headers, body = _signed(impostor, EVENT)
    assert _reason(subject, headers, body, trust) == "unknown_key"


def test_signature_by_another_members_key_is_refused(
    members: dict[str, Identity], trust: TrustStore
) -> None:
    subject, headers, body = _signed(members["amstel"], EVENT)
    other = members["dommel"]
    headers[H_SIG] = seal(other, subject, "workload.released.v1", body)[H_SIG]
    assert _reason(subject, headers, body, trust) == "bad_signature"


def test_member_not_in_roster_is_refused(trust: TrustStore) -> None:
    outsider = Identity.generate("evilcorp")
    subject, headers, body = _signed(outsider, EVENT)
    assert _reason(subject, headers, body, trust) == "unknown_member"


def test_subject_naming_another_member_is_refused(
    members: dict[str, Identity], trust: TrustStore
) -> None:
    subject, headers, body = _signed(members["amstel"], EVENT)
    forged_subject = subject.replace(".amstel.", ".dommel.")
    assert _reason(forged_subject, headers, body, trust) == "subject_mismatch"


def test_target_differing_from_body_is_refused(
    members: dict[str, Identity], trust: TrustStore
) -> None:
    identity = members["amstel"]
    subject = "fed.v1.workload.released.amstel.other-workload"
    body = msgspec.json.encode(EVENT)
    headers = seal(identity, subject, "workload.released.v1", body, now=NOW)
    assert _reason(subject, headers, body, trust) == "subject_mismatch"


def test_stale_time_is_refused(members: dict[str, Identity], trust: TrustStore) -> None:
    subject, headers, body = _signed(members["amstel"], EVENT,
                                     now=NOW - dt.timedelta(minutes=10))
    assert _reason(subject, headers, body, trust) == "stale_time"


def test_changed_time_header_breaks_the_signature(
    members: dict[str, Identity], trust: TrustStore
) -> None:
    subject, headers, body = _signed(members["amstel"], EVENT)
    headers[H_TIME] = format_time(NOW + dt.timedelta(seconds=1))
    assert _reason(subject, headers, body, trust) == "bad_signature"


def test_unsigned_and_malformed_are_refused(
    members: dict[str, Identity], trust: TrustStore
) -> None:
    subject, headers, body = _signed(members["amstel"], EVENT)
    assert _reason(subject, {}, body, trust) == "missing_header"
    bad_body = b'{"workload": 5}'
    headers = seal(members["amstel"], subject, "workload.released.v1", bad_body, now=NOW)
    assert _reason(subject, headers, bad_body, trust) == "malformed_body"


def test_genesis_needs_every_founder(members: dict[str, Identity]) -> None:
    body = RosterBody(
        federation="t", version=1, issued_at=NOW, threshold=2,
        members=[RosterMember(id=i.member, name=i.member, public_key=i.public_b64,
                              key_id=i.key_id, roles=["founder"]) for i in members.values()],
    )
    partial = sign_roster(body, [members["amstel"], members["dommel"]])
    with pytest.raises(Rejected) as caught:
        verify_genesis(partial)
    assert caught.value.reason == "roster_unsigned"
