"""The files of `stekker deploy nats-config` (and of `stekker up --secure`).

    <out>/nats-accounts.conf   accounts and users: public nkeys and permissions only
    <out>/<user>.nk            one nkey seed per user, mode 0600, kept on re-runs

Give each member's node only its own `<member>.nk`, a SOC only `soc-reader.nk`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from contracts.iam import Roster
from mesh.errors import ConfigError
from services.iam.nats_config import NatsAuthConfig, nats_auth_config, public_nkey

ACCOUNTS_FILE = "nats-accounts.conf"
SEED_SUFFIX = ".nk"


def seed_path(out: Path, user: str) -> Path:
    return out / f"{user}{SEED_SUFFIX}"


def write_secret(path: Path, text: str) -> None:
    """Create or replace with mode 0600 from the first byte (never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, 0o600)


def known_seeds(out: Path) -> dict[str, str]:
    """The seeds handed out before, by user; a file that holds no seed is an error."""
    found: dict[str, str] = {}
    for path in sorted(out.glob(f"*{SEED_SUFFIX}")) if out.is_dir() else []:
        seed = path.read_text(encoding="utf-8").strip()
        try:
            public_nkey(seed)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        found[path.name[: -len(SEED_SUFFIX)]] = seed
    return found


@dataclass(frozen=True)
class WrittenAuth:
    auth: NatsAuthConfig
    accounts: Path
    seeds: dict[str, Path]


def write_nats_auth(out: Path, roster: Roster) -> WrittenAuth:
    """Write the accounts file and the seeds of every user the roster calls for. Seeds of
    users no longer in the roster stay on disk but open nothing: their keys are gone from
    the accounts file."""
    if not out.exists():
        out.mkdir(mode=0o700, parents=True)
    auth = nats_auth_config(roster, known_seeds(out))
    accounts = out / ACCOUNTS_FILE
    accounts.write_text(auth.accounts, encoding="utf-8")
    seeds = {}
    for user, seed in auth.seeds.items():
        seeds[user] = seed_path(out, user)
        write_secret(seeds[user], seed + "\n")
    return WrittenAuth(auth=auth, accounts=accounts, seeds=seeds)
