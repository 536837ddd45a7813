"""Members, their profiles and sites, capacity and heartbeats (DESIGN §6 registry)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, ClassVar, Literal

import msgspec

from contracts.base import CountryCode, Event, MemberId, SealLevel
from contracts.resources import Resources

# Overcommit ratio per resource class (vcpu, memory_gib, storage_gib, gpu): at least 1.0.
ResourceName = Literal["vcpu", "memory_gib", "storage_gib", "gpu"]
Ratio = Annotated[float, msgspec.Meta(ge=1.0)]
# Stack components a workload may ask to differ between its replicas (`diversity`).
StackComponent = Literal[
    "hypervisor", "container_platform", "storage", "network", "operating_system",
    "hardware_origin",
]

# Dutch government data classifications, lowest first (BIO: basisbeveiligingsniveaus).
Classification = Literal["openbaar", "bbn1", "bbn2", "bbn3", "dep-vertrouwelijk", "stg-geheim"]
CLASSIFICATION_ORDER: tuple[str, ...] = (
    "openbaar",
    "bbn1",
    "bbn2",
    "bbn3",
    "dep-vertrouwelijk",
    "stg-geheim",
)

# EU Cloud Sovereignty Framework objectives and their weights in the overall score.
SOV_OBJECTIVES: dict[str, float] = {
    "SOV-1": 0.15,  # strategic
    "SOV-2": 0.10,  # legal & jurisdictional
    "SOV-3": 0.10,  # data & AI
    "SOV-4": 0.15,  # operational
    "SOV-5": 0.20,  # supply chain
    "SOV-6": 0.15,  # technology
    "SOV-7": 0.10,  # security & compliance
    "SOV-8": 0.05,  # environmental sustainability
}

SiteId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]


class Certification(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    expires: dt.date | None = None


class Stack(msgspec.Struct, kw_only=True, frozen=True):
    """Technology components, for diversity: one vulnerability should not hit every replica."""

    hypervisor: str = ""
    container_platform: str = ""
    storage: str = ""
    network: str = ""
    operating_system: str = ""
    hardware_origin: str = ""


class Site(msgspec.Struct, kw_only=True, frozen=True):
    id: SiteId
    country: CountryCode
    city: str = ""
    region: str = ""
    grid_region: str = ""
    # Physical capacity per resource class (gpu included; absent = none).
    capacity: Resources
    # The member's declared overcommit per resource class, e.g. {"vcpu": 4.0}; a class
    # not named is not overcommitted. Placement books against capacity x ratio.
    overcommit: dict[ResourceName, Ratio] = {}

    def schedulable(self) -> Resources:
        """What placement may book at this site: capacity times declared overcommit."""
        if not self.overcommit:
            return self.capacity
        return self.capacity.scaled({str(k): v for k, v in self.overcommit.items()})


class MemberProfile(msgspec.Struct, kw_only=True, frozen=True):
    id: MemberId
    name: str
    legal_seat: CountryCode
    parent_seat: CountryCode | None = None
    # SEAL level per sovereignty objective, SOV-1..SOV-8; the overall level is derived.
    sov: dict[str, SealLevel]
    # Non-EU laws the member (or its parent) is subject to, e.g. ["US CLOUD Act"].
    non_eu_law_exposure: list[str] = []
    # Privileged staff (operators with access to tenant data) are EU/EEA residents
    # working from the EU/EEA.
    eu_resident_staff: bool = True
    certifications: list[Certification] = []
    cleared_classifications: list[Classification] = msgspec.field(
        default_factory=lambda: ["openbaar"]
    )
    stack: Stack = Stack()
    sites: list[Site]


class MemberAnnounced(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "registry"
    EVENT: ClassVar[str] = "announced"
    SUMMARY: ClassVar[str] = "A member announces its profile and sites."

    profile: MemberProfile


class SiteCapacity(msgspec.Struct, kw_only=True, frozen=True):
    site: str
    total: Resources
    used: Resources


class CapacityReported(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "registry"
    EVENT: ClassVar[str] = "capacity"
    SUMMARY: ClassVar[str] = "A member reports total and used capacity per site."

    sites: list[SiteCapacity]


class Heartbeat(Event, kw_only=True):
    """Sent every interval by each member's agent; kept in a short-lived stream."""

    DOMAIN: ClassVar[str] = "health"
    EVENT: ClassVar[str] = "heartbeat"
    SUMMARY: ClassVar[str] = "A member's node is alive; lists the sites that are up."

    seq: int
    interval_s: float
    sites_up: list[str] = []
