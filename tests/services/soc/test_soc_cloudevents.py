"""Building CloudEvents from verified FED events: attributes, formats, the SDK agrees."""

from __future__ import annotations

import json

import msgspec
import pytest
from cloudevents.core.formats.json import JSONFormat

from contracts.base import Event
from contracts.failover import MemberDown
from contracts.iam import Roster, RosterBody, RosterPublished
from contracts.resources import Resources
from contracts.security import SecurityViolation
from contracts.workload import (
    Assignment,
    BoundItem,
    DecisionRecord,
    PlacedItem,
    PlacementsDispatched,
    WorkloadPlaced,
    WorkloadsBound,
    WorkloadSpec,
    WorkloadsPlaced,
)
from mesh.envelope import Envelope, parse_time
from services.soc.cloudevents import (
    InvalidCloudEvent,
    build,
    check,
    decode,
    encode,
    fed_type,
    publisher,
    to_dict,
)
from services.soc.render import data_summary, line_fields

NOW = parse_time("2030-05-06T07:08:09.123Z")


def envelope(event: Event, member: str = "dommel", seq: int | None = 42) -> Envelope:
    subject = type(event).subject(member, event.target())
    return Envelope(subject=subject, msg_id="0192d1f0-aaaa-7bbb-8ccc-0123456789ab",
                    type_name=type(event).type_name(), member=member, key_id="k" * 16,
                    time=NOW, headers={}, stream_seq=seq)


def placed() -> WorkloadPlaced:
    spec = WorkloadSpec(id="wl-a", tenant="belastingdienst", resources=Resources(vcpu=1))
    chosen = [Assignment(member="amstel", site="ams-1")]
    return WorkloadPlaced(
        spec=spec, assignments=chosen,
        decision=DecisionRecord(workload="wl-a", decided_by="dommel", decided_at=NOW,
                                chosen=chosen),
    )


def test_placed_event_as_cloudevent() -> None:
    event = placed()
    ce = to_dict(build(event, envelope(event), severity="info"))
    assert ce["specversion"] == "1.0"
    assert ce["id"] == "0192d1f0-aaaa-7bbb-8ccc-0123456789ab"
    assert ce["source"] == "stekker://member/dommel"
    assert ce["type"] == "eu.stekker.workload.placed.v1"
    assert parse_time(ce["time"]) == NOW
    assert ce["subject"] == "wl-a"
    assert ce["datacontenttype"] == "application/json"
    assert ce["severity"] == "info"
    assert ce["stekkerseq"] == 42
    assert ce["data"]["spec"]["id"] == "wl-a"
    assert ce["data"]["assignments"] == [{"member": "amstel", "site": "ams-1", "replica": 0}]
    assert fed_type(ce) == "workload.placed.v1" and publisher(ce) == "dommel"


def test_structured_json_reads_back_with_the_sdk() -> None:
    event = placed()
    body = encode(build(event, envelope(event), severity="info"))
    again = JSONFormat().read(None, body)
    assert again.get_id() == "0192d1f0-aaaa-7bbb-8ccc-0123456789ab"
    assert again.get_type() == "eu.stekker.workload.placed.v1"
    assert again.get_time() == NOW
    assert again.get_extension("severity") == "info"
    assert again.get_extension("stekkerseq") == 42
    assert decode(body) == json.loads(body)


def test_subject_of_untargeted_events() -> None:
    violation = SecurityViolation(reason="unknown_key", offending_subject="fed.v1.x.y.amstel",
                                  claimed_member="amstel", msg_id="m1")
    ce = to_dict(build(violation, envelope(violation, "zuidas"), severity="high"))
    assert ce["subject"] == "amstel"
    assert ce["type"] == "eu.stekker.security.violation.v1"
    roster = RosterPublished(roster=Roster(
        body=RosterBody(federation="f", version=1, issued_at=NOW, threshold=1, members=[]),
        signatures=[]))
    ce = to_dict(build(roster, envelope(roster, seq=None), severity="info"))
    assert "subject" not in ce and "stekkerseq" not in ce


def test_extension_names_are_lowercase_alphanumeric() -> None:
    down = MemberDown(member="amstel", epoch=1, quorum=2, evidence=[])
    ce = to_dict(build(down, envelope(down), severity="high"))
    standard = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype",
                "dataschema", "data"}
    extensions = set(ce) - standard
    assert extensions == {"severity", "stekkerseq"}
    assert all(name.isalnum() and name.islower() for name in extensions)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": ""}, "missing required"),
        ({"source": None}, "missing required"),
        ({"specversion": "0.3"}, "specversion"),
        ({"source": "https://example.org/x"}, "source"),
        ({"type": "workload.placed.v1"}, "type"),
        ({"severity": "urgent"}, "severity"),
        ({"stekkerseq": 0}, "stekkerseq"),
    ],
)
def test_check_refuses_broken_events(change: dict[str, object], message: str) -> None:
    event = placed()
    ce = to_dict(build(event, envelope(event), severity="info")) | change
    with pytest.raises(InvalidCloudEvent, match=message):
        check(ce)


def test_decode_refuses_non_objects() -> None:
    with pytest.raises(InvalidCloudEvent):
        decode(b"not json")
    with pytest.raises(InvalidCloudEvent):
        decode(b"[1, 2]")


def test_readable_line() -> None:
    event = placed()
    ce = to_dict(build(event, envelope(event), severity="info"))
    time, severity, kind, source, subject, summary = line_fields(ce)
    assert (severity, kind, source, subject) == ("info", "workload.placed.v1", "dommel", "wl-a")
    assert time == "2030-05-06T07:08:09.123Z"
    assert summary == "gen 1 → amstel/ams-1"
    one = placed()
    batch = WorkloadsPlaced(placements=[
        PlacedItem(spec=msgspec.structs.replace(one.spec, id=f"wl-{n}"),
                   assignments=one.assignments, decision=one.decision) for n in range(5)])
    ce = to_dict(build(batch, envelope(batch), severity="info"))
    assert data_summary(ce) == ("5 placement(s): wl-0→amstel/ams-1, wl-1→amstel/ams-1, "
                                "wl-2→amstel/ams-1 +2")
    dispatched = PlacementsDispatched(placements=batch.placements[:1], to="amstel")
    ce = to_dict(build(dispatched, envelope(dispatched), severity="info"))
    assert data_summary(ce) == "1 placement(s): wl-0→amstel/ams-1"
    bindings = WorkloadsBound(driver="sim", bindings=[
        BoundItem(workload="wl-0", site="ams-1", generation=1)])
    ce = to_dict(build(bindings, envelope(bindings), severity="info"))
    assert data_summary(ce) == "1 replica(s) driver=sim: wl-0@ams-1"
    violation = SecurityViolation(reason="bad_signature", offending_subject="s",
                                  claimed_member="amstel", msg_id="m1")
    ce = to_dict(build(violation, envelope(violation), severity="high"))
    assert data_summary(ce).startswith("bad_signature claimed=amstel msg=m1")
    assert data_summary({"type": "eu.stekker.x.y.v1", "data": {"a": 1, "b": [1]}}) == "a=1"
    site_down = {"type": "eu.stekker.member.down.v1", "data": {
        "member": "dommel", "site": "aac1", "epoch": 1, "quorum": 2,
        "evidence": [{"observer": "amstel"}, {"observer": "zuidas"}]}}
    assert data_summary(site_down) == "site aac1: epoch 1 quorum 2 observers=amstel,zuidas"
