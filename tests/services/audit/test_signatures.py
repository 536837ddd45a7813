"""Signatures judged by the roster of their time: a key admitted in version 2 does not
vouch for a message stored before version 2's event, and does after it."""

from __future__ import annotations

import datetime as dt

import msgspec

from contracts.base import Event
from contracts.iam import Roster, RosterBody, RosterMember, RosterPublished
from contracts.security import SecurityViolation
from mesh.bus import StoredMessage
from mesh.envelope import seal
from mesh.keys import Identity
from mesh.trust import sign_roster
from services.audit.replay import Auditor
from services.audit.signatures import SignatureAudit

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
FOUNDERS = ("amstel", "dommel", "zuidas")


def _member(i: Identity, role: str) -> RosterMember:
    return RosterMember(id=i.member, name=i.member, public_key=i.public_b64, key_id=i.key_id,
                        roles=[role])  # type: ignore[list-item]


def _stored(seq: int, identity: Identity, event: Event) -> StoredMessage:
    subject = type(event).subject(identity.member, event.target())
    body = msgspec.json.encode(event)
    headers = seal(identity, subject, type(event).type_name(), body, now=NOW)
    return StoredMessage(seq=seq, subject=subject, headers=headers, data=body, stored=NOW)


def _note(text: str) -> SecurityViolation:
    return SecurityViolation(reason="test", detail=text, offending_subject="x")


def test_each_message_is_judged_by_the_roster_in_force_where_it_sits() -> None:
    keys = {m: Identity.generate(m) for m in (*FOUNDERS, "nieuw")}
    founders = [_member(keys[m], "founder") for m in FOUNDERS]
    genesis = sign_roster(RosterBody(federation="t", version=1, issued_at=NOW, threshold=2,
                                     members=founders), [keys[m] for m in FOUNDERS])
    v2_body = RosterBody(federation="t", version=2, issued_at=NOW, threshold=2,
                         members=[*founders, _member(keys["nieuw"], "member")])
    v2 = sign_roster(v2_body, [keys["amstel"], keys["dommel"]])
    usurper = Roster(body=v2_body, signatures=sign_roster(v2_body, [keys["nieuw"]]).signatures)

    stream = [
        _stored(1, keys["dommel"], _note("before the genesis event")),
        _stored(2, keys["amstel"], RosterPublished(roster=genesis)),
        _stored(3, keys["nieuw"], _note("not a member yet")),
        _stored(4, keys["nieuw"], RosterPublished(roster=usurper)),
        _stored(5, keys["amstel"], RosterPublished(roster=v2)),
        _stored(6, keys["nieuw"], _note("admitted now")),
    ]
    audit = SignatureAudit()
    verdicts = {c.message.seq: c for m in stream for c in audit.feed(m)}
    assert not list(audit.finish())
    failures = {seq: c.failure.reason for seq, c in verdicts.items() if c.failure}
    assert failures == {3: "unknown_member", 4: "roster_threshold_not_met"}
    assert sorted(verdicts) == [1, 2, 3, 4, 5, 6]
    assert audit.timeline.version == 2

    auditor = Auditor(since=3)
    for message in stream:
        auditor.feed(message)
    report = auditor.finish()
    assert report.messages == 4 and report.signatures_ok == 2 and not report.ok


def test_without_a_genesis_nothing_verifies() -> None:
    amstel = Identity.generate("amstel")
    auditor = Auditor()
    auditor.feed(_stored(1, amstel, _note("alone")))
    report = auditor.finish()
    assert report.failures_by_reason() == {"no_roster": 1} and not report.ok
