"""nats-server accounts and users from the roster: the server enforces who may publish what.

Pure functions, no bus. Message signatures already stop a member from speaking as
another at every receiver (DESIGN §4); this is the second wall, at the server, so a
forged message never even reaches the streams, and a KV key or a stream's configuration
a member has no business with cannot be written by it:

- one account (`FED`, JetStream enabled) for the whole federation;
- one **nkey** user per **active** roster member (`member_user`). It publishes events
  only with its own publisher segment, writes only its own keys of the per-member
  buckets, and calls only the JetStream API a service needs (no stream update, delete
  or purge). A suspended or removed member has no user once the config is regenerated;
- `soc-reader`: subscribes only on `soc.v1.>` and its inbox, and publishes only the
  JetStream API calls to read the `SOC` stream through its own consumer;
- `auditor`: the same for the `FED` stream and the roster bucket (`stekker audit
  verify` checks FED against the roster chain).

Users authenticate with nkeys (Ed25519; the server sends a nonce, the client signs it):
the config holds public keys only, the seeds go to separate 0600 files. The nkeys are
not the members' roster keys on purpose: a server chosen by another member picks the
nonce, and a roster key must never sign bytes chosen by someone else.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import nkeys

from contracts.catalog import FED_SUBJECTS, SOC_SUBJECTS
from contracts.iam import Roster
from mesh import layout

ACCOUNT = "FED"
SOC_READER = "soc-reader"
AUDITOR = "auditor"
READERS = (SOC_READER, AUDITOR)

# Buckets whose keys are member ids, written only by that member's own services (its
# registry materialises its own announcements and capacity reports).
OWN_KEY_BUCKETS = (layout.KV_MEMBERS, layout.KV_CAPACITY)
# `fed_decisions/rotation.<M>`: a key rotation is filed by the rotating member only.
ROTATION_KEY = "rotation"

# The JetStream API a member's services call. Not in it: STREAM.UPDATE (could lift FED's
# deny_delete), STREAM.DELETE, STREAM.PURGE (but the object store's own, which replacing
# or deleting a blob needs), STREAM.MSG.DELETE, snapshots, restores, peer removal, META
# and SERVER calls. STREAM.CREATE stays: every node provisions what is missing at start,
# and a create of an existing stream with another config is refused by the server.
# Leader step-downs stay: the steward pulls the leaders to its server (mesh/leaders.py);
# a step-down moves no data and skips no RAFT quorum, so a member abusing it can slow
# writes for a moment, never change them.
MEMBER_JS_API = (
    "$JS.API.INFO",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.CREATE.*",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
    f"$JS.API.STREAM.PURGE.OBJ_{layout.OBJ_DATA}",
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.DURABLE.CREATE.>",
    "$JS.API.CONSUMER.INFO.>",
    "$JS.API.CONSUMER.NAMES.>",
    "$JS.API.CONSUMER.LIST.>",
    "$JS.API.CONSUMER.MSG.NEXT.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.STREAM.LEADER.STEPDOWN.*",
    "$JS.API.CONSUMER.LEADER.STEPDOWN.>",
    "$JS.ACK.>",
    "$JS.FC.>",
)
# Request/reply: health requests to any node, replies to whoever asked.
MEMBER_REQUESTS = ("stekker.v1.>", "_INBOX.>")


@dataclass(frozen=True)
class NatsUser:
    """One user of the federation's account and what it may publish and subscribe."""

    name: str
    kind: str  # "member" | "reader"
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()


def kv_writes(member: str) -> tuple[str, ...]:
    """The KV and object-store subjects member `member` may publish to (writes, deletes,
    purges of a key all publish on `$KV.<bucket>.<key>`)."""
    own = tuple(f"$KV.{b}.{member}" for b in OWN_KEY_BUCKETS)
    # Placements, reservations, decisions, sagas and the roster chain are written by
    # every member's services by design (CAS decides; signed contents are re-verified).
    shared = tuple(f"$KV.{b.name}.>" for b in layout.BUCKETS if b.name not in OWN_KEY_BUCKETS)
    # Object names and chunk ids carry no member: the store is shared, sha256 checked.
    return own + shared + (f"$O.{layout.OBJ_DATA}.>",)


def member_user(member: str, others: list[str]) -> NatsUser:
    """A member's services: publish as itself only, write only what its services write;
    read everything but JetStream's API requests and other nodes' health requests."""
    events = (f"fed.v1.*.*.{member}", f"fed.v1.*.*.{member}.>", f"soc.v1.*.{member}")
    others = sorted(set(others) - {member})
    return NatsUser(
        name=member,
        kind="member",
        publish=events + kv_writes(member) + MEMBER_JS_API + MEMBER_REQUESTS,
        subscribe=(">",),
        # Deny wins over allow: another member's rotation key stays closed inside the
        # otherwise shared `fed_decisions`.
        publish_deny=tuple(f"$KV.{layout.KV_DECISIONS}.{ROTATION_KEY}.{o}" for o in others),
        # Whoever subscribes on `$JS.API.>` could answer JetStream calls in the server's
        # place (a forged KV read); whoever subscribes on another node's health subject
        # could answer for it.
        subscribe_deny=("$JS.API.>", *(f"stekker.v1.health.{o}" for o in others)),
    )


def stream_reader_calls(stream: str) -> tuple[str, ...]:
    """The JetStream API subjects a reader of `stream` must publish to, and no others:
    stream info, its own consumers (create, info, next message, delete), acks of what
    it read, flow control, and reading one message (last_event)."""
    return (
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
        "_INBOX.>",
    )


def reader_user(name: str, streams: tuple[str, ...], subjects: list[str]) -> NatsUser:
    calls = tuple(dict.fromkeys(c for stream in streams for c in stream_reader_calls(stream)))
    return NatsUser(name=name, kind="reader", publish=calls, subscribe=(*subjects, "_INBOX.>"))


def users_for(roster: Roster) -> list[NatsUser]:
    """Every user the roster in force calls for: active members, then the readers."""
    members = sorted(m.id for m in roster.body.members if m.state == "active")
    clash = set(members) & set(READERS)
    if clash:
        raise ValueError(f"member id(s) {sorted(clash)} clash with reader user names")
    return [
        *(member_user(m, members) for m in members),
        reader_user(SOC_READER, (layout.SOC,), SOC_SUBJECTS),
        # An auditor replays FED against the roster chain, so it reads that bucket too.
        reader_user(AUDITOR, (layout.FED, f"KV_{layout.KV_ROSTER}"), FED_SUBJECTS),
    ]


def new_seed() -> str:
    """A fresh nkey user seed (`SU...`)."""
    return bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)).decode()


def public_nkey(seed: str) -> str:
    """The public nkey (`U...`) of a user seed; ValueError when it is not one."""
    try:
        pair = nkeys.from_seed(bytearray(seed.strip().encode()))
    except (nkeys.NkeysError, ValueError, TypeError) as exc:
        raise ValueError(f"not an nkey seed: {exc}") from None
    public = bytes(pair.public_key).decode()
    if not public.startswith("U"):
        raise ValueError("not an nkey user seed (its public key does not start with U)")
    return public


def seeds_for(users: list[NatsUser], known: Mapping[str, str]) -> dict[str, str]:
    """Keep the seeds already handed out; make new ones for new users only, so
    regenerating after a roster change does not lock out running nodes."""
    return {u.name: known.get(u.name) or new_seed() for u in users}


def _list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _permission(allow: tuple[str, ...], deny: tuple[str, ...]) -> str:
    return f"{{ allow: {_list(allow)}" + (f", deny: {_list(deny)}" if deny else "") + " }"


def render_accounts(users: list[NatsUser], public_keys: Mapping[str, str],
                    *, federation: str, version: int) -> str:
    """The `accounts { ... }` block (nats-server config syntax) for `users`.

    Strings are JSON-quoted: quoted values are not `$VARIABLE`-expanded by nats-server,
    which matters for subjects such as `$KV.fed_members.amstel`.
    """
    lines = [
        f"# generated by `stekker deploy nats-config` from roster v{version} of "
        f"{json.dumps(federation)}; regenerate after every roster change",
        "accounts {",
        f"  {ACCOUNT}: {{",
        "    jetstream: enabled",
        "    users: [",
    ]
    for user in users:
        lines += [
            f"      {{ # {user.kind} {user.name}",
            f"        nkey: {json.dumps(public_keys[user.name])}",
            "        permissions: {",
            f"          publish: {_permission(user.publish, user.publish_deny)}",
            f"          subscribe: {_permission(user.subscribe, user.subscribe_deny)}",
            "        }",
            "      }",
        ]
    lines += ["    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class NatsAuthConfig:
    """What `stekker deploy nats-config` writes: config text and the seeds apart."""

    accounts: str
    seeds: dict[str, str]
    users: list[NatsUser]


def nats_auth_config(roster: Roster, known: Mapping[str, str] | None = None) -> NatsAuthConfig:
    users = users_for(roster)
    seeds = seeds_for(users, known or {})
    public = {name: public_nkey(seed) for name, seed in seeds.items()}
    text = render_accounts(users, public, federation=roster.body.federation,
                           version=roster.body.version)
    return NatsAuthConfig(accounts=text, seeds=seeds, users=users)
