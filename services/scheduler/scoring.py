"""Scorers: how good a feasible site is. Higher is better; hard rules are not here.

- `balance_score` keeps headroom everywhere, so a member that must take over another's
  workloads in a calamity still has space for them (the default strategy).
- `binpack_score` fills the fullest sites first, leaving whole sites free (for large
  later workloads, or to power sites down).
- `preference_bonus` adds a fixed amount for a tenant's preferred members and regions:
  smaller than the spread between an empty and a full site would be odd, so it is a
  tie-breaker of moderate weight; it never makes an infeasible site feasible.

Spread and diversity are hard rules, enforced by `selection`; their soft side (prefer a
new domain while the rule allows either) is the order `selection` tries candidates in.
Every score is deterministic (no clocks, no randomness) so every member that
recomputes a decision gets the same number.
"""

from __future__ import annotations

from contracts.resources import Resources
from contracts.workload import Preferences, Strategy

_DIMENSIONS = ("vcpu", "memory_gib", "storage_gib", "gpu")
PREFERRED_MEMBER_BONUS = 20.0
PREFERRED_REGION_BONUS = 10.0


def balance_score(request: Resources, free: Resources, capacity: Resources) -> float:
    """0..100: the mean over the resource classes of the fraction of the site's capacity
    still free after placing `request`. Classes the site has none of are left out
    (they cannot be balanced); a site with no capacity at all scores 0."""
    # Unrolled over _DIMENSIONS (in that order, so the sum is the same float): this runs
    # for every scored site of every decision.
    total, count = 0.0, 0
    if capacity.vcpu > 0:
        total += max(free.vcpu - request.vcpu, 0.0) / capacity.vcpu
        count += 1
    if capacity.memory_gib > 0:
        total += max(free.memory_gib - request.memory_gib, 0.0) / capacity.memory_gib
        count += 1
    if capacity.storage_gib > 0:
        total += max(free.storage_gib - request.storage_gib, 0.0) / capacity.storage_gib
        count += 1
    if capacity.gpu > 0:
        total += max(free.gpu - request.gpu, 0.0) / capacity.gpu
        count += 1
    if not count:
        return 0.0
    # Rounded so a score reads well in `explain` and survives JSON round trips unchanged.
    return round(100.0 * min(total / count, 1.0), 3)


def binpack_score(request: Resources, free: Resources, capacity: Resources) -> float:
    """0..100: the mirror of `balance_score`, the fraction used after placing."""
    if not any(getattr(capacity, d) > 0 for d in _DIMENSIONS):
        return 0.0
    return round(100.0 - balance_score(request, free, capacity), 3)


def capacity_score(
    strategy: Strategy, request: Resources, free: Resources, capacity: Resources
) -> float:
    scorer = binpack_score if strategy == "binpack" else balance_score
    return scorer(request, free, capacity)


def preference_bonus(preferences: Preferences, member: str, region: str) -> float:
    bonus = 0.0
    if member in preferences.members:
        bonus += PREFERRED_MEMBER_BONUS
    if region and region in preferences.regions:
        bonus += PREFERRED_REGION_BONUS
    return bonus
