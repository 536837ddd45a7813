"""The roster chain: N+1 needs the threshold of N's distinct keys, versions go up by one."""

from __future__ import annotations

import datetime as dt

import pytest
from msgspec.structs import replace

from contracts.iam import Roster, RosterBody, RosterMember, RosterSignature
from mesh.errors import Rejected
from mesh.keys import Identity
from mesh.trust import sign_roster
from services.iam.chain import chain_report, longest_valid_prefix, verify_chain, verify_successor

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
IDS = ("amstel", "dommel", "zuidas")


@pytest.fixture
def keys() -> dict[str, Identity]:
    return {m: Identity.generate(m) for m in (*IDS, "nieuw")}


def _member(i: Identity, roles: list[str] | None = None) -> RosterMember:
    return RosterMember(id=i.member, name=i.member, public_key=i.public_b64, key_id=i.key_id,
                        roles=roles or ["founder"])  # type: ignore[arg-type]


@pytest.fixture
def genesis(keys: dict[str, Identity]) -> Roster:
    body = RosterBody(federation="t", version=1, issued_at=NOW, threshold=2,
                      members=[_member(keys[m]) for m in IDS])
    return sign_roster(body, [keys[m] for m in IDS])


def _next_body(prev: Roster, keys: dict[str, Identity], version: int | None = None) -> RosterBody:
    members = [*prev.body.members, _member(keys["nieuw"], ["member"])]
    return RosterBody(federation="t", version=version or prev.body.version + 1,
                      issued_at=NOW, threshold=3, members=members)


def test_the_threshold_of_distinct_previous_keys_makes_a_successor(
    genesis: Roster, keys: dict[str, Identity]
) -> None:
    nxt = sign_roster(_next_body(genesis, keys), [keys["amstel"], keys["dommel"]])
    verify_successor(genesis, nxt)
    assert verify_chain([genesis, nxt]) is nxt


def test_below_the_threshold_is_refused(genesis: Roster, keys: dict[str, Identity]) -> None:
    nxt = sign_roster(_next_body(genesis, keys), [keys["amstel"]])
    with pytest.raises(Rejected) as caught:
        verify_successor(genesis, nxt)
    assert caught.value.reason == "roster_threshold_not_met"


def test_a_key_counted_twice_counts_once(genesis: Roster, keys: dict[str, Identity]) -> None:
    nxt = sign_roster(_next_body(genesis, keys), [keys["amstel"], keys["amstel"]])
    assert len(nxt.signatures) == 2
    with pytest.raises(Rejected) as caught:
        verify_successor(genesis, nxt)
    assert caught.value.reason == "roster_threshold_not_met"


def test_a_key_not_in_the_previous_version_does_not_count(
    genesis: Roster, keys: dict[str, Identity]
) -> None:
    # The newcomer's key (only in the new version) and a fresh key of a member.
    stranger = Identity.generate("dommel")
    nxt = sign_roster(_next_body(genesis, keys), [keys["amstel"], keys["nieuw"], stranger])
    with pytest.raises(Rejected) as caught:
        verify_successor(genesis, nxt)
    assert caught.value.reason == "roster_threshold_not_met"


def test_a_signature_under_another_members_name_does_not_count(
    genesis: Roster, keys: dict[str, Identity]
) -> None:
    nxt = sign_roster(_next_body(genesis, keys), [keys["amstel"]])
    forged = RosterSignature(member="dommel", key_id=keys["amstel"].key_id,
                             signature=nxt.signatures[0].signature)
    nxt = replace(nxt, signatures=[*nxt.signatures, forged])
    with pytest.raises(Rejected) as caught:
        verify_successor(genesis, nxt)
    assert caught.value.reason == "roster_threshold_not_met"


def test_a_skipped_version_is_refused(genesis: Roster, keys: dict[str, Identity]) -> None:
    nxt = sign_roster(_next_body(genesis, keys, version=3), [keys[m] for m in IDS])
    with pytest.raises(Rejected) as caught:
        verify_successor(genesis, nxt)
    assert caught.value.reason == "roster_version_skipped"


def test_a_repeated_version_is_refused(genesis: Roster, keys: dict[str, Identity]) -> None:
    nxt = sign_roster(_next_body(genesis, keys, version=1), [keys[m] for m in IDS])
    with pytest.raises(Rejected) as caught:
        verify_successor(genesis, nxt)
    assert caught.value.reason == "roster_version_stale"


def test_a_suspended_members_key_counts_no_more(
    genesis: Roster, keys: dict[str, Identity]
) -> None:
    members = [replace(m, state="suspended") if m.id == "zuidas" else m
               for m in genesis.body.members]
    v2 = sign_roster(RosterBody(federation="t", version=2, issued_at=NOW, threshold=2,
                                members=members), [keys["amstel"], keys["dommel"]])
    v3 = sign_roster(RosterBody(federation="t", version=3, issued_at=NOW, threshold=2,
                                members=members), [keys["amstel"], keys["zuidas"]])
    with pytest.raises(Rejected) as caught:
        verify_chain([genesis, v2, v3])
    assert caught.value.reason == "roster_threshold_not_met"


def test_reports_and_prefix_stop_at_the_first_break(
    genesis: Roster, keys: dict[str, Identity]
) -> None:
    v2 = sign_roster(_next_body(genesis, keys), [keys["amstel"], keys["dommel"]])
    bad_v3 = sign_roster(RosterBody(federation="t", version=3, issued_at=NOW, threshold=1,
                                    members=v2.body.members), [keys["amstel"]])
    good, broken = longest_valid_prefix([genesis, v2, bad_v3])
    assert good == [genesis, v2]
    assert broken is not None and broken.reason == "roster_threshold_not_met"
    report = chain_report([genesis, v2, bad_v3])
    assert [r.ok for r in report] == [True, True, False]
    assert "roster_threshold_not_met" in report[2].reason
