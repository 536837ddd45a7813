"""Every message type on the bus, by versioned name; and the subjects of the streams."""

from __future__ import annotations

from contracts.base import Event
from contracts.failover import MemberDown, MemberRecovered, MemberSuspected, SitesReported
from contracts.iam import AdmissionRequested, RosterChangeEndorsed, RosterPublished
from contracts.registry import CapacityReported, Heartbeat, MemberAnnounced
from contracts.security import SecurityViolation
from contracts.takeover import (
    TakeoverApproved,
    TakeoverCompleted,
    TakeoverProposed,
    TakeoverRequested,
    TakeoverStep,
)
from contracts.workload import (
    PlacementsDispatched,
    WorkloadBound,
    WorkloadFailed,
    WorkloadPlaced,
    WorkloadReleased,
    WorkloadsBound,
    WorkloadsPlaced,
    WorkloadSubmitted,
)

MESSAGE_TYPES: dict[str, type[Event]] = {
    cls.type_name(): cls
    for cls in (
        MemberAnnounced,
        CapacityReported,
        Heartbeat,
        WorkloadSubmitted,
        WorkloadPlaced,
        WorkloadsPlaced,
        PlacementsDispatched,
        WorkloadBound,
        WorkloadsBound,
        WorkloadFailed,
        WorkloadReleased,
        MemberSuspected,
        MemberDown,
        MemberRecovered,
        SitesReported,
        TakeoverRequested,
        TakeoverProposed,
        TakeoverApproved,
        TakeoverStep,
        TakeoverCompleted,
        RosterPublished,
        AdmissionRequested,
        RosterChangeEndorsed,
        SecurityViolation,
    )
}

# FED keeps every signed event, append-only. Heartbeats are too many for that: they go to
# the short-lived HEALTH stream, so FED lists the other domains one by one.
FED_SUBJECTS: list[str] = [
    f"fed.v1.{domain}.>"
    for domain in ("registry", "workload", "member", "takeover", "iam", "security")
]
HEALTH_SUBJECTS: list[str] = ["fed.v1.health.>"]
SOC_SUBJECTS: list[str] = ["soc.v1.>"]


def soc_subject(severity: str, publisher: str) -> str:
    """SOC CloudEvents: ``soc.v1.<severity>.<publisher>`` so a SOC can filter by severity."""
    return f"soc.v1.{severity}.{publisher}"
