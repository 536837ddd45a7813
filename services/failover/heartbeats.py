"""When each member was last heard, by this observer's own clock. Pure.

Times are the observer's monotonic seconds, never the sender's clock: a member with a
skewed clock must not look alive (or dead) because of it.
"""

from __future__ import annotations


class HeartbeatBook:
    """Last time each member was heard.

    A member never heard yet counts as heard when the observer started (plus a grace):
    a node that just started must not suspect peers it simply has not had time to hear,
    yet a member that never speaks at all is still suspected in bounded time.
    """

    def __init__(self, started_at: float, *, startup_grace_s: float = 0.0) -> None:
        self.started_at = started_at
        self.startup_grace_s = startup_grace_s
        self._last: dict[str, float] = {}
        self._beats: dict[str, int] = {}

    def heard(self, member: str, at: float) -> None:
        # Out-of-order delivery must not move the clock backwards.
        if at >= self._last.get(member, float("-inf")):
            self._last[member] = at
        self._beats[member] = self._beats.get(member, 0) + 1

    def last_heard(self, member: str) -> float | None:
        return self._last.get(member)

    def beats(self, member: str) -> int:
        return self._beats.get(member, 0)

    def rebase(self, at: float) -> None:
        """Restart every member's silence at `at`: what this observer measured while it
        was itself cut off from the federation says nothing about the others."""
        self.started_at = max(self.started_at, at - self.startup_grace_s)
        for member, last in self._last.items():
            self._last[member] = max(last, at)

    def silence(self, member: str, now: float) -> float:
        """Seconds since `member` was last heard (or since start + grace), never negative."""
        last = self._last.get(member)
        since = last if last is not None else self.started_at + self.startup_grace_s
        return max(0.0, now - since)
