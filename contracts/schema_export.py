"""JSON Schemas and the AsyncAPI document of the bus, generated from the Structs (DESIGN §4).

Pure functions, no I/O: `stekker contracts export` writes what these return, and
`stekker contracts check` (and the tests) compare it with the committed copies under
`contracts/schemas/` and `docs/asyncapi.yaml`. The output is deterministic: the same code
gives the same dicts, key order included, so committed copies can be compared byte for byte.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

import contracts
from contracts.base import PUBLISHER_TOKEN, Event, MemberId
from contracts.catalog import (
    FED_SUBJECTS,
    HEALTH_SUBJECTS,
    MESSAGE_TYPES,
    SOC_SUBJECTS,
    soc_subject,
)
from contracts.iam import Roster
from contracts.workload import WorkloadSpec

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_URL = "https://stekker.eu/schemas/"
ASYNCAPI_VERSION = "3.0.0"

# Documents that travel inside messages and are also written by hand (YAML, JSON), by
# versioned name. Their schemas are exported next to the messages'.
DOCUMENTS: dict[str, tuple[type[msgspec.Struct], str]] = {
    "workload.spec.v1": (
        WorkloadSpec,
        "The workload spec (the plug): what a tenant submits through a member, in YAML "
        "or JSON. Unknown fields are refused, so typos in hand-written files show.",
    ),
    "iam.roster-document.v1": (
        Roster,
        "The signed roster: the federation's members, their keys and the admission "
        "threshold, with the members' signatures over the canonical JSON of its body.",
    ),
}

SOC_TYPE = "soc.cloudevent.v1"
HEADERS_SCHEMA = "fed.headers.v1"

# Where each subject is stored (DESIGN §5), for the `x-jetstream-stream` of a channel.
STREAMS: dict[str, list[str]] = {
    "FED": FED_SUBJECTS,
    "HEALTH": HEALTH_SUBJECTS,
    "SOC": SOC_SUBJECTS,
}

_TARGET_DESCRIPTIONS: dict[str, str] = {
    "member": "Id of the member the message is about (the suspected, down or recovered one).",
    "takeover": "Id of the member being taken over (or drilled).",
    "workload": "Id of the workload the message is about.",
}
_TARGET_FALLBACK = "Target segment: id of the member or workload the message is about."

_PUBLISHER_DESCRIPTION = (
    "Member id of the publisher. It must equal the signed `Fed-Member` header; the NATS "
    "permissions stop a member from publishing under another member's id."
)


def schema_id(name: str) -> str:
    return f"{SCHEMA_BASE_URL}{name}.json"


def bus_version() -> str:
    """The version of the bus contract: `contracts.__version__`, else `<major>.0.0`."""
    declared = getattr(contracts, "__version__", None)
    if isinstance(declared, str) and declared:
        return declared
    major = max((cls.MAJOR for cls in MESSAGE_TYPES.values()), default=1)
    return f"{major}.0.0"


def subject_template(cls: type[Event]) -> str:
    """The subject pattern with named parameters instead of wildcards (AsyncAPI address)."""
    tokens = cls.subject_pattern().split(".")
    tokens[PUBLISHER_TOKEN] = "{publisher}"
    if cls.TARGETED:
        tokens[PUBLISHER_TOKEN + 1] = "{target}"
    return ".".join(tokens)


def subject_covers(filter_subject: str, subject: str) -> bool:
    """Whether the NATS filter covers every subject of `subject` (which may hold `*`)."""
    want, have = filter_subject.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have):
            return False
        if token != "*" and token != have[i]:
            return False
    return len(want) == len(have)


def stream_of(subject: str) -> str | None:
    """The one stream whose subjects cover `subject`, or None (none, or more than one)."""
    hits = [
        name
        for name, filters in STREAMS.items()
        if any(subject_covers(f, subject) for f in filters)
    ]
    return hits[0] if len(hits) == 1 else None


# --- JSON Schemas -------------------------------------------------------------------


def _refers_to(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_refers_to(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_refers_to(v, ref) for v in node)
    return False


def _clean_text(node: Any) -> Any:
    """`node` with every `description` normalised as `inspect.cleandoc` does.

    msgspec takes descriptions from docstrings, and its versions differ in whether they
    keep a docstring's continuation indentation (0.23 keeps it). Normalising here makes
    the generated schemas depend on the text alone, not on the library's version.
    """
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _clean_text(v)
            for k, v in node.items()
        }
    if isinstance(node, list | tuple):
        return type(node)(_clean_text(v) for v in node)
    return node


def _schema(cls: Any) -> dict[str, Any]:
    """msgspec's JSON Schema of `cls`, its texts normalised (`_clean_text`)."""
    out: dict[str, Any] = _clean_text(msgspec.json.schema(cls))
    return out


def _hoist_root(
    raw: dict[str, Any], defs_prefix: str
) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Split msgspec's `{"$ref": root, "$defs": ...}` into (root body, other defs, docstring).

    The root struct's definition becomes the top of the document; it stays in the defs
    only when something refers to it (a recursive struct).
    """
    defs: dict[str, Any] = dict(raw.get("$defs", {}))
    ref = raw.get("$ref", "")
    if not ref.startswith(defs_prefix):
        body = {k: v for k, v in raw.items() if k not in ("$ref", "$defs")}
        return body, defs, None
    root_name = ref.removeprefix(defs_prefix)
    body = dict(defs[root_name])
    others = {k: v for k, v in defs.items() if k != root_name}
    if not _refers_to(others, ref) and not _refers_to(body, ref):
        defs = others
    body.pop("title", None)
    docstring = body.pop("description", None)
    return body, defs, docstring


def _decorate(
    name: str, description: str, body: dict[str, Any], docstring: str | None, subject: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"title": name, "description": description}
    if docstring and docstring != description:
        out["$comment"] = docstring
    if subject is not None:
        out["x-subject"] = subject
    out.update(body)
    return out


def _document(
    name: str,
    description: str,
    raw: dict[str, Any],
    subject: str | None,
) -> dict[str, Any]:
    body, defs, docstring = _hoist_root(raw, "#/$defs/")
    out: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, "$id": schema_id(name)}
    out.update(_decorate(name, description, body, docstring, subject))
    if defs:
        out["$defs"] = {k: defs[k] for k in sorted(defs)}
    return out


def message_schema(cls: type[Event]) -> dict[str, Any]:
    """The JSON Schema of one message type's body."""
    return _document(cls.type_name(), cls.SUMMARY, _schema(cls), cls.subject_pattern())


def soc_cloudevent_schema() -> dict[str, Any]:
    """CloudEvents 1.0, structured JSON mode, as the soc service publishes on `SOC`."""
    return {
        "type": "object",
        "properties": {
            "specversion": {"const": "1.0", "description": "CloudEvents spec version."},
            "id": {
                "type": "string",
                "minLength": 1,
                "description": (
                    "The Nats-Msg-Id of the signed federation event on FED; with `source` "
                    "it identifies the event, and a SOC can re-verify it there."
                ),
            },
            "source": {
                "type": "string",
                "format": "uri-reference",
                "minLength": 1,
                "description": "Who published the federation event: stekker://member/<member id>.",
            },
            "type": {
                "type": "string",
                "minLength": 1,
                "description": (
                    "Event type, derived from the versioned federation type it reports on "
                    "(e.g. from `security.violation.v1`)."
                ),
            },
            "time": {
                "type": "string",
                "format": "date-time",
                "description": "When the reported event happened, RFC 3339.",
            },
            "datacontenttype": {
                "const": "application/json",
                "description": "`data` is a JSON value.",
            },
            "subject": {
                "type": "string",
                "description": (
                    "What the event is about: its target (workload or member id), if any."
                ),
            },
            "data": {
                "type": "object",
                "description": "The reported event: the body of the federation message.",
            },
            "severity": {
                "type": "string",
                "minLength": 1,
                "description": (
                    "Extension attribute: the severity, also the subject's third token "
                    "so a SOC can filter on it."
                ),
            },
            "stekkerseq": {
                "type": "integer",
                "description": "Extension attribute: the event's sequence in the FED stream.",
            },
        },
        "required": ["specversion", "id", "source", "type", "severity"],
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema (draft 2020-12) per message type and per document, by versioned name."""
    out: dict[str, dict[str, Any]] = {}
    for name, cls in MESSAGE_TYPES.items():
        out[name] = message_schema(cls)
    for name, (doc_cls, description) in DOCUMENTS.items():
        out[name] = _document(name, description, _schema(doc_cls), None)
    out[SOC_TYPE] = _document(
        SOC_TYPE,
        "A CloudEvents 1.0 event (structured JSON) on the SOC stream.",
        soc_cloudevent_schema(),
        soc_subject("*", "*"),
    )
    return {k: out[k] for k in sorted(out)}


# --- AsyncAPI -----------------------------------------------------------------------


def envelope_headers_schema() -> dict[str, Any]:
    """The NATS headers of every federation message (DESIGN §4, the envelope)."""
    member_pattern = msgspec.json.schema(MemberId)["pattern"]
    return {
        "type": "object",
        "description": (
            "The signed envelope. The body is the plain JSON of the message; authenticity "
            "travels in these headers. A receiver refuses (and reports as a security "
            "violation) a message whose signature fails, whose key is not in the roster "
            "for that member, whose subject's publisher differs from Fed-Member, whose "
            "time is outside the replay window, or whose body fails its schema."
        ),
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "Unique message id (UUIDv7); JetStream de-duplicates on it.",
            },
            "Fed-Type": {
                "type": "string",
                "enum": sorted(MESSAGE_TYPES),
                "description": "Versioned type name of the body, e.g. `workload.placed.v1`.",
            },
            "Fed-Member": {
                "type": "string",
                "pattern": member_pattern,
                "description": "Sender member id; equals the subject's publisher segment.",
            },
            "Fed-Key": {
                "type": "string",
                "description": (
                    "Sender key id: fingerprint (sha256) of its Ed25519 public key; must be "
                    "in the roster in force for that member."
                ),
            },
            "Fed-Time": {
                "type": "string",
                "format": "date-time",
                "description": "Sender clock, RFC 3339 UTC; checked against the replay window.",
            },
            "Fed-Sig": {
                "type": "string",
                "contentEncoding": "base64",
                "description": (
                    "Ed25519 signature (base64) over subject, msg-id, type, member, key, "
                    "time and sha256(body)."
                ),
            },
            "traceparent": {
                "type": "string",
                "description": "W3C trace context (OpenTelemetry); optional.",
            },
        },
        "required": ["Nats-Msg-Id", "Fed-Type", "Fed-Member", "Fed-Key", "Fed-Time", "Fed-Sig"],
    }


def _component_schemas() -> dict[str, dict[str, Any]]:
    prefix = "#/components/schemas/"
    types: list[type[Any]] = [*MESSAGE_TYPES.values()]
    roots, components = _clean_text(
        msgspec.json.schema_components(types, ref_template=prefix + "{name}")
    )
    out: dict[str, Any] = dict(components)
    for (name, cls), root in zip(MESSAGE_TYPES.items(), roots, strict=True):
        if name in out:
            raise ValueError(f"schema name {name} is used twice")
        body, defs, docstring = _hoist_root({**root, "$defs": out}, prefix)
        out = defs
        out[name] = _decorate(name, cls.SUMMARY, body, docstring, cls.subject_pattern())
    for name, schema in (
        (HEADERS_SCHEMA, envelope_headers_schema()),
        (SOC_TYPE, soc_cloudevent_schema()),
    ):
        if name in out:
            raise ValueError(f"schema name {name} is used twice")
        out[name] = schema
    return {k: out[k] for k in sorted(out)}


def _parameters(cls: type[Event]) -> dict[str, Any]:
    params: dict[str, Any] = {"publisher": {"$ref": "#/components/parameters/publisher"}}
    if cls.TARGETED:
        params["target"] = {"description": _TARGET_DESCRIPTIONS.get(cls.DOMAIN, _TARGET_FALLBACK)}
    return params


def _message(name: str, cls: type[Event]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "title": cls.__name__,
        "summary": cls.SUMMARY,
        "contentType": "application/json",
        "headers": {
            "allOf": [
                {"$ref": f"#/components/schemas/{HEADERS_SCHEMA}"},
                {"type": "object", "properties": {"Fed-Type": {"const": name}}},
            ]
        },
        "payload": {"$ref": f"#/components/schemas/{name}"},
    }
    return out


def _operation(action: str, channel: str, message: str, summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
    }


def asyncapi_document() -> dict[str, Any]:
    """An AsyncAPI 3.0.0 document of the whole bus: every message type and the SOC feed."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name in sorted(MESSAGE_TYPES):
        cls = MESSAGE_TYPES[name]
        channel: dict[str, Any] = {
            "address": subject_template(cls),
            "title": name,
            "summary": cls.SUMMARY,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "parameters": _parameters(cls),
        }
        stream = stream_of(cls.subject_pattern())
        if stream:
            channel["x-jetstream-stream"] = stream
        channels[name] = channel
        messages[name] = _message(name, cls)
        operations[f"{name}.send"] = _operation(
            "send", name, name, f"A member publishes {name}, signed."
        )
        operations[f"{name}.receive"] = _operation(
            "receive", name, name, f"Services of every member consume {name} and verify it."
        )

    soc_channel: dict[str, Any] = {
        "address": soc_subject("{severity}", "{publisher}"),
        "title": SOC_TYPE,
        "summary": "CloudEvents 1.0 for security operations centres (NIS2), by severity.",
        "messages": {SOC_TYPE: {"$ref": f"#/components/messages/{SOC_TYPE}"}},
        "parameters": {
            "severity": {
                "description": "Severity of the event, also the CloudEvent `severity` extension.",
            },
            "publisher": {"description": "Member id of the publisher of the federation event."},
        },
    }
    stream = stream_of(soc_subject("*", "*"))
    if stream:
        soc_channel["x-jetstream-stream"] = stream
    channels[SOC_TYPE] = soc_channel
    messages[SOC_TYPE] = {
        "name": SOC_TYPE,
        "title": "CloudEvent",
        "summary": "A federation event as a CloudEvents 1.0 event, structured JSON mode.",
        "contentType": "application/cloudevents+json",
        "payload": {"$ref": f"#/components/schemas/{SOC_TYPE}"},
    }
    operations[f"{SOC_TYPE}.send"] = _operation(
        "send", SOC_TYPE, SOC_TYPE, "The soc service of a member publishes CloudEvents for SOCs."
    )

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:eu:stekker:federation-bus",
        "info": {
            "title": "Stekker federation bus",
            "version": bus_version(),
            "description": (
                "Every message of the Stekker federation on NATS JetStream. Subjects are "
                "`fed.v<major>.<domain>.<event>.<publisher>[.<target>]`; the publisher's "
                "member id always sits at token 4. Bodies are the plain JSON of the "
                "contracts' Structs; authenticity travels in signed NATS headers."
            ),
            "license": {
                "name": "EUPL-1.2",
                "url": "https://interoperable-europe.ec.europa.eu/collection/eupl/eupl-text-eupl-12",
            },
        },
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": (
                    "The embedded nats-server of `stekker up` (nats://127.0.0.1:4222)."
                ),
            }
        },
        "defaultContentType": "application/json",
        "channels": {k: channels[k] for k in sorted(channels)},
        "operations": {k: operations[k] for k in sorted(operations)},
        "components": {
            "schemas": _component_schemas(),
            "messages": {k: messages[k] for k in sorted(messages)},
            "parameters": {
                "publisher": {
                    "description": _PUBLISHER_DESCRIPTION,
                    "location": "$message.header#/Fed-Member",
                }
            },
        },
    }
