"""Silence detection: when this observer suspects a member, renews or withdraws it. Pure.

One suspicion per silence episode. It is withdrawn only after a *fresh* beat, heard after
the suspicion was raised, so a member that flaps around the timeout does not make the
observer flap its statements. While the silence lasts the suspicion is renewed before it
would go stale, so a long episode keeps counting towards a quorum.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.failover.heartbeats import HeartbeatBook


@dataclass(frozen=True)
class Suspect:
    target: str
    silence_s: float
    renewal: bool = False


@dataclass(frozen=True)
class Withdraw:
    target: str


Action = Suspect | Withdraw


@dataclass
class Episode:
    opened_at: float  # observer's clock when the suspicion was first published
    published_at: float  # ... and when it was last (re)published


class Detector:
    def __init__(self, *, timeout_s: float, renew_s: float) -> None:
        self.timeout_s = timeout_s
        self.renew_s = renew_s
        self.open: dict[str, Episode] = {}

    def decide(
        self, target: str, book: HeartbeatBook, now: float, *, timeout_s: float | None = None
    ) -> Action | None:
        """What to say about `target` now; `timeout_s` overrides the timeout for this
        target (the flap guard lengthens it, see `recovery.suspicion_timeout`)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        silence = book.silence(target, now)
        episode = self.open.get(target)
        if episode is None:
            return Suspect(target, silence) if silence >= timeout else None
        last = book.last_heard(target)
        fresh = last is not None and last > episode.opened_at
        if fresh and silence < timeout:
            return Withdraw(target)
        if silence >= timeout and now - episode.published_at >= self.renew_s:
            return Suspect(target, silence, renewal=True)
        return None

    def published(self, action: Action, now: float) -> None:
        """Record that `action` is on the bus (call only after the publish succeeded)."""
        if isinstance(action, Withdraw):
            self.open.pop(action.target, None)
            return
        episode = self.open.get(action.target)
        if episode is None:
            self.open[action.target] = Episode(opened_at=now, published_at=now)
        else:
            episode.published_at = now

    def forget(self, target: str) -> None:
        """The target left the roster: drop its episode without a statement."""
        self.open.pop(target, None)

    @property
    def suspected(self) -> list[str]:
        return sorted(self.open)
