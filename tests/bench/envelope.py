"""Benchmark: signing and verifying envelopes (pure, no bus). Prints one JSON document.

Measures what every message costs a publisher (seal) and a receiver (open_message:
signature, roster lookup, schema decode). Reports medians over several rounds, since
these machines are shared and noisy.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec

from contracts.iam import RosterBody, RosterMember
from contracts.workload import WorkloadReleased
from mesh.envelope import open_message, seal
from mesh.keys import Identity
from mesh.trust import TrustStore, sign_roster

ROUNDS = 5
PER_ROUND = 2000


def main() -> None:
    ids = [Identity.generate(f"m{i:02d}") for i in range(20)]
    now = dt.datetime.now(dt.UTC)
    body = RosterBody(federation="bench", version=1, issued_at=now, threshold=14,
                      members=[RosterMember(id=i.member, name=i.member, public_key=i.public_b64,
                                            key_id=i.key_id, roles=["founder"]) for i in ids])
    trust = TrustStore(sign_roster(body, ids))
    sender = ids[0]
    event = WorkloadReleased(workload="bench-workload", member="m01", cause="bench")
    subject = WorkloadReleased.subject(sender.member, event.target())
    payload = msgspec.json.encode(event)

    seal_rates, open_rates = [], []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        sealed = [seal(sender, subject, "workload.released.v1", payload, now=now)
                  for _ in range(PER_ROUND)]
        seal_rates.append(PER_ROUND / (time.perf_counter() - start))
        start = time.perf_counter()
        for headers in sealed:
            open_message(subject, headers, payload, trust, received=now)
        open_rates.append(PER_ROUND / (time.perf_counter() - start))

    print(json.dumps({
        "benchmark": "envelope",
        "what": "Ed25519 seal and verify+decode of a workload.released.v1, 20-member roster",
        "rounds": ROUNDS,
        "messages_per_round": PER_ROUND,
        "seal_per_s_median": round(statistics.median(seal_rates)),
        "open_per_s_median": round(statistics.median(open_rates)),
    }, indent=2))


if __name__ == "__main__":
    main()
