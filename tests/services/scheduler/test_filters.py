"""Each feasibility filter, passing and failing, with its reason word."""

from __future__ import annotations

import datetime as dt

import pytest

from contracts.registry import Certification, MemberProfile, Site
from contracts.resources import Resources
from contracts.workload import Assignment, Requirements, WorkloadSpec
from services.scheduler import filters
from services.scheduler.capacity import free_capacity
from services.scheduler.filters import FilterContext
from services.scheduler.jurisdiction import EEA, EU, allowed_countries
from services.scheduler.scoring import balance_score
from services.scheduler.snapshot import MemberView
from services.scheduler.sovereignty import overall_seal, weighted_score

TODAY = dt.date(2026, 6, 1)
ALL_FOUR = {f"SOV-{i}": 4 for i in range(1, 9)}


def site(id="s1", country="NL", vcpu=64.0, memory=256.0, storage=1000.0) -> Site:
    return Site(
        id=id,
        country=country,
        capacity=Resources(vcpu=vcpu, memory_gib=memory, storage_gib=storage),
    )


def profile(**overrides) -> MemberProfile:
    fields = {
        "id": "amstel",
        "name": "Amstel",
        "legal_seat": "NL",
        "sov": ALL_FOUR,
        "cleared_classifications": ["openbaar", "bbn1", "bbn2"],
        "certifications": [Certification(name="BIO2", expires=dt.date(2027, 1, 1))],
        "sites": [site()],
    }
    fields.update(overrides)
    return MemberProfile(**fields)


def view(status="active", free=None, **overrides) -> MemberView:
    return MemberView(profile=profile(**overrides), status=status, free=free or {})


def spec(**requirements) -> WorkloadSpec:
    return WorkloadSpec(
        id="w1",
        tenant="rivm",
        resources=Resources(vcpu=8, memory_gib=32, storage_gib=100),
        requirements=Requirements(**requirements),
    )


CTX = FilterContext(today=TODAY)


def test_member_excluded():
    failed = filters.member_excluded(spec(), view(), FilterContext(TODAY, frozenset({"amstel"})))
    assert (failed.passed, failed.reason, failed.member) == (False, "member_excluded", "amstel")
    passed = filters.member_excluded(spec(), view(), CTX)
    assert passed.passed and passed.reason == "member_excluded"


@pytest.mark.parametrize("status", ["suspected", "down", "frozen"])
def test_member_not_active(status):
    verdict = filters.member_not_active(spec(), view(status=status), CTX)
    assert (verdict.passed, verdict.reason) == (False, "member_not_active")
    assert status in verdict.detail
    assert filters.member_not_active(spec(), view(), CTX).passed


def test_overall_seal_is_the_minimum_and_missing_objectives_count_zero():
    assert overall_seal(profile()) == 4
    assert overall_seal(profile(sov={**ALL_FOUR, "SOV-5": 2})) == 2
    missing = dict(ALL_FOUR)
    del missing["SOV-8"]
    assert overall_seal(profile(sov=missing)) == 0
    assert weighted_score(profile()) == pytest.approx(4.0)
    assert weighted_score(profile(sov={"SOV-5": 4})) == pytest.approx(0.8)


def test_seal_too_low():
    low = view(sov={**ALL_FOUR, "SOV-2": 2})
    verdict = filters.seal_too_low(spec(min_seal=3), low, CTX)
    assert (verdict.passed, verdict.reason) == (False, "seal_too_low")
    assert verdict.detail.startswith("SEAL-2 < required SEAL-3")
    assert "SOV-2" in verdict.detail
    assert filters.seal_too_low(spec(min_seal=2), low, CTX).passed
    assert filters.seal_too_low(spec(min_seal=4), view(), CTX).passed


def test_classification_not_cleared():
    verdict = filters.classification_not_cleared(spec(classification="bbn3"), view(), CTX)
    assert (verdict.passed, verdict.reason) == (False, "classification_not_cleared")
    assert "bbn3" in verdict.detail
    assert filters.classification_not_cleared(spec(classification="bbn2"), view(), CTX).passed


def test_certification_missing_absent_and_named():
    verdict = filters.certification_missing(spec(certifications=["BIO2", "NEN7510"]), view(), CTX)
    assert (verdict.passed, verdict.reason) == (False, "certification_missing")
    assert "NEN7510" in verdict.detail and "BIO2" not in verdict.detail


def test_certification_expired_counts_as_absent():
    expired = view(certifications=[Certification(name="BIO2", expires=dt.date(2026, 5, 31))])
    verdict = filters.certification_missing(spec(certifications=["BIO2"]), expired, CTX)
    assert not verdict.passed
    assert "BIO2 expired 2026-05-31" in verdict.detail


def test_certification_valid_on_its_last_day_without_expiry_and_spelled_loosely():
    last_day = view(certifications=[Certification(name="BIO2", expires=TODAY)])
    assert filters.certification_missing(spec(certifications=["BIO2"]), last_day, CTX).passed
    forever = view(certifications=[Certification(name="ISO 27001")])
    assert filters.certification_missing(spec(certifications=["iso27001"]), forever, CTX).passed
    renewed = view(
        certifications=[
            Certification(name="BIO2", expires=dt.date(2025, 1, 1)),
            Certification(name="BIO2", expires=dt.date(2028, 1, 1)),
        ]
    )
    assert filters.certification_missing(spec(certifications=["BIO2"]), renewed, CTX).passed
    assert filters.certification_missing(spec(), view(certifications=[]), CTX).passed


def test_jurisdiction_groups():
    assert len(EU) == 27 and "DE" in EU and "NO" not in EU and "GB" not in EU
    assert EEA == EU | {"IS", "LI", "NO"}
    assert allowed_countries(["NL", "CH"]) == {"NL", "CH"}


@pytest.mark.parametrize(
    ("country", "jurisdictions", "ok"),
    [
        ("NL", ["NL"], True),
        ("DE", ["NL"], False),
        ("DE", ["EU"], True),
        ("NO", ["EU"], False),
        ("NO", ["EEA"], True),
        ("US", ["EEA"], False),
        ("CH", ["EU", "CH"], True),
        ("NL", [], False),
    ],
)
def test_jurisdiction_not_allowed(country, jurisdictions, ok):
    member = view(sites=[site(country=country)])
    the_site = member.profile.sites[0]
    verdict = filters.jurisdiction_not_allowed(
        spec(jurisdictions=jurisdictions), member, the_site, CTX
    )
    assert verdict.passed is ok
    assert verdict.reason == "jurisdiction_not_allowed"
    assert verdict.site == "s1"


def test_insufficient_capacity_names_the_short_resources():
    tight = Resources(vcpu=4, memory_gib=64, storage_gib=50)
    member = view(free={"s1": tight})
    verdict = filters.insufficient_capacity(spec(), member, member.profile.sites[0], CTX)
    assert (verdict.passed, verdict.reason, verdict.site) == (False, "insufficient_capacity", "s1")
    assert "vcpu" in verdict.detail and "storage_gib" in verdict.detail
    assert "memory_gib" not in verdict.detail.split("(")[0]


def test_insufficient_capacity_passes_and_unreported_site_counts_its_capacity():
    member = view()  # nothing in `free`: the declared capacity is free
    assert filters.insufficient_capacity(spec(), member, member.profile.sites[0], CTX).passed
    exact = view(free={"s1": Resources(vcpu=8, memory_gib=32, storage_gib=100)})
    assert filters.insufficient_capacity(spec(), exact, exact.profile.sites[0], CTX).passed


def test_free_capacity_subtracts_and_clamps():
    profiles = {"amstel": profile(sites=[site("s1"), site("s2")])}
    big = WorkloadSpec(id="big", tenant="t", resources=Resources(vcpu=100))
    small = WorkloadSpec(id="small", tenant="t", resources=Resources(vcpu=8, memory_gib=16))
    free = free_capacity(
        profiles,
        [
            (big, [Assignment(member="amstel", site="s1")]),
            (small, [Assignment(member="amstel", site="s2"), Assignment(member="gone", site="x")]),
        ],
    )
    assert free["amstel"]["s1"] == Resources(vcpu=0, memory_gib=256, storage_gib=1000)
    assert free["amstel"]["s2"] == Resources(vcpu=56, memory_gib=240, storage_gib=1000)


def test_balance_score_prefers_room_left():
    request = Resources(vcpu=8, memory_gib=32, storage_gib=100)
    capacity = Resources(vcpu=64, memory_gib=256, storage_gib=1000)
    empty = balance_score(request, capacity, capacity)
    half = balance_score(request, Resources(vcpu=32, memory_gib=128, storage_gib=500), capacity)
    assert 0 <= half < empty <= 100
    assert balance_score(request, Resources(), capacity) == 0
    assert balance_score(Resources(), capacity, capacity) == 100
    assert balance_score(request, Resources(), Resources()) == 0
