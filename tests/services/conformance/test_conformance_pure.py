"""The pure parts of the conformance suite: announcements, heartbeat gaps, JUnit XML."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import msgspec

from contracts.workload import WorkloadPlaced
from services.conformance.announcement import announcement_problems
from services.conformance.heartbeat import heartbeat_gaps, observation_window
from services.conformance.junit import junit_xml
from services.conformance.placement import new_workload_id, placement_for, release_for
from services.conformance.result import CheckResult
from support import demo_profiles

NOW = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_demo_announcements_are_valid() -> None:
    for profile in demo_profiles():
        assert announcement_problems(profile, profile.id) == []


def test_announcement_problems() -> None:
    profile = demo_profiles()[0]
    broken = msgspec.structs.replace(profile, sites=[], sov={"SOV-1": 2, "SOV-9": 1})
    problems = announcement_problems(broken, "someone-else")
    assert problems[0] == f"profile id {profile.id!r} is not 'someone-else'"
    assert "no sites" in problems
    assert any("SOV-2, SOV-3" in p and "SOV-8" in p for p in problems)
    assert any("SOV-9" in p for p in problems)


def test_heartbeats_on_time() -> None:
    ok, why = heartbeat_gaps([0.0, 1.0, 2.1, 3.0], 1.0, 3.9)
    assert ok, why
    assert "4 heartbeat(s)" in why


def test_heartbeat_gap_too_large() -> None:
    ok, why = heartbeat_gaps([0.0, 1.0, 2.6], 1.0, 3.0)
    assert not ok and "1.60s exceeds" in why
    # Silence at the end of the window counts too.
    ok, why = heartbeat_gaps([0.0, 1.0], 1.0, 2.7)
    assert not ok and "1.70s" in why
    assert heartbeat_gaps([], 1.0, 1.0) == (False, "no heartbeat")
    assert not heartbeat_gaps([0.0], 0.0, 1.0)[0]


def test_observation_window_is_bounded() -> None:
    assert observation_window(1.0, 10.0) == 3.0
    assert observation_window(30.0, 10.0) == 10.0


def test_test_placement_is_tiny_public_and_named() -> None:
    workload = new_workload_id()
    assert workload.startswith("conformance-") and len(workload) == len("conformance-") + 8
    placed = placement_for(workload, member="amstel", site="ams-1", decided_by="dommel",
                           now=NOW)
    assert isinstance(placed, WorkloadPlaced)
    assert placed.generation == 1 and placed.target() == workload
    assert placed.spec.requirements.classification == "openbaar"
    assert placed.spec.resources.vcpu <= 0.1
    assert placed.decision.summary == "conformance test placement"
    assert placed.decision.cause == "submitted"
    assert [(a.member, a.site) for a in placed.assignments] == [("amstel", "ams-1")]
    # It survives the bus's schema check.
    again = msgspec.json.decode(msgspec.json.encode(placed), type=WorkloadPlaced)
    assert again == placed
    release = release_for(workload, member="amstel")
    assert (release.member, release.cause, release.generation) == ("amstel", "conformance", 1)


def test_junit_xml_is_well_formed() -> None:
    results = [
        CheckResult(check="announcement", passed=True, detail="fine", duration_s=0.01),
        CheckResult(check="heartbeat", passed=False, detail="no heartbeat <&> within 3s",
                    duration_s=3.0),
    ]
    text = junit_xml(results, member="amstel", timestamp=NOW)
    root = ET.fromstring(text.encode())
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "stekker-conformance"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    assert suite.get("timestamp") == "2030-01-02T03:04:05+00:00"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["announcement", "heartbeat"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "no heartbeat <&> within 3s"
    assert failure.text == "no heartbeat <&> within 3s"
    assert float(cases[1].get("time", "0")) == 3.0
