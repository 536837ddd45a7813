"""The signed envelope of DESIGN §4: body = the Struct's JSON, authenticity in headers.

Pure functions, no bus: `seal` makes the headers for an outgoing message, `open_message`
checks an incoming one and decodes its body, or raises `Rejected` with a reason word.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import uuid_utils

from contracts.base import Event, publisher_of
from contracts.catalog import MESSAGE_TYPES
from mesh.errors import Rejected
from mesh.keys import Identity, verify
from mesh.trust import TrustStore

H_MSG_ID = "Nats-Msg-Id"
H_TYPE = "Fed-Type"
H_MEMBER = "Fed-Member"
H_KEY = "Fed-Key"
H_TIME = "Fed-Time"
H_SIG = "Fed-Sig"
REQUIRED = (H_MSG_ID, H_TYPE, H_MEMBER, H_KEY, H_TIME, H_SIG)

# A signed message whose Fed-Time is further than this from when the bus accepted it is a
# replay or a broken clock; both are refused.
REPLAY_WINDOW_S = 120.0
MAX_BODY_BYTES = 1 << 20

_decoders: dict[type[Event], msgspec.json.Decoder[Any]] = {}


def new_msg_id() -> str:
    return str(uuid_utils.uuid7())


def batch_msg_id(prefix: str, keys: Iterable[tuple[str, int]]) -> str:
    """A deterministic msg id for a message about many items (workload, generation): the
    same items give the same id, so a publish retried after a lost ack is stored once."""
    digest = hashlib.sha256()
    for item, generation in keys:
        digest.update(f"{item}:{generation}\n".encode())
    return f"{prefix}-{digest.hexdigest()[:40]}"


def format_time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("time without zone")
    return parsed


def signing_payload(
    subject: str, msg_id: str, type_name: str, member: str, key_id: str, time: str, body: bytes
) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((subject, msg_id, type_name, member, key_id, time, digest)).encode()


def seal(
    identity: Identity,
    subject: str,
    type_name: str,
    body: bytes,
    *,
    msg_id: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Headers that make `body` on `subject` a signed message of `identity`."""
    msg_id = msg_id or new_msg_id()
    time = format_time(now or dt.datetime.now(dt.UTC))
    payload = signing_payload(
        subject, msg_id, type_name, identity.member, identity.key_id, time, body
    )
    return {
        H_MSG_ID: msg_id,
        H_TYPE: type_name,
        H_MEMBER: identity.member,
        H_KEY: identity.key_id,
        H_TIME: time,
        H_SIG: identity.sign(payload),
    }


@dataclass(frozen=True)
class Envelope:
    """What a receiver knows of a verified message besides its body."""

    subject: str
    msg_id: str
    type_name: str
    member: str
    key_id: str
    time: dt.datetime
    headers: dict[str, str]
    stream_seq: int | None = None
    # When the bus stored it (JetStream), else when it was received.
    received: dt.datetime | None = None


def open_message(
    subject: str,
    headers: dict[str, str] | None,
    body: bytes,
    trust: TrustStore,
    *,
    received: dt.datetime,
    stream_seq: int | None = None,
    window_s: float | None = REPLAY_WINDOW_S,
) -> tuple[Event, Envelope]:
    """Verify and decode. Raises `Rejected(reason)`; never anything else for bad input."""
    headers = dict(headers or {})
    missing = [h for h in REQUIRED if not headers.get(h)]
    if missing:
        raise Rejected("missing_header", ", ".join(missing))
    if len(body) > MAX_BODY_BYTES:
        raise Rejected("oversized", f"{len(body)} bytes")
    type_name, member, key_id = headers[H_TYPE], headers[H_MEMBER], headers[H_KEY]
    cls = MESSAGE_TYPES.get(type_name)
    if cls is None:
        raise Rejected("unknown_type", type_name)
    if publisher_of(subject) != member:
        raise Rejected("subject_mismatch", f"subject publisher is not {member}")
    if not _subject_fits(subject, cls):
        raise Rejected("subject_mismatch", f"{subject} is not a {type_name} subject")
    if not trust.is_member(member):
        raise Rejected("unknown_member", member)
    public = trust.key(member, key_id)
    retired_at: dt.datetime | None = None
    if public is None:
        retired = trust.retired_key(member, key_id)
        if retired is None:
            raise Rejected("unknown_key", f"{key_id} is not an active key of {member}")
        public, retired_at = retired
    try:
        sent = parse_time(headers[H_TIME])
    except ValueError:
        raise Rejected("malformed_header", f"{H_TIME}={headers[H_TIME]!r}") from None
    payload = signing_payload(subject, headers[H_MSG_ID], type_name, member, key_id,
                              headers[H_TIME], body)
    if not verify(public, headers[H_SIG], payload):
        raise Rejected("bad_signature", f"{type_name} from {member}")
    if retired_at is not None and sent > retired_at:
        # A backdated Fed-Time cannot get round this for long: the replay window below
        # refuses it once the stream's own clock is past retired_at + the window.
        raise Rejected("key_retired", f"{key_id} of {member} retired at "
                       f"{format_time(retired_at)}; message sent {format_time(sent)}")
    if window_s is not None and abs((received - sent).total_seconds()) > window_s:
        raise Rejected("stale_time", f"sent {format_time(sent)}, stored {format_time(received)}")
    decoder = _decoders.get(cls)
    if decoder is None:
        decoder = _decoders[cls] = msgspec.json.Decoder(cls)
    try:
        event = decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise Rejected("malformed_body", str(exc)) from None
    if event.target() != _target(subject, cls):
        raise Rejected("subject_mismatch", "subject target differs from the body")
    envelope = Envelope(
        subject=subject,
        msg_id=headers[H_MSG_ID],
        type_name=type_name,
        member=member,
        key_id=key_id,
        time=sent,
        headers=headers,
        stream_seq=stream_seq,
        received=received,
    )
    return event, envelope


def _subject_fits(subject: str, cls: type[Event]) -> bool:
    parts = subject.split(".")
    want = cls.subject_pattern().split(".")
    return len(parts) == len(want) and all(w in ("*", p) for w, p in zip(want, parts, strict=True))


def _target(subject: str, cls: type[Event]) -> str | None:
    return subject.split(".")[5] if cls.TARGETED else None
