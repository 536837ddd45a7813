"""The nats-server config of `stekker deploy nats-config` enforces who may publish what.

Real nats-server processes run with the generated accounts (nkey users); every test
stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import pytest
from nats.aio.msg import Msg

from contracts.base import Event
from contracts.registry import MemberAnnounced
from contracts.security import SecurityViolation
from contracts.state import MemberRecord
from contracts.workload import WorkloadSubmitted
from mesh import layout
from mesh.bus import Bus
from mesh.envelope import Envelope
from mesh.errors import NotConnected
from mesh.keys import load_identity
from mesh.server import NatsCluster
from mesh.soc_feed import publish_cloudevent, tail
from mesh.state import bucket
from mesh.trust import TrustStore
from services.iam.genesis import found_local_federation
from services.iam.nats_config import AUDITOR, SOC_READER
from services.iam.nats_files import WrittenAuth, write_nats_auth
from services.iam.store import load_roster, roster_bucket, version_key
from support import MEMBERS, demo_profiles, federation, wait_until
from support_workloads import PLACING, demo_spec, members_known, placements

REFUSED = (nats.errors.TimeoutError, asyncio.TimeoutError)


@dataclass
class Secured:
    url: str
    data_dir: Path
    auth: WrittenAuth
    trust: TrustStore
    buses: list[Bus]

    async def bus(self, user: str, member: str | None = None) -> Bus:
        """A connection with `user`'s nkey, signing as `member` (if given)."""
        identity = load_identity(self.data_dir / "keys", member) if member else None
        bus = await Bus.connect([self.url], identity=identity, trust=self.trust,
                                nkey_file=self.auth.seeds[user], connect_timeout_s=5.0)
        self.buses.append(bus)
        return bus


@pytest.fixture
def secured_server(tmp_path: Path) -> Iterator[tuple[NatsCluster, WrittenAuth, Path]]:
    data_dir = tmp_path / "fed"
    roster = found_local_federation(data_dir, "stekker-test", demo_profiles())
    auth = write_nats_auth(tmp_path / "auth", roster)
    cluster = NatsCluster.single(tmp_path / "nats", sync_always=False,
                                 extra_config=auth.auth.accounts)
    cluster.start()
    try:
        yield cluster, auth, data_dir
    finally:
        cluster.stop()


@contextlib.asynccontextmanager
async def secured(server: tuple[NatsCluster, WrittenAuth, Path]) -> AsyncIterator[Secured]:
    cluster, auth, data_dir = server
    roster = found_local_federation(data_dir, "stekker-test", demo_profiles())
    env = Secured(url=cluster.urls[0], data_dir=data_dir, auth=auth,
                  trust=TrustStore(roster), buses=[])
    try:
        amstel = await env.bus("amstel", "amstel")
        await amstel.provision(1)
        yield env
    finally:
        for bus in env.buses:
            await bus.close()


def violation(reason: str) -> SecurityViolation:
    return SecurityViolation(reason=reason, offending_subject="test", service="test")


async def collect(bus: Bus, seen: list[tuple[str, str]]) -> None:
    async def on_event(event: Event, env: Envelope) -> None:
        assert isinstance(event, SecurityViolation)
        seen.append((env.member, event.reason))

    await bus.consume(on_event, subjects=[SecurityViolation.subject_pattern()], durable=None)


async def test_member_cannot_publish_as_another_member(secured_server) -> None:
    async with secured(secured_server) as env:
        dommel = await env.bus("dommel", "dommel")
        seen: list[tuple[str, str]] = []
        await collect(dommel, seen)
        # amstel's connection holding dommel's key (stolen, say): the signature would
        # verify, but the server refuses the subject with dommel's publisher segment.
        forger = await env.bus("amstel", "dommel")
        with pytest.raises(nats.errors.TimeoutError):
            await forger.publish(violation("forged"), timeout=0.5)
        # The same connection publishing as itself works, and arrives after the forgery
        # would have: once it is seen, the forgery is known never to have been stored.
        honest = await env.bus("amstel", "amstel")
        await honest.publish(violation("honest"))
        await wait_until(lambda: ("amstel", "honest") in seen, what="amstel's own event")
        assert ("dommel", "forged") not in seen
        info = await honest.js.stream_info(layout.FED)
        assert info.state.messages == 1


async def test_signed_publish_and_consume_work_within_the_rules(secured_server) -> None:
    async with secured(secured_server) as env:
        dommel = await env.bus("dommel", "dommel")
        seen: list[tuple[str, str]] = []
        await collect(dommel, seen)
        amstel = await env.bus("amstel", "amstel")
        await amstel.publish(violation("from-amstel"))
        await dommel.publish(violation("from-dommel"))
        await wait_until(lambda: {("amstel", "from-amstel"), ("dommel", "from-dommel")}
                         <= set(seen), what="both members' events")
        kv = await amstel.kv(layout.KV_DECISIONS)
        await kv.put("probe", b"1")  # the federation's services write KV


async def test_member_writes_only_its_own_keys_of_per_member_buckets(secured_server) -> None:
    async with secured(secured_server) as env:
        amstel = await env.bus("amstel", "amstel")
        # What KeyValue.put and .delete publish, with a short wait for the refusal.
        js = amstel.nc.jetstream(timeout=0.5)
        delete = {"KV-Operation": "DEL"}
        for name in (layout.KV_MEMBERS, layout.KV_CAPACITY):
            kv = await amstel.kv(name)
            await kv.put("amstel", b"{}")  # its own key
            with pytest.raises(REFUSED):  # another member's: never stored
                await js.publish(f"$KV.{name}.dommel", b"{}")
            with pytest.raises(REFUSED):
                await js.publish(f"$KV.{name}.dommel", b"", headers=delete)
            assert await kv.keys() == ["amstel"]
        decisions = await amstel.kv(layout.KV_DECISIONS)
        await decisions.put("rotation.amstel", b"{}")
        with pytest.raises(REFUSED):  # nobody files a key rotation for another member
            await js.publish(f"$KV.{layout.KV_DECISIONS}.rotation.dommel", b"{}")
        await decisions.put("down.dommel", b"{}")  # shared: any member may declare
        assert sorted(await decisions.keys()) == ["down.dommel", "rotation.amstel"]


async def test_member_cannot_reconfigure_delete_or_purge_streams(secured_server) -> None:
    async with secured(secured_server) as env:
        amstel = await env.bus("amstel", "amstel")
        await amstel.publish(violation("kept"))
        info = await amstel.js.stream_info(layout.FED)
        config = info.config
        config.deny_delete = False
        js = amstel.nc.jetstream(timeout=0.5)  # a short wait for each refusal
        calls = [
            lambda: js.update_stream(config),  # would lift FED's deny_delete
            lambda: js.delete_stream(f"KV_{layout.KV_MEMBERS}"),
            lambda: js.purge_stream(f"KV_{layout.KV_ROSTER}"),
            lambda: js.delete_msg(layout.FED, 1),
        ]
        for call in calls:
            with pytest.raises(REFUSED):
                await asyncio.wait_for(call(), 2.0)
        after = await amstel.js.stream_info(layout.FED)
        assert after.config.deny_delete and after.state.messages == 1


async def test_member_cannot_answer_jetstream_calls(secured_server) -> None:
    async with secured(secured_server) as env:
        sniffer = await env.bus("dommel", "dommel")
        sniffed: list[str] = []
        probes: list[bytes] = []

        async def on_api(msg: Msg) -> None:
            sniffed.append(msg.subject)

        async def on_probe(msg: Msg) -> None:
            probes.append(msg.data)

        await sniffer.nc.subscribe("$JS.API.>", cb=on_api)  # refused by the server
        await sniffer.nc.subscribe("stekker.v1.probe", cb=on_probe)
        await sniffer.nc.flush()
        amstel = await env.bus("amstel", "amstel")
        kv = await amstel.kv(layout.KV_DECISIONS)
        await kv.put("probe", b"1")
        assert (await kv.get("probe")).value == b"1"
        # Sent after the API calls were answered: one server delivers to one connection
        # in order, so once the probe arrived, any API request would have arrived first.
        await amstel.nc.publish("stekker.v1.probe", b"after")
        await wait_until(lambda: probes == [b"after"], what="the probe")
        assert sniffed == []


async def test_federation_places_a_workload_within_the_rules(secured_server,
                                                             tmp_path: Path) -> None:
    cluster, auth, data_dir = secured_server
    logins = {m: auth.seeds[m] for m in MEMBERS}
    async with federation(cluster.urls, data_dir, services=PLACING, logins=logins) as fed:
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="every registry wrote its own")
        profiles = await bucket(bus, layout.KV_MEMBERS, MemberRecord)
        assert {e.key: e.value.msg_id != "" for e in await profiles.items()} == dict.fromkeys(
            MEMBERS, True)
        spec = demo_spec("gemeente-utrecht-website")
        await bus.publish(WorkloadSubmitted(spec=spec))
        records = await placements(bus)

        async def running() -> bool:
            entry = await records.get(spec.id)
            return entry is not None and entry.value.state == "running"

        await wait_until(running, timeout=30, what="the workload placed and running")
        entry = await records.get(spec.id)
        assert entry is not None
        assert {r.member for r in entry.value.replicas} == set(MEMBERS)
        # A forged announcement by amstel's connection under dommel's key goes nowhere.
        forger = await Bus.connect(cluster.urls, identity=fed.identity("dommel"),
                                   nkey_file=auth.seeds["amstel"], connect_timeout_s=5.0)
        try:
            with pytest.raises(REFUSED):
                await forger.publish(MemberAnnounced(profile=fed.profiles["zuidas"]),
                                     timeout=0.5)
        finally:
            await forger.close()


async def test_soc_reader_reads_soc_but_cannot_publish(secured_server) -> None:
    async with secured(secured_server) as env:
        amstel = await env.bus("amstel", "amstel")
        await publish_cloudevent(amstel, "soc.v1.high.amstel", b'{"id": "1"}', "soc-1")
        reader = await env.bus(SOC_READER)
        events = [e async for e in tail(reader)]
        assert events == [{"id": "1"}]
        with pytest.raises(REFUSED):
            await reader.js.publish("soc.v1.high.amstel", b'{"id": "2"}', timeout=0.5)
        with pytest.raises(REFUSED):
            await reader.js.publish("fed.v1.security.violation.amstel", b"{}", timeout=0.5)
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do
            kv = await reader.js.key_value(layout.KV_DECISIONS)
            await asyncio.wait_for(kv.put("probe", b"1"), 2.0)
        # Its core publishes are dropped too: a member subscribed there sees only its own.
        got: list[bytes] = []

        async def on_probe(msg: Msg) -> None:
            got.append(msg.data)

        sub = await amstel.nc.subscribe("stekker.v1.probe", cb=on_probe)
        await reader.nc.publish("stekker.v1.probe", b"reader")
        await reader.nc.flush()
        await amstel.nc.publish("stekker.v1.probe", b"member")
        await wait_until(lambda: b"member" in got, what="the member's probe")
        assert got == [b"member"]
        await sub.unsubscribe()
        assert [e async for e in tail(reader)] == [{"id": "1"}]


async def test_auditor_reads_fed_but_cannot_publish(secured_server) -> None:
    async with secured(secured_server) as env:
        amstel = await env.bus("amstel", "amstel")
        await amstel.publish(violation("audited"))
        auditor = await env.bus(AUDITOR)
        seen: list[tuple[str, str]] = []
        await collect(auditor, seen)
        await wait_until(lambda: ("amstel", "audited") in seen, what="the auditor's read")
        assert env.trust.roster is not None
        await (await roster_bucket(amstel)).create(version_key(1), env.trust.roster)
        roster = await load_roster(auditor)  # the chain FED is judged by
        assert roster is not None and roster.body.version == 1
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do
            kv = await auditor.js.key_value(layout.KV_ROSTER)
            await asyncio.wait_for(kv.put("v2", b"{}"), 2.0)
        with pytest.raises(REFUSED):
            await auditor.js.publish("fed.v1.security.violation.amstel", b"{}", timeout=0.5)


async def test_without_credentials_nobody_connects(secured_server) -> None:
    cluster, _, _ = secured_server
    with pytest.raises(NotConnected):
        await Bus.connect(cluster.urls, connect_timeout_s=1.0)


def test_deploy_nats_config_writes_accounts_and_secrets(tmp_path: Path) -> None:
    from support_iam import offline

    data_dir = tmp_path / "fed"
    found_local_federation(data_dir, "stekker-test", demo_profiles())
    out = tmp_path / "out"
    args = ("deploy", "nats-config", "--out", str(out), "--roster",
            str(data_dir / "genesis.json"))
    code, _, stderr = offline(data_dir, *args)
    assert code == 0, stderr
    seeds = {path.stem: path.read_text() for path in out.glob("*.nk")}
    assert set(seeds) == {"amstel", "dommel", "zuidas", SOC_READER, AUDITOR}
    assert all((out / f"{user}.nk").stat().st_mode & 0o777 == 0o600 for user in seeds)
    accounts = (out / "nats-accounts.conf").read_text()
    assert all(seed.strip() not in accounts for seed in seeds.values())  # public keys only
    assert '"fed.v1.*.*.amstel"' in accounts and '"$KV.fed_members.amstel"' in accounts
    code, _, stderr = offline(data_dir, *args)  # again: the same seeds
    assert code == 0, stderr
    assert {path.stem: path.read_text() for path in out.glob("*.nk")} == seeds
    # A server started with an `include` of the file takes it (nats-server resolves the
    # path relative to its own config file, here `nats/n1/server.conf`).
    include = os.path.relpath(out / "nats-accounts.conf", tmp_path / "nats" / "n1")
    cluster = NatsCluster.single(tmp_path / "nats", sync_always=False,
                                 extra_config=f"include {json.dumps(include)}")
    try:
        cluster.start()
    finally:
        cluster.stop()


def test_deploy_nats_config_refuses_a_bad_roster_file(tmp_path: Path) -> None:
    from support_iam import offline

    bad = tmp_path / "roster.json"
    bad.write_text("{}")
    code, _, stderr = offline(tmp_path, "deploy", "nats-config", "--out", str(tmp_path / "o"),
                              "--roster", str(bad))
    assert code == 1
    assert "not a Roster" in stderr and "Traceback" not in stderr
