"""Tokens: EdDSA JWTs issued by a member key, checked against the roster in force."""

from __future__ import annotations

import datetime as dt

import jwt
import msgspec
import pytest

from contracts.iam import Roster, RosterBody
from mesh.errors import Rejected
from mesh.keys import Identity
from mesh.trust import TrustStore
from services.iam.genesis import build_genesis
from services.iam.tokens import (
    H_TOKEN,
    SUBMIT_ROLES,
    TAKEOVER_ROLES,
    authorize,
    issue_token,
    verify_token,
)
from support import demo_profiles

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def fed() -> tuple[dict[str, Identity], Roster]:
    profiles = demo_profiles()
    ids = {p.id: Identity.generate(p.id) for p in profiles}
    return ids, build_genesis("stekker-test", profiles, ids, NOW)


def suspended(roster: Roster, member: str) -> Roster:
    members = [msgspec.structs.replace(m, state="suspended") if m.id == member else m
               for m in roster.body.members]
    body = RosterBody(federation=roster.body.federation, version=roster.body.version + 1,
                      issued_at=NOW, threshold=2, members=members)
    return Roster(body=body, signatures=[])  # the trust store takes what it is given


def reason(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(Rejected) as info:
        call()
    return info.value.reason


def test_a_token_verifies_with_its_claims(fed) -> None:
    ids, roster = fed
    token = issue_token(ids["amstel"], "tenant", "minbzk", 3600, NOW)
    claims = verify_token(token, TrustStore(roster), NOW + dt.timedelta(minutes=59))
    assert (claims.role, claims.org, claims.member) == ("tenant", "minbzk", "amstel")
    assert claims.key_id == ids["amstel"].key_id
    assert claims.exp - claims.iat == dt.timedelta(hours=1)
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"


def test_an_expired_token_is_refused(fed) -> None:
    ids, roster = fed
    token = issue_token(ids["amstel"], "tenant", "minbzk", 60, NOW)
    later = NOW + dt.timedelta(seconds=60)
    assert reason(lambda: verify_token(token, TrustStore(roster), later)) == "token_expired"


def test_a_tampered_token_is_refused(fed) -> None:
    ids, roster = fed
    token = issue_token(ids["amstel"], "tenant", "minbzk", 60, NOW)
    head, _, sig = token.split(".")
    other = issue_token(ids["amstel"], "operator", "minbzk", 60, NOW).split(".")[1]
    forged = f"{head}.{other}.{sig}"
    assert reason(lambda: verify_token(forged, TrustStore(roster), NOW)) == "token_bad_signature"


def test_a_token_signed_by_a_key_outside_the_roster_is_refused(fed) -> None:
    _, roster = fed
    stranger = Identity.generate("amstel")  # claims to be amstel, with its own key
    token = issue_token(stranger, "operator", "minbzk", 60, NOW)
    assert reason(lambda: verify_token(token, TrustStore(roster), NOW)) == \
        "token_issuer_not_active"
    outsider = issue_token(Identity.generate("nieuw"), "operator", "x", 60, NOW)
    assert reason(lambda: verify_token(outsider, TrustStore(roster), NOW)) == \
        "token_issuer_not_active"


def test_a_token_of_a_member_suspended_later_is_refused(fed) -> None:
    ids, roster = fed
    token = issue_token(ids["zuidas"], "tenant", "minbzk", 3600, NOW)
    trust = TrustStore(roster)
    verify_token(token, trust, NOW)
    trust.install(suspended(roster, "zuidas"))
    assert reason(lambda: verify_token(token, trust, NOW)) == "token_issuer_not_active"


def test_garbage_is_malformed(fed) -> None:
    _, roster = fed
    assert reason(lambda: verify_token("not.a.jwt", TrustStore(roster), NOW)) == \
        "token_malformed"


def test_issue_refuses_bad_input(fed) -> None:
    ids, _ = fed
    with pytest.raises(ValueError):
        issue_token(ids["amstel"], "admin", "x", 60, NOW)
    with pytest.raises(ValueError):
        issue_token(ids["amstel"], "tenant", "x", 10 * 24 * 3600, NOW)


def test_authorize_checks_presence_role_and_member(fed) -> None:
    ids, roster = fed
    trust = TrustStore(roster)

    def check(token: str | None, publisher: str, roles: frozenset[str]) -> object:
        headers = {H_TOKEN: token} if token else {}
        return authorize(headers, trust, publisher=publisher, roles=roles, now=NOW)

    tenant = issue_token(ids["amstel"], "tenant", "minbzk", 60, NOW)
    operator = issue_token(ids["amstel"], "operator", "amstel-ops", 60, NOW)
    reader = issue_token(ids["amstel"], "soc-reader", "ncsc", 60, NOW)
    assert check(tenant, "amstel", SUBMIT_ROLES)
    assert check(operator, "amstel", TAKEOVER_ROLES)
    assert reason(lambda: check(None, "amstel", SUBMIT_ROLES)) == "token_missing"
    assert reason(lambda: check(reader, "amstel", SUBMIT_ROLES)) == "token_role"
    assert reason(lambda: check(tenant, "amstel", TAKEOVER_ROLES)) == "token_role"
    assert reason(lambda: check(tenant, "dommel", SUBMIT_ROLES)) == "token_member_mismatch"
