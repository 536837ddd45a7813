"""A verified federation event as a CloudEvents 1.0 event, structured JSON mode. Pure.

Built and validated with the `cloudevents` SDK (its v2 "core" API: `CloudEvent` checks
the required attributes and the extension names; `JSONFormat` writes structured JSON).
The SDK does not check the *formats* we promise SOCs (id = the FED message id, source
`stekker://member/<publisher>`, type `eu.stekker.<fed type>`, severity on the scale), so
`check` does, for what we publish and for what `soc tail` reads back.

A CloudEvent on SOC is not signed. Its authenticity rests on the signed FED event whose
message id it carries as `id` (and whose stream sequence it carries as `stekkerseq`): a
SOC that must be sure re-reads that FED message and verifies it against the roster.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from contracts.base import Event
from contracts.registry import CapacityReported, MemberAnnounced
from contracts.security import SecurityViolation
from mesh.envelope import Envelope
from services.soc.severity import LEVELS, Severity

SPECVERSION = "1.0"
TYPE_PREFIX = "eu.stekker."
SOURCE_PREFIX = "stekker://member/"
CONTENT_TYPE = "application/cloudevents+json"  # of the whole structured message
DATA_CONTENT_TYPE = "application/json"  # of `data`
REQUIRED = ("specversion", "id", "source", "type")
# Extension attributes (CloudEvents: lowercase letters and digits only).
EXT_SEVERITY = "severity"
EXT_SEQ = "stekkerseq"

_SOURCE = re.compile(r"^stekker://member/[a-z][a-z0-9-]{1,31}$")
_TYPE = re.compile(r"^eu\.stekker\.[a-z0-9-]+\.[a-z0-9-]+\.v[0-9]+$")
_FORMAT = JSONFormat()


class InvalidCloudEvent(ValueError):
    """A CloudEvent that misses a required attribute or breaks one of our formats."""


def ce_type(type_name: str) -> str:
    """`workload.placed.v1` → `eu.stekker.workload.placed.v1` (reverse-DNS, as CE advises)."""
    return TYPE_PREFIX + type_name


def ce_source(member: str) -> str:
    return SOURCE_PREFIX + member


def ce_subject(event: Event, env: Envelope) -> str | None:
    """What the event is about: the subject's target (a workload or member id), else the
    member an untargeted event concerns; None for federation-wide events (the roster)."""
    if type(event).TARGETED:
        return event.target()
    if isinstance(event, SecurityViolation):
        return event.claimed_member or None
    if isinstance(event, MemberAnnounced):
        return event.profile.id
    if isinstance(event, CapacityReported):
        return env.member
    return None  # the roster: about the whole federation


def build(event: Event, env: Envelope, *, severity: Severity) -> CloudEvent:
    """The CloudEvent for one verified FED event; raises InvalidCloudEvent if it cannot be."""
    attributes: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": env.msg_id,
        "source": ce_source(env.member),
        "type": ce_type(env.type_name),
        "time": env.time,
        "datacontenttype": DATA_CONTENT_TYPE,
        EXT_SEVERITY: severity,
    }
    subject = ce_subject(event, env)
    if subject:
        attributes["subject"] = subject
    if env.stream_seq is not None:
        attributes[EXT_SEQ] = env.stream_seq
    data = msgspec.to_builtins(event)
    try:
        ce = CloudEvent(attributes, data)
    except BaseCloudEventException as exc:
        raise InvalidCloudEvent(str(exc)) from None
    check(to_dict(ce))
    return ce


def encode(ce: CloudEvent) -> bytes:
    """Structured-mode JSON (`application/cloudevents+json`)."""
    return _FORMAT.write(ce)


def to_dict(ce: CloudEvent) -> dict[str, Any]:
    """The structured JSON object, as builtins (time as an RFC 3339 string)."""
    out: dict[str, Any] = json.loads(encode(ce))
    return out


def decode(body: bytes) -> dict[str, Any]:
    """Read one structured CloudEvent from SOC; raises InvalidCloudEvent."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCloudEvent(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidCloudEvent("not a JSON object")
    check(value)
    return value


def check(ce: dict[str, Any]) -> None:
    """Required attributes present, and our id/source/type/severity formats kept."""
    missing = [name for name in REQUIRED if not ce.get(name)]
    if missing:
        raise InvalidCloudEvent(f"missing required attribute(s): {', '.join(missing)}")
    if ce["specversion"] != SPECVERSION:
        raise InvalidCloudEvent(f"specversion {ce['specversion']!r} is not {SPECVERSION}")
    if not isinstance(ce["id"], str):
        raise InvalidCloudEvent("id is not a string")
    if not isinstance(ce["source"], str) or not _SOURCE.match(ce["source"]):
        raise InvalidCloudEvent(f"source {ce['source']!r} is not {SOURCE_PREFIX}<member>")
    if not isinstance(ce["type"], str) or not _TYPE.match(ce["type"]):
        raise InvalidCloudEvent(f"type {ce['type']!r} is not {TYPE_PREFIX}<fed type>")
    if ce.get(EXT_SEVERITY) not in LEVELS:
        raise InvalidCloudEvent(f"severity {ce.get(EXT_SEVERITY)!r} is not one of {LEVELS}")
    if EXT_SEQ in ce and not (isinstance(ce[EXT_SEQ], int) and ce[EXT_SEQ] > 0):
        raise InvalidCloudEvent(f"{EXT_SEQ} {ce[EXT_SEQ]!r} is not a stream sequence")


def fed_type(ce: dict[str, Any]) -> str:
    """The federation type a CloudEvent reports on: `eu.stekker.x.y.v1` → `x.y.v1`."""
    kind = str(ce.get("type", ""))
    return kind[len(TYPE_PREFIX):] if kind.startswith(TYPE_PREFIX) else kind


def publisher(ce: dict[str, Any]) -> str:
    source = str(ce.get("source", ""))
    return source[len(SOURCE_PREFIX):] if source.startswith(SOURCE_PREFIX) else source
