"""End to end, as processes: `stekker up --secure`. The servers run the generated
accounts, nodes log in with their own nkeys and require tokens, and the README's
commands work unchanged (the CLI finds the acting member's nkey and the local
operator's token in the data folder). A submission without a valid token is refused and
reported; a member's credentials cannot publish as another member; a suspended member's
credentials stop working once the suspension takes effect."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats.errors
import pytest

from contracts.base import Event
from contracts.registry import MemberAnnounced
from contracts.security import SecurityViolation
from mesh.bus import Bus
from mesh.envelope import Envelope
from mesh.errors import NotConnected
from mesh.keys import load_identity
from mesh.localfed import AUTH_DIR, LocalFederation
from mesh.trust import TrustStore
from services.iam.nats_files import ACCOUNTS_FILE, seed_path
from support import DEMO_WORKLOADS, demo_profiles, wait_until
from support_e2e import json_of, placements_now, running_up, stekker, wait_up_ready

pytestmark = pytest.mark.e2e

REFUSED = (nats.errors.TimeoutError, asyncio.TimeoutError)


async def connect_as(data_dir: Path, user: str, member: str | None = None) -> Bus:
    """A connection with `user`'s nkey from `up --secure`, signing as `member`."""
    from services.iam.service import load_roster

    urls = await wait_until(LocalFederation(data_dir).urls, timeout=30, what="servers")
    identity = load_identity(data_dir / "keys", member) if member else None
    bus = await Bus.connect(urls, identity=identity, service="test", connect_timeout_s=10.0,
                            nkey_file=seed_path(data_dir / AUTH_DIR, user))
    roster = await wait_until(lambda: load_roster(bus), timeout=30, what="roster")
    bus.trust = TrustStore(roster)
    return bus


def renamed_copy(tmp_path: Path, new_id: str) -> Path:
    """The README's extra workload under another id."""
    text = (DEMO_WORKLOADS / "later" / "minbzk-wiki.yaml").read_text(encoding="utf-8")
    path = tmp_path / f"{new_id}.yaml"
    path.write_text(text.replace("id: minbzk-wiki", f"id: {new_id}"), encoding="utf-8")
    return path


async def test_secure_up_enforces_nkeys_and_tokens(tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    with running_up(data_dir, "--secure") as up:
        await wait_up_ready(up)
        assert up.fed.is_secure()
        auth = data_dir / AUTH_DIR
        assert (auth / ACCOUNTS_FILE).is_file()
        assert seed_path(auth, "amstel").stat().st_mode & 0o777 == 0o600
        # Nobody connects without credentials.
        with pytest.raises(NotConnected):
            await Bus.connect(up.fed.urls(), connect_timeout_s=1.0, reconnect=False)

        bus = await connect_as(data_dir, "amstel")
        refusals: list[tuple[str, str]] = []

        async def on_violation(event: Event, env: Envelope) -> None:
            assert isinstance(event, SecurityViolation)
            refusals.append((event.reason, event.offending_subject))

        await bus.consume(on_violation, subjects=[SecurityViolation.subject_pattern()],
                          durable=None)
        try:
            # The README walkthrough: a new workload, submitted with the local token.
            placed = json_of(stekker(
                data_dir, "workload", "submit",
                str(DEMO_WORKLOADS / "later" / "minbzk-wiki.yaml"), "--json", "--wait", "60"))
            assert placed["id"] == "minbzk-wiki" and placed["state"] != "unplaceable"

            async def running() -> bool:
                got = await placements_now(bus)
                record = (got or {}).get("minbzk-wiki")
                return bool(record and record.replicas
                            and all(r.state == "running" for r in record.replicas))

            await wait_until(running, timeout=60, what="minbzk-wiki running")
            def all_healthy() -> bool:  # each node answers its health request
                return all(row["health"] for row in json_of(stekker(data_dir, "status",
                                                                    "--json")))

            await wait_until(all_healthy, timeout=60, interval=0.5, what="healthy nodes")
            audit = stekker(data_dir, "audit", "verify")  # with the auditor's nkey
            assert audit.returncode == 0, audit.stdout + audit.stderr

            # A bad token: published (amstel's own nkey and key) but refused by the
            # scheduler, reported, never placed.
            forged = renamed_copy(tmp_path, "no-token-wiki")
            sent = stekker(data_dir, "--token", "not-a-token", "workload", "submit",
                           str(forged), "--wait", "0")
            assert sent.returncode == 0, sent.stderr
            await wait_until(lambda: any(r == "token_malformed" for r, _ in refusals),
                             timeout=60, what="the refusal of the bad token")
            got = await placements_now(bus)
            assert got is not None and "no-token-wiki" not in got

            # amstel's login under dommel's key: the server refuses dommel's subjects.
            dommel = next(p for p in demo_profiles() if p.id == "dommel")
            forger = await connect_as(data_dir, "amstel", "dommel")
            try:
                with pytest.raises(REFUSED):
                    await forger.publish(MemberAnnounced(profile=dommel), timeout=0.5)
            finally:
                await forger.close()
            # The SOC feed (read with the soc-reader's nkey) shows the refusal, high.
            def soc_reports_it() -> bool:
                tail = stekker(data_dir, "soc", "tail", "--json", "--severity", "high")
                assert tail.returncode == 0, tail.stderr
                return "token_malformed" in tail.stdout

            await wait_until(soc_reports_it, timeout=60, interval=0.5,
                             what="the refusal on the SOC feed")

            # Suspending zuidas (two endorsements): `up` rewrites the accounts and reloads
            # the servers, and zuidas's nkey opens nothing any more.
            for member in ("amstel", "dommel"):
                endorsed = stekker(data_dir, "--as", member, "member", "suspend", "zuidas")
                assert endorsed.returncode == 0, endorsed.stderr
            await wait_until(lambda: "roster v2 in force: NATS accounts" in up.output(),
                             timeout=60, interval=0.2, what="the accounts rewritten")
            with pytest.raises(NotConnected):
                await Bus.connect(up.fed.urls(), connect_timeout_s=1.0, reconnect=False,
                                  nkey_file=seed_path(auth, "zuidas"))
        finally:
            await bus.close()

