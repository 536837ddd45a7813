"""The base of every federation message: a versioned type name and a subject pattern.

Subjects follow DESIGN §4: ``fed.v<major>.<domain>.<event>.<publisher>[.<target>]``.
The publisher's member id always sits at index 4, so the NATS server can stop a member
from publishing as another, and a receiver can compare it with the signed ``Fed-Member``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

# Ids end up as subject tokens and KV keys, so they must be plain lowercase words.
MEMBER_ID = r"[a-z][a-z0-9-]{1,31}"
MemberId = Annotated[str, msgspec.Meta(pattern=f"^{MEMBER_ID}$")]
WorkloadId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
CountryCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]
SealLevel = Annotated[int, msgspec.Meta(ge=0, le=4)]

PUBLISHER_TOKEN = 4  # index of the publisher's member id in a subject


class Event(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """A message on the federation bus. Subclasses set the four class variables."""

    DOMAIN: ClassVar[str]
    EVENT: ClassVar[str]
    MAJOR: ClassVar[int] = 1
    # True when the subject carries a target segment after the publisher.
    TARGETED: ClassVar[bool] = False
    # Human summary used by the AsyncAPI document and the SOC feed.
    SUMMARY: ClassVar[str] = ""

    @classmethod
    def type_name(cls) -> str:
        return f"{cls.DOMAIN}.{cls.EVENT}.v{cls.MAJOR}"

    @classmethod
    def subject(cls, publisher: str, target: str | None = None) -> str:
        base = f"fed.v{cls.MAJOR}.{cls.DOMAIN}.{cls.EVENT}.{publisher}"
        if cls.TARGETED:
            if not target:
                raise ValueError(f"{cls.type_name()} needs a target segment")
            return f"{base}.{target}"
        if target:
            raise ValueError(f"{cls.type_name()} takes no target segment")
        return base

    @classmethod
    def subject_pattern(cls, target: str | None = None) -> str:
        """The NATS wildcard that matches every subject of this type, from any
        publisher; with `target`, only those with that target segment."""
        base = f"fed.v{cls.MAJOR}.{cls.DOMAIN}.{cls.EVENT}.*"
        if target and not cls.TARGETED:
            raise ValueError(f"{cls.type_name()} takes no target segment")
        return f"{base}.{target or '*'}" if cls.TARGETED else base

    def target(self) -> str | None:
        """The subject's target segment for this message; overridden by targeted types."""
        return None


def publisher_of(subject: str) -> str | None:
    """The publisher segment of a federation subject, or None when it has none."""
    parts = subject.split(".")
    return parts[PUBLISHER_TOKEN] if len(parts) > PUBLISHER_TOKEN else None


def target_of(subject: str) -> str | None:
    parts = subject.split(".")
    return parts[PUBLISHER_TOKEN + 1] if len(parts) > PUBLISHER_TOKEN + 1 else None
