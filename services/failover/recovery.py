"""Hysteresis for recovery: a down member must heartbeat steadily before it is back. Pure.

A streak is a run of beats with no gap longer than the suspicion timeout. A member is
steady when its current streak has at least `min_beats` beats spread over at least
`min_span_s` and is still going (the last beat is recent). One lucky beat of a flapping
member does not make it recovered.

The flap guard works the other way round: for a while after a recovery, observers wait
longer before they suspect the member again, so a member flapping around the timeout is
not declared down, and its workloads moved, on every flap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Streak:
    start: float
    last: float
    beats: int = 1


class Streaks:
    def __init__(self, *, max_gap_s: float, min_beats: int, min_span_s: float) -> None:
        self.max_gap_s = max_gap_s
        self.min_beats = min_beats
        self.min_span_s = min_span_s
        self._streaks: dict[str, Streak] = {}

    def beat(self, member: str, at: float) -> None:
        streak = self._streaks.get(member)
        if streak is None or at - streak.last > self.max_gap_s:
            self._streaks[member] = Streak(start=at, last=at)
            return
        if at >= streak.last:
            streak.last = at
            streak.beats += 1

    def reset(self, member: str) -> None:
        """Forget the streak, e.g. when the member is declared down: only beats heard
        after the declaration can bring it back."""
        self._streaks.pop(member, None)

    def steady(self, member: str, now: float) -> bool:
        streak = self._streaks.get(member)
        if streak is None or now - streak.last > self.max_gap_s:
            return False
        return streak.beats >= self.min_beats and streak.last - streak.start >= self.min_span_s


def may_recover(*, is_down: bool, steady: bool, standing: int, needed: int) -> bool:
    """Recover only a down member that beats steadily *and* that a quorum no longer
    suspects: in a partial partition one observer may hear the member while a quorum
    does not, and that one observer must not undo the quorum's declaration."""
    return is_down and steady and standing < needed


def suspicion_timeout(
    base_s: float, *, since_recovery_s: float | None, guard_s: float, factor: float
) -> float:
    """The silence after which an observer suspects a member: `base_s`, or `factor` times
    it while the member's last recovery is less than `guard_s` old."""
    if since_recovery_s is not None and 0.0 <= since_recovery_s < guard_s:
        return base_s * max(1.0, factor)
    return base_s
