"""The steward rule: which member's server should lead the JetStream groups."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.failover.steward import steward

MEMBERS = ["amstel", "dommel", "zuidas"]


def test_the_first_member_in_roster_order_that_is_up():
    assert steward(active=["zuidas", "amstel", "dommel"], down=[], silent=[]) == "amstel"
    assert steward(active=MEMBERS, down=["amstel"], silent=[]) == "dommel"
    assert steward(active=MEMBERS, down=[], silent=["amstel", "dommel"]) == "zuidas"
    assert steward(active=MEMBERS, down=MEMBERS, silent=[]) is None
    assert steward(active=[], down=[], silent=[]) is None


@given(st.sets(st.sampled_from(MEMBERS)), st.sets(st.sampled_from(MEMBERS)))
def test_observers_that_agree_on_who_is_up_agree_on_the_steward(down, silent):
    """No coordination needed: the rule depends on nothing but the inputs, in any order."""
    one = steward(active=MEMBERS, down=sorted(down), silent=sorted(silent))
    other = steward(active=list(reversed(MEMBERS)), down=down, silent=silent)
    assert one == other
    assert one is None or (one not in down and one not in silent)
    assert one is not None or set(MEMBERS) <= down | silent
