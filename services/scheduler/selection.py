"""Selection: choose replicas among scored candidates, honouring spread and diversity as
hard rules.

Every replica goes to a distinct member (one member's calamity takes one replica).
Without spread or diversity, the best candidates of distinct members win, in order of
(score desc, member, site). With them, a depth-first search over the candidates in the
same order returns the first combination that satisfies both rules, so it is the
greedy choice whenever that is valid, and finds a valid one whenever one exists.

Why the search stays small: two candidates with the same *signature* (spread domain and
the stack values diversity names) are interchangeable for the rules. A valid placement
of n replicas uses at most n members, so of each signature only the n best candidates
(of distinct members) can matter: if a placement used a worse one, one of the n best is
on a member the placement does not use, and swapping keeps every rule. So the search
runs over (signatures x n) candidates however many members there are, and a node budget
guards the rest; running out is reported (`search_budget_exhausted`), never ignored.

When no full placement exists, fewer replicas are placed (degraded), still obeying
diversity, and spread with `min_domains` capped at the replicas placed; the decision
names the rule that stood in the way (`spread_unsatisfiable`, `diversity_unsatisfiable`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from contracts.workload import Spread

SPREAD_UNSATISFIABLE = "spread_unsatisfiable"
DIVERSITY_UNSATISFIABLE = "diversity_unsatisfiable"
SEARCH_BUDGET_EXHAUSTED = "search_budget_exhausted"
SEARCH_BUDGET = 20_000  # nodes per search; a few hundred suffice for realistic specs


class Candidate(NamedTuple):  # a tuple: built for every scored site, so cheap to make
    member: str
    site: str
    score: float
    domain: str = ""  # the spread domain's value at this site ("" without spread)
    stack: tuple[str, ...] = ()  # the values of the components diversity names

    @property
    def signature(self) -> tuple[str, tuple[str, ...]]:
        return self.domain, self.stack


@dataclass(frozen=True)
class Rules:
    spread: Spread | None
    diversity: bool

    @property
    def any(self) -> bool:
        return self.spread is not None or self.diversity


class _Budget(Exception):
    pass


def _spread_ok(domains: Counter[str], spread: Spread, min_domains: int) -> bool:
    if len(domains) < min_domains:
        return False
    return max(domains.values()) - min(domains.values()) <= spread.max_skew


def _diverse(a: Candidate, b: Candidate) -> bool:
    return all(x.casefold() != y.casefold() for x, y in zip(a.stack, b.stack, strict=True))


def reduce(candidates: Sequence[Candidate], need: int) -> list[Candidate]:
    """The best `need` candidates of distinct members per signature (see module doc)."""
    kept: list[Candidate] = []
    seen: dict[tuple[str, tuple[str, ...]], set[str]] = {}
    for c in candidates:
        members = seen.setdefault(c.signature, set())
        if c.member in members or len(members) >= need:
            continue
        members.add(c.member)
        kept.append(c)
    return kept


def _search(
    candidates: Sequence[Candidate], fixed: Sequence[Candidate], need: int, rules: Rules,
    min_domains: int,
) -> list[Candidate] | None:
    nodes = 0
    chosen: list[Candidate] = list(fixed)
    members = {c.member for c in fixed}
    domains: Counter[str] = Counter(c.domain for c in fixed)

    def walk(start: int, left: int) -> list[Candidate] | None:
        nonlocal nodes
        nodes += 1
        if nodes > SEARCH_BUDGET:
            raise _Budget
        if left == 0:
            if rules.spread is None or _spread_ok(domains, rules.spread, min_domains):
                return list(chosen[len(fixed):])
            return None
        if rules.spread is not None and len(domains) + left < min_domains:
            return None
        for i in range(start, len(candidates)):
            c = candidates[i]
            if c.member in members:
                continue
            if rules.diversity and not all(_diverse(c, o) for o in chosen):
                continue
            chosen.append(c)
            members.add(c.member)
            domains[c.domain] += 1
            found = walk(i + 1, left - 1)
            chosen.pop()
            members.discard(c.member)
            domains[c.domain] -= 1
            if not domains[c.domain]:
                del domains[c.domain]
            if found is not None:
                return found
        return None

    return walk(0, need)


def _greedy(candidates: Sequence[Candidate], taken: set[str], need: int) -> list[Candidate]:
    chosen: list[Candidate] = []
    for c in candidates:
        if len(chosen) >= need:
            break
        if c.member not in taken:
            chosen.append(c)
            taken = taken | {c.member}
    return chosen


def select(
    candidates: Sequence[Candidate], kept: Sequence[Candidate], replicas: int, rules: Rules
) -> tuple[list[Candidate], list[str]]:
    """New replicas (besides `kept`) in the order chosen, and the rules that kept the
    decision from placing all `replicas` (empty when it placed them all or when simply
    too few members were feasible). `candidates` come best first."""
    need = replicas - len(kept)
    taken = {c.member for c in kept}
    ordered = sorted(candidates, key=lambda c: (-c.score, c.member, c.site))
    if need <= 0:
        return [], []
    if not rules.any:
        return _greedy(ordered, taken, need), []
    pool = reduce([c for c in ordered if c.member not in taken], need)
    full_min = rules.spread.min_domains if rules.spread else 1
    # Cheap upper bound first, so a hopeless full search does not eat the budget.
    most = need
    if rules.diversity and pool:
        for i in range(len(pool[0].stack)):
            values = {c.stack[i].casefold() for c in pool}
            values -= {k.stack[i].casefold() for k in kept}
            most = min(most, len(values))
    try:
        found = _search(pool, kept, need, rules, full_min) if most == need else None
        if found is not None:
            return found, []
        for count in range(min(most, need - 1), 0, -1):
            capped = min(full_min, len(kept) + count)
            found = _search(pool, kept, count, rules, capped)
            if found is not None:
                return found, _blocking(pool, kept, need, rules, full_min)
        return [], _blocking(pool, kept, need, rules, full_min)
    except _Budget:
        return [], [SEARCH_BUDGET_EXHAUSTED]


def _blocking(
    pool: Sequence[Candidate], kept: Sequence[Candidate], need: int, rules: Rules,
    min_domains: int,
) -> list[str]:
    """Which hard rule stands between the candidates and a full placement."""
    if len({c.member for c in pool}) < need:
        return []  # too few feasible members: no rule to blame
    words = []
    if rules.diversity and _search(pool, kept, need, Rules(None, True), 1) is None:
        words.append(DIVERSITY_UNSATISFIABLE)
    if rules.spread and _search(pool, kept, need, Rules(rules.spread, False), min_domains) is None:
        words.append(SPREAD_UNSATISFIABLE)
    return words or [DIVERSITY_UNSATISFIABLE, SPREAD_UNSATISFIABLE]
