"""The local operator's token, kept in a file: what the CLI sends in a `stekker up --secure`
folder when no `--token` is given.

Whoever runs `stekker up` holds every demo member's key, so it is that member's operator
anyway; the file saves issuing a token per command and is renewed when it runs short.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jwt

from mesh.keys import Identity
from mesh.localfed import TOKENS_DIR
from services.iam.nats_files import write_secret
from services.iam.tokens import issue_token

LOCAL_ORG = "local-operator"
LOCAL_ROLE = "operator"
LOCAL_TTL_S = 3600
RENEW_BEFORE_S = 300  # renewed when fewer seconds are left: a command may take a while


def _still_good(token: str, identity: Identity, now: dt.datetime) -> bool:
    """Unverified look at a token we wrote ourselves: same issuer key, time left."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return False
    return (header.get("kid") == identity.key_id and claims.get("member") == identity.member
            and int(claims.get("exp", 0)) - now.timestamp() > RENEW_BEFORE_S)


def local_token(identity: Identity, path: Path, now: dt.datetime) -> str:
    """The operator token in `path` if it is `identity`'s and still good, else a new one,
    written there with mode 0600."""
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if _still_good(token, identity, now):
            return token
    token = issue_token(identity, LOCAL_ROLE, LOCAL_ORG, LOCAL_TTL_S, now)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_secret(path, token + "\n")
    return token


def local_operator_token(data_dir: Path, identity: Identity, now: dt.datetime) -> str:
    """`local_token` in `<data>/tokens/<member>.jwt` of a `stekker up --secure` folder."""
    return local_token(identity, data_dir / TOKENS_DIR / f"{identity.member}.jwt", now)
