"""The reservation ledger's arithmetic: reserve, release, fits (pure)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.resources import Resources
from contracts.state import Hold
from services.scheduler.capacity import free_capacity
from services.scheduler.ledger import (
    STALE_HOLD_S,
    Contended,
    Overbooked,
    at_least,
    fits,
    ledger_key,
    orphaned,
    release,
    release_many,
    reserve,
    reserve_many,
    total,
)
from support import demo_profiles

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
LIMIT = Resources(vcpu=8, memory_gib=16)
SMALL = Resources(vcpu=3, memory_gib=4)


def hold(attempt: str = "a", generation: int = 1, at: dt.datetime = NOW) -> Hold:
    return Hold(amount=SMALL, generation=generation, attempt=attempt, since=at)


def book(ledger, workload, **kw):
    return reserve(ledger, member="m", site="s", workload=workload, limit=LIMIT, now=NOW,
                   hold=hold(**kw))


def test_reserve_adds_and_refuses_past_the_limit():
    one = book(None, "w1")
    assert one is not None and one.member == "m" and one.site == "s"
    assert one.reserved == SMALL and set(one.holds) == {"w1"}
    two = book(one, "w2", attempt="b")
    assert two is not None and two.reserved == Resources(vcpu=6, memory_gib=8)
    assert not fits(two, SMALL, LIMIT) and fits(one, SMALL, LIMIT) and fits(None, SMALL, LIMIT)
    with pytest.raises(Overbooked):
        book(two, "w3", attempt="c")  # 9 vcpu > 8


def test_a_repeat_by_the_same_attempt_changes_nothing():
    one = book(None, "w1")
    assert book(one, "w1") is None


def test_a_rival_attempt_on_the_same_generation_is_contended_until_stale():
    one = book(None, "w1", attempt="a")
    with pytest.raises(Contended):
        book(one, "w1", attempt="b")
    # A newer generation replaces an older hold (the earlier one was never freed).
    newer = book(one, "w1", attempt="b", generation=2)
    assert newer is not None and newer.holds["w1"].attempt == "b" and newer.reserved == SMALL
    # An orphan (its attempt crashed long ago) yields.
    old = book(None, "w1", attempt="a", at=NOW - dt.timedelta(seconds=STALE_HOLD_S + 1))
    taken = book(old, "w1", attempt="b")
    assert taken is not None and taken.holds["w1"].attempt == "b"


def test_release_frees_exactly_the_workloads_hold_and_is_idempotent():
    two = book(book(None, "w1"), "w2", attempt="b")
    freed = release(two, "w1")
    assert freed is not None and freed.reserved == SMALL and set(freed.holds) == {"w2"}
    assert release(freed, "w1") is None
    assert release(None, "w1") is None
    # A losing attempt frees only its own hold, never a rival's.
    assert release(two, "w2", attempt="a") is None
    mine = release(two, "w2", attempt="b")
    assert mine is not None and set(mine.holds) == {"w1"}


def test_free_capacity_reads_the_ledger_and_never_less_than_the_placements(demo_profile):
    site = demo_profile.sites[0]
    amount = Resources(vcpu=1)
    profiles = {demo_profile.id: demo_profile}
    plain = free_capacity(profiles, [])[demo_profile.id][site.id]
    led = free_capacity(profiles, [], {(demo_profile.id, site.id): amount})
    assert led[demo_profile.id][site.id] == plain.minus(amount)
    assert at_least(Resources(vcpu=2, gpu=0), Resources(vcpu=1, gpu=1)) == Resources(vcpu=2, gpu=1)
    assert ledger_key("amstel", "ams-1") == "amstel.ams-1"


@pytest.fixture
def demo_profile():
    return demo_profiles()[0]


# -- many at once (a batch's group commit) ------------------------------------------------


def many(ledger, workloads, *, attempt: str = "batch", generation: int = 1):
    return reserve_many(ledger, member="m", site="s", limit=LIMIT, now=NOW,
                        holds=[(w, hold(attempt=attempt, generation=generation))
                               for w in workloads])


def test_reserve_many_takes_in_order_until_full_and_says_why_for_the_rest():
    ledger, refused = many(None, ["w1", "w2", "w3"])
    assert ledger is not None and list(ledger.holds) == ["w1", "w2"]
    assert ledger.reserved == Resources(vcpu=6, memory_gib=8)
    assert set(refused) == {"w3"} and isinstance(refused["w3"], Overbooked)


def test_reserve_many_repeats_nothing_and_leaves_a_live_rival_alone():
    first, _ = many(None, ["w1"], attempt="a")
    again, refused = many(first, ["w1"], attempt="a")
    assert again is None and refused == {}
    rival, refused = many(first, ["w1", "w2"], attempt="b")
    assert isinstance(refused["w1"], Contended)
    assert rival is not None and rival.holds["w1"].attempt == "a" and "w2" in rival.holds


def test_reserve_many_replaces_a_stale_hold_without_counting_it_twice():
    old = reserve(None, member="m", site="s", workload="w1", limit=LIMIT, now=NOW,
                  hold=hold(attempt="dead", at=NOW - dt.timedelta(seconds=STALE_HOLD_S + 1)))
    ledger, refused = many(old, ["w1", "w2"], attempt="b")
    assert refused == {} and ledger is not None
    assert ledger.holds["w1"].attempt == "b" and ledger.reserved == Resources(vcpu=6,
                                                                             memory_gib=8)


def test_release_many_frees_only_the_attempt_named():
    ledger, _ = many(None, ["w1", "w2"], attempt="a")
    assert release_many(ledger, ["w1"], attempt="other") is None
    freed = release_many(ledger, ["w1", "w9"], attempt="a")
    assert freed is not None and list(freed.holds) == ["w2"] and freed.reserved == SMALL
    assert release_many(None, ["w1"]) is None


@given(st.lists(st.tuples(st.sampled_from(["w1", "w2", "w3", "w4", "w5", "w6"]),
                          st.integers(min_value=1, max_value=5)), max_size=12))
def test_reserve_many_never_exceeds_the_limit_and_sums_exactly(asks):
    ledger = None
    for i, (workload, vcpu) in enumerate(asks):
        held = Hold(amount=Resources(vcpu=vcpu, memory_gib=1), generation=i + 1,
                    attempt=f"a{i}", since=NOW)
        new, _ = reserve_many(ledger, member="m", site="s", limit=LIMIT, now=NOW,
                              holds=[(workload, held)])
        ledger = new or ledger
        if ledger is not None:
            assert ledger.reserved.fits_in(LIMIT)
            assert ledger.reserved == total(ledger.holds.values())


def test_orphaned_names_old_holds_no_placement_accounts_for():
    old = NOW - dt.timedelta(seconds=200)
    ledger, _ = reserve_many(None, member="m", site="s", limit=LIMIT, now=NOW, holds=[
        ("kept", Hold(amount=SMALL, generation=1, attempt="a", since=old)),
        ("ghost", Hold(amount=SMALL, generation=1, attempt="a", since=old)),
    ])
    fresh, _ = reserve_many(ledger, member="m", site="s", limit=LIMIT, now=NOW,
                            holds=[("in-flight", Hold(amount=Resources(vcpu=1),
                                                      generation=1, attempt="b", since=NOW))])
    assert fresh is not None
    assert orphaned(fresh, lambda w: w == "kept", NOW, older_than_s=120) == ["ghost"]
