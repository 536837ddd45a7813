"""The JetStream state of DESIGN §5: streams, KV buckets and the object store.

Created idempotently by whichever process starts first; replicas = min(3, servers).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.catalog import FED_SUBJECTS, HEALTH_SUBJECTS, SOC_SUBJECTS

FED = "FED"
HEALTH = "HEALTH"
SOC = "SOC"

KV_ROSTER = "fed_roster"
KV_MEMBERS = "fed_members"
KV_CAPACITY = "fed_capacity"
KV_PLACEMENTS = "fed_placements"
KV_DECISIONS = "fed_decisions"
KV_SAGAS = "fed_sagas"
KV_RESERVATIONS = "fed_reservations"
OBJ_DATA = "fed_data"

# `fed_sagas` holds two kinds of keys: `<saga>` (the `SagaRecord`: plan, approvals,
# phase, lease) and `<saga>.<workload>` (`SagaProgress`: that workload's steps), so a
# step of one workload rewrites only its own small record. Saga ids and workload ids
# have no dots; `SAGA_KEYS` (one token) reads the saga records alone.
SAGA_KEYS = "*"


def progress_key(saga: str, workload: str) -> str:
    return f"{saga}.{workload}"


def progress_keys(saga: str) -> str:
    """The key filter of one saga's per-workload records."""
    return f"{saga}.*"

DAY = 24 * 3600.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    description: str
    max_age_s: float | None = None
    max_msgs_per_subject: int = -1
    append_only: bool = False
    duplicate_window_s: float = 120.0


@dataclass(frozen=True)
class BucketSpec:
    name: str
    description: str
    history: int = 1


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(FED, FED_SUBJECTS, "Every signed federation event; append-only.", append_only=True),
    StreamSpec(
        HEALTH,
        HEALTH_SUBJECTS,
        "Heartbeats; only the newest few per member are kept.",
        max_age_s=3600.0,
        max_msgs_per_subject=16,
    ),
    StreamSpec(SOC, SOC_SUBJECTS, "CloudEvents for security operations centres.",
               max_age_s=400 * DAY),
)

BUCKETS: tuple[BucketSpec, ...] = (
    BucketSpec(KV_ROSTER, "The roster in force, and every version by number.", history=8),
    BucketSpec(KV_MEMBERS, "Member profiles from announcements."),
    BucketSpec(KV_CAPACITY, "Total and used capacity per member."),
    BucketSpec(KV_PLACEMENTS, "One key per workload: its placement; CAS guards it.", history=8),
    BucketSpec(KV_DECISIONS, "Member-down declarations and leases; CAS guards them.", history=8),
    BucketSpec(KV_SAGAS, "Takeover sagas (<saga>) and their workloads' steps "
               "(<saga>.<workload>).", history=16),
    BucketSpec(KV_RESERVATIONS, "Capacity reserved per site (<member>.<site>); CAS guards it.",
               history=8),
)
