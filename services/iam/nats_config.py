"""nats-server accounts and users from the roster: the server enforces who may publish what.

Pure functions, no bus. Message signatures already stop a member from speaking as
another at every receiver (DESIGN §4); this is the second wall, at the server, so a
forged message never even reaches the streams:

- one account (`FED`, JetStream enabled) for the whole federation;
- one user per **active** roster member. It may publish only on subjects whose publisher
  segment is itself (`fed.v1.*.*.<m>`, `fed.v1.*.*.<m>.>`, `soc.v1.*.<m>`), plus what
  the services need for JetStream, KV, object store and request/reply (`$JS.API.>`,
  `$JS.ACK.>`, `$JS.FC.>`, `$KV.>`, `$O.>`, `_INBOX.>`, `stekker.v1.>`). A suspended or
  removed member has no user once the configuration is regenerated;
- `soc-reader`: subscribes only on `soc.v1.>` and `_INBOX.>`, and publishes only the
  JetStream API calls needed to read the `SOC` stream through its own consumer;
- `auditor`: the same for the `FED` stream.

Known limit: `$KV.>` and `$O.>` are open to every member's user, so KV writes are not
narrowed per member (a member could write another's keys; services re-verify the signed
values they read, e.g. the roster chain). Readers and auditors cannot write at all.

Users authenticate with passwords (the `nkeys` package is not installable here); the
config holds only bcrypt hashes, the passwords go to a separate 0600 secrets file.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import bcrypt

from contracts.catalog import FED_SUBJECTS, SOC_SUBJECTS
from contracts.iam import Roster

ACCOUNT = "FED"
SOC_READER = "soc-reader"
AUDITOR = "auditor"
READERS = (SOC_READER, AUDITOR)
BCRYPT_ROUNDS = 11  # nats-server checks the hash on every connect; 11 costs ~0.1 s

# What every service of a member needs besides its own subjects.
SERVICE_PUBLISH = ("$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "$O.>", "_INBOX.>",
                   "stekker.v1.>")


@dataclass(frozen=True)
class NatsUser:
    """One user of the federation's account and what it may publish and subscribe."""

    name: str
    kind: str  # "member" | "reader"
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def member_user(member: str) -> NatsUser:
    """A member's services: publish as itself only; read everything."""
    own = (f"fed.v1.*.*.{member}", f"fed.v1.*.*.{member}.>", f"soc.v1.*.{member}")
    return NatsUser(name=member, kind="member", publish=own + SERVICE_PUBLISH,
                    subscribe=(">",))


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


def reader_user(name: str, stream: str, subjects: list[str]) -> NatsUser:
    return NatsUser(name=name, kind="reader", publish=stream_reader_calls(stream),
                    subscribe=(*subjects, "_INBOX.>"))


def users_for(roster: Roster) -> list[NatsUser]:
    """Every user the roster in force calls for: active members, then the readers."""
    members = sorted(m.id for m in roster.body.members if m.state == "active")
    clash = set(members) & set(READERS)
    if clash:
        raise ValueError(f"member id(s) {sorted(clash)} clash with reader user names")
    return [
        *(member_user(m) for m in members),
        reader_user(SOC_READER, "SOC", SOC_SUBJECTS),
        reader_user(AUDITOR, "FED", FED_SUBJECTS),
    ]


def passwords_for(users: list[NatsUser], known: Mapping[str, str]) -> dict[str, str]:
    """Keep the passwords already handed out; make new ones for new users only, so
    regenerating after a roster change does not lock out running nodes."""
    return {u.name: known.get(u.name) or secrets.token_urlsafe(24) for u in users}


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def _list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def render_accounts(users: list[NatsUser], hashes: Mapping[str, str],
                    *, federation: str, version: int) -> str:
    """The `accounts { ... }` block (nats-server config syntax) for `users`.

    Strings are JSON-quoted: quoted values are not `$VARIABLE`-expanded by nats-server,
    which matters for bcrypt hashes (`$2b$...`).
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
            f"      {{ # {user.kind}",
            f"        user: {json.dumps(user.name)}",
            f"        password: {json.dumps(hashes[user.name])}",
            "        permissions: {",
            f"          publish: {{ allow: {_list(user.publish)} }}",
            f"          subscribe: {{ allow: {_list(user.subscribe)} }}",
            "        }",
            "      }",
        ]
    lines += ["    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class NatsAuthConfig:
    """What `stekker deploy nats-config` writes: config text and the secrets apart."""

    accounts: str
    passwords: dict[str, str]
    users: list[NatsUser]


def nats_auth_config(roster: Roster, known: Mapping[str, str] | None = None) -> NatsAuthConfig:
    users = users_for(roster)
    passwords = passwords_for(users, known or {})
    hashes = {name: hash_password(pw) for name, pw in passwords.items()}
    text = render_accounts(users, hashes, federation=roster.body.federation,
                           version=roster.body.version)
    return NatsAuthConfig(accounts=text, passwords=passwords, users=users)
