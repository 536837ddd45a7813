"""Who may count towards declaring a member down, and how many are needed. Pure.

Invariant 4: no member alone can declare another down. Only suspicions of *other*
active roster members count, never the target's own word, and the threshold is ⌈2n/3⌉
of those others (`TrustStore.quorum_against`), never less than two observers: with two
members a lone survivor cannot tell "the other died" from "I am cut off", so it must not
decide alone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from mesh.trust import TrustStore
from services.failover.suspicions import Suspicion

MIN_OBSERVERS = 2


def needed_against(trust: TrustStore, target: str) -> int:
    return max(MIN_OBSERVERS, trust.quorum_against(target))


def counting(
    suspicions: Iterable[Suspicion], *, target: str, active: Collection[str]
) -> list[Suspicion]:
    """The suspicions that count: one per observer, observers active and not the target."""
    seen: dict[str, Suspicion] = {}
    for s in suspicions:
        if s.target != target or s.observer == target or s.observer not in active:
            continue
        seen.setdefault(s.observer, s)
    return [seen[o] for o in sorted(seen)]


def reached(counted: Collection[Suspicion], needed: int) -> bool:
    return len(counted) >= needed


def evidence_problem(
    *, member: str, observers: Iterable[str], active: Collection[str], needed: int
) -> str | None:
    """Why a `member.down` declaration's evidence is no quorum, or None when it is one."""
    valid = {o for o in observers if o in active and o != member}
    if len(valid) < needed:
        return (f"{len(valid)} valid observer(s) of {member} down "
                f"({', '.join(sorted(valid)) or 'none'}); a quorum of {needed} is needed")
    return None


def majority_side(*, heard_others: int, needed: int) -> bool:
    """Can this observer, hearing `heard_others` other members, be on a side that holds
    a quorum? It and those it hears are the observers that could declare together; with
    fewer than `needed` of them it is cut off, whatever it thinks of the rest."""
    return heard_others + 1 >= needed
