"""Which member's server should lead the federation's JetStream groups: the steward.

Why one member leads them all (mesh/leaders.py): a dead server stalls the groups it led
for JetStream's 4 to 9 s election, so leaders spread over every server make nearly every
member's death a slow failover, and leaders kept on one server make only that member's
death one. The steward holds no authority: every write still needs the RAFT quorum, and
every decision its compare-and-set and signatures. It only answers writes first.

The rule is deterministic, so members agree without talking: the first active member in
roster order that is neither declared down nor silent to this observer. When the steward
dies, the next one pulls the leaders (elected anywhere meanwhile) to itself once they
have been elected.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable


def steward(
    *, active: Iterable[str], down: Collection[str], silent: Collection[str],
) -> str | None:
    """The steward among `active` members (roster ids), or None when none qualifies.
    `down`: declared down (whole member); `silent`: not heard for a suspicion timeout."""
    for member in sorted(active):
        if member not in down and member not in silent:
            return member
    return None
