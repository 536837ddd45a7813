"""Scoring: among feasible sites, prefer the one left with the most room after placing.

Balancing keeps headroom everywhere, so a member that must take over another's workloads
in a calamity still has space for them. The score is deterministic (no clocks, no
randomness) so every member that recomputes a decision gets the same number.
"""

from __future__ import annotations

from contracts.resources import Resources

_DIMENSIONS = ("vcpu", "memory_gib", "storage_gib")


def balance_score(request: Resources, free: Resources, capacity: Resources) -> float:
    """0..100: the mean over vcpu/memory/storage of the fraction of the site's capacity
    still free after placing `request`. Dimensions the site has none of are left out
    (they cannot be balanced); a site with no capacity at all scores 0."""
    fractions = [
        max(getattr(free, d) - getattr(request, d), 0.0) / getattr(capacity, d)
        for d in _DIMENSIONS
        if getattr(capacity, d) > 0
    ]
    if not fractions:
        return 0.0
    # Rounded so a score reads well in `explain` and survives JSON round trips unchanged.
    return round(100.0 * min(sum(fractions) / len(fractions), 1.0), 3)
