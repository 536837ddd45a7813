"""Did heartbeats come on time? Pure: arrival times in, a verdict out."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

# A heartbeat may be this much later than its declared interval before it counts as
# missed: room for scheduling and network jitter, far below a suspicion timeout.
TOLERANCE = 1.5


def observation_window(interval_s: float, timeout_s: float) -> float:
    """How long to watch after the first heartbeat: three intervals, within the timeout."""
    return max(min(3.0 * interval_s, timeout_s), 0.1)


def heartbeat_gaps(
    arrivals: Sequence[float], interval_s: float, window_end: float
) -> tuple[bool, str]:
    """(on time?, why) for heartbeats that arrived at `arrivals` (monotonic seconds, the
    first one opening the window) and a window that closed at `window_end`.

    Every gap between two heartbeats, and the silence from the last one to the window's
    end, must be at most TOLERANCE x the declared interval.
    """
    if not arrivals:
        return False, "no heartbeat"
    if interval_s <= 0:
        return False, f"declared interval {interval_s}s is not positive"
    limit = TOLERANCE * interval_s
    points = sorted(arrivals)
    gaps = [b - a for a, b in itertools.pairwise(points)]
    trailing = window_end - points[-1]
    worst = max([*gaps, trailing])
    observed = window_end - points[0]
    if worst > limit:
        return False, (f"a gap of {worst:.2f}s exceeds {TOLERANCE} x interval "
                       f"{interval_s}s = {limit:.2f}s ({len(points)} heartbeat(s) "
                       f"in {observed:.1f}s)")
    return True, (f"{len(points)} heartbeat(s) in {observed:.1f}s, largest gap "
                  f"{worst:.2f}s ≤ {limit:.2f}s (interval {interval_s}s)")
