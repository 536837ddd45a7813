"""The suspicions on the bus: per target, each observer's latest statement. Pure.

An observer's newer statement replaces its older one, so `suspected=False` withdraws a
suspicion. Statements older than the stale window no longer count: a quorum must be made
of what observers say now, not of what they said about an earlier outage.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Suspicion:
    target: str
    observer: str
    msg_id: str
    silence_s: float
    at: dt.datetime  # the observer's signed Fed-Time
    suspected: bool = True


class SuspicionSet:
    def __init__(self) -> None:
        self._by_target: dict[str, dict[str, Suspicion]] = {}

    def record(self, s: Suspicion) -> bool:
        """Keep `s` if it is the observer's newest statement on the target; True if kept."""
        observers = self._by_target.setdefault(s.target, {})
        current = observers.get(s.observer)
        if current is not None and current.at > s.at:
            return False  # a late redelivery of an older statement
        observers[s.observer] = s
        return True

    def current(
        self,
        target: str,
        *,
        now: dt.datetime,
        stale_s: float,
        since: dt.datetime | None = None,
    ) -> list[Suspicion]:
        """Standing suspicions of `target`: not withdrawn, not stale, newer than `since`
        (the last recovery: what was said before it is about the previous outage)."""
        out = []
        for s in self._by_target.get(target, {}).values():
            if not s.suspected:
                continue
            if (now - s.at).total_seconds() > stale_s:
                continue
            if since is not None and s.at <= since:
                continue
            out.append(s)
        return sorted(out, key=lambda s: s.observer)

    def targets(self) -> list[str]:
        return sorted(self._by_target)

    def prune(self, *, now: dt.datetime, stale_s: float) -> None:
        """Forget statements that can never count again (memory stays bounded)."""
        for target in list(self._by_target):
            observers = self._by_target[target]
            for observer in [o for o, s in observers.items()
                             if (now - s.at).total_seconds() > stale_s]:
                del observers[observer]
            if not observers:
                del self._by_target[target]
