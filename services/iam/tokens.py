"""Short-lived tokens for people and systems: EdDSA JWTs issued by a member key.

A token says "member M vouches that this bearer is a <role> of organisation <org> until
<exp>". It is signed with M's roster key (header `kid` = key id), so anyone holding the
roster in force can check it without asking M, and it stops counting the moment M's key
leaves the roster (suspension, removal): verification always looks the key up in the
roster in force, never in the token.

Pure functions; `now` is passed in so tests and services decide what "now" means.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import jwt
import uuid_utils

from mesh.errors import Rejected
from mesh.keys import Identity
from mesh.trust import TrustStore

TokenRole = Literal["tenant", "operator", "soc-reader", "auditor"]
ROLES: tuple[str, ...] = get_args(TokenRole)
ALGORITHM = "EdDSA"
MAX_TTL_S = 24 * 3600  # short-lived: a day at most; an hour by default in the CLI
CLOCK_SKEW_S = 60  # a token "issued" slightly in the future is a clock, not an attack

# Who may do what through a member (issue 5): only a tenant or an operator of member M
# submits through M; only an operator requests a takeover.
SUBMIT_ROLES: frozenset[str] = frozenset({"tenant", "operator"})
TAKEOVER_ROLES: frozenset[str] = frozenset({"operator"})

# The NATS header a request carries its bearer's token in.
H_TOKEN = "Fed-Token"


@dataclass(frozen=True)
class Claims:
    role: TokenRole
    org: str
    member: str  # the issuer
    key_id: str
    iat: dt.datetime
    exp: dt.datetime
    jti: str


def _epoch(t: dt.datetime) -> int:
    return int(t.timestamp())


def issue_token(identity: Identity, role: str, org: str, ttl_s: int, now: dt.datetime) -> str:
    """A token for a `role` of `org`, valid `ttl_s` seconds from `now`, signed by `identity`."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not org:
        raise ValueError("the organisation must not be empty")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL_S} seconds, not {ttl_s}")
    claims = {
        "iss": identity.member,
        "member": identity.member,
        "role": role,
        "org": org,
        "iat": _epoch(now),
        "exp": _epoch(now) + ttl_s,
        "jti": str(uuid_utils.uuid7()),
    }
    return jwt.encode(claims, identity.private, algorithm=ALGORITHM,
                      headers={"kid": identity.key_id})


def verify_token(token: str, trust: TrustStore, now: dt.datetime) -> Claims:
    """The token's claims, or `Rejected` with a `token_...` reason."""
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise Rejected("token_malformed", str(exc)) from None
    member, key_id = unverified.get("member"), header.get("kid")
    if header.get("alg") != ALGORITHM or not isinstance(member, str) or not isinstance(key_id, str):
        raise Rejected("token_malformed", "needs alg EdDSA, a kid and a member claim")
    public = trust.key(member, key_id)
    if public is None:
        raise Rejected("token_issuer_not_active",
                       f"{key_id} is not an active key of {member} in roster v{trust.version}")
    try:
        # Times are checked below against `now`, not the library's clock.
        claims: dict[str, Any] = jwt.decode(
            token, public, algorithms=[ALGORITHM],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                     "require": ["member", "role", "org", "iat", "exp", "jti"]},
        )
    except jwt.InvalidSignatureError:
        raise Rejected("token_bad_signature", f"not signed by {member}'s key {key_id}") from None
    except jwt.PyJWTError as exc:
        raise Rejected("token_malformed", str(exc)) from None
    return _checked(claims, member, key_id, now)


def _checked(claims: dict[str, Any], member: str, key_id: str, now: dt.datetime) -> Claims:
    role, org, iat, exp = claims["role"], claims["org"], claims["iat"], claims["exp"]
    if role not in ROLES:
        raise Rejected("token_role", f"unknown role {role!r}")
    if not isinstance(org, str) or not org:
        raise Rejected("token_malformed", "empty organisation")
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise Rejected("token_malformed", "iat and exp must be integers")
    if exp - iat > MAX_TTL_S:
        raise Rejected("token_lifetime", f"valid {exp - iat} s; at most {MAX_TTL_S} s")
    stamp = now.timestamp()
    if stamp >= exp:
        raise Rejected("token_expired", f"expired {int(stamp - exp)} s ago")
    if iat > stamp + CLOCK_SKEW_S:
        raise Rejected("token_not_yet_valid", f"issued {int(iat - stamp)} s in the future")
    return Claims(role=cast(TokenRole, role), org=org, member=member, key_id=key_id,
                  iat=dt.datetime.fromtimestamp(iat, dt.UTC),
                  exp=dt.datetime.fromtimestamp(exp, dt.UTC), jti=str(claims["jti"]))


def authorize(headers: dict[str, str], trust: TrustStore, *, publisher: str,
              roles: Collection[str], now: dt.datetime) -> Claims:
    """The bearer token of a request published by `publisher`, if it allows the request.

    Refusals: `token_missing`, any reason of `verify_token`, `token_role` (the role may
    not do this), `token_member_mismatch` (a token of member A on a request published by
    member B: a tenant of A does not submit through B).
    """
    token = headers.get(H_TOKEN)
    if not token:
        raise Rejected("token_missing", f"no {H_TOKEN} header")
    claims = verify_token(token, trust, now)
    if claims.role not in roles:
        raise Rejected("token_role", f"a {claims.role} may not do this "
                                     f"(allowed: {', '.join(sorted(roles))})")
    if claims.member != publisher:
        raise Rejected("token_member_mismatch",
                       f"token of {claims.member} on a request published by {publisher}")
    return claims
