"""A seen-message set with a TTL: refuses the same signed message stored a second time.

JetStream de-duplicates on `Nats-Msg-Id` only within its duplicate window (2 minutes),
and the Fed-Time window of the envelope can be switched off by a reader (catch-up reads).
This set remembers each message's signature and where it was stored, for `ttl_s`: the
same signature at a *different* stream position is a re-sent old message. Redelivery of
the same stored message (a nak) has the same position and passes. An honest re-publish
of a deterministic msg id carries a new Fed-Time, hence a new signature, and passes too.

Memory is bounded: entries expire after `ttl_s`, and past `max_entries` the oldest go.
"""

from __future__ import annotations

from collections import OrderedDict


class SeenMessages:
    def __init__(self, ttl_s: float = 600.0, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        # signature -> (where it was stored, when first seen); insertion order = age.
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def is_replay(self, signature: str, position: str, now: float) -> bool:
        """Record the message; True when the same signature was stored elsewhere before."""
        self._expire(now)
        known = self._seen.get(signature)
        if known is not None:
            return known[0] != position
        self._seen[signature] = (position, now)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return False

    def _expire(self, now: float) -> None:
        while self._seen:
            _, (_, first) = next(iter(self._seen.items()))
            if now - first <= self.ttl_s:
                return
            self._seen.popitem(last=False)
