"""Bearer tokens at the request paths: with `require_tokens` a submission needs a tenant or
operator token of the publishing member, a takeover request an operator token; every
refusal is a `security.violation.v1` with a `token_...` reason. Against real NATS."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from contracts.base import Event
from contracts.security import SecurityViolation
from contracts.state import SagaRecord
from contracts.takeover import TakeoverRequested
from contracts.workload import WorkloadSubmitted
from mesh import layout
from mesh.bus import Bus
from mesh.envelope import Envelope, new_msg_id
from mesh.runtime import NodeSettings
from mesh.server import NatsCluster
from mesh.state import bucket
from services.iam.tokens import H_TOKEN, issue_token
from support import DEMO_WORKLOADS, Federation, federation, wait_until
from support_iam import stekker
from support_workloads import demo_spec, members_known, placements

SETTINGS = NodeSettings(require_tokens=True)


async def watch_violations(bus: Bus) -> dict[str, str]:
    """msg id of each refused message -> reason, filled as violations arrive."""
    seen: dict[str, str] = {}

    async def on_event(event: Event, env: Envelope) -> None:
        assert isinstance(event, SecurityViolation)
        if event.msg_id:
            seen[event.msg_id] = event.reason

    await bus.consume(on_event, subjects=[SecurityViolation.subject_pattern()], durable=None)
    return seen


def token(fed: Federation, member: str, role: str, *, ttl: int = 600,
          now: dt.datetime | None = None) -> dict[str, str]:
    return {H_TOKEN: issue_token(fed.identity(member), role, "minbzk", ttl,
                                 now or dt.datetime.now(dt.UTC))}


async def test_submissions_need_a_tenant_or_operator_token_of_the_member(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    services = ["iam", "registry", "scheduler"]
    async with federation(nats_server.urls, tmp_path / "fed", services=services,
                          settings=SETTINGS) as fed:
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="member profiles")
        violations = await watch_violations(bus)
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        refused = {
            "token_missing": ("gemeente-utrecht-website", {}),
            "token_role": ("nctv-dreigingsbeeld", token(fed, "amstel", "soc-reader")),
            "token_member_mismatch": ("belastingdienst-toeslagen-api",
                                      token(fed, "dommel", "tenant")),
            "token_expired": ("duo-studiefinanciering-portaal",
                              token(fed, "amstel", "tenant", ttl=60, now=long_ago)),
            "token_malformed": ("kadaster-kaartviewer", {H_TOKEN: "x.y.z"}),
        }
        ids = {}
        for why, (name, headers) in refused.items():
            msg_id = new_msg_id()
            ids[msg_id] = why
            await bus.publish(WorkloadSubmitted(spec=demo_spec(name)), msg_id=msg_id,
                              extra_headers=headers)
        await wait_until(lambda: all(i in violations for i in ids), what="every refusal")
        assert {i: violations[i] for i in ids} == ids

        # A tenant's token of the publishing member gets the workload placed.
        await bus.publish(WorkloadSubmitted(spec=demo_spec("rvig-brp-kern")),
                          extra_headers=token(fed, "amstel", "tenant"))
        records = await placements(bus)
        await wait_until(lambda: records.get("rvig-brp-kern"), what="the placement")
        for name, _ in refused.values():
            assert await records.get(name) is None

        # The CLI sends its --token as Fed-Token.
        operator = token(fed, "amstel", "operator")[H_TOKEN]
        code, _, err = await stekker(fed.urls, fed.data_dir, "--as", "amstel", "--token",
                                     operator, "workload", "submit", "--wait", "10",
                                     str(DEMO_WORKLOADS / "kadaster-kaartviewer.yaml"))
        assert code == 0, err
        assert await records.get("kadaster-kaartviewer") is not None


async def test_takeover_requests_need_an_operator_token(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    services = ["iam", "registry", "takeover"]
    async with federation(nats_server.urls, tmp_path / "fed", services=services,
                          settings=SETTINGS) as fed:
        bus = await fed.bus("amstel")
        violations = await watch_violations(bus)
        sagas = await bucket(bus, layout.KV_SAGAS, SagaRecord)
        refused_saga, allowed_saga = new_msg_id(), new_msg_id()
        request_id = new_msg_id()
        await bus.publish(TakeoverRequested(saga=refused_saga, member="zuidas", reason="drill",
                                            drill=True), msg_id=request_id,
                          extra_headers=token(fed, "amstel", "tenant"))
        await wait_until(lambda: request_id in violations, what="the refusal")
        assert violations[request_id] == "token_role"
        await bus.publish(TakeoverRequested(saga=allowed_saga, member="zuidas", reason="drill",
                                            drill=True),
                          extra_headers=token(fed, "amstel", "operator"))
        await wait_until(lambda: sagas.get(allowed_saga), what="the operator's saga")
        assert await sagas.get(refused_saga) is None


async def test_a_token_of_a_member_suspended_later_is_refused(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    data_dir = tmp_path / "fed"
    urls = nats_server.urls
    async with federation(urls, data_dir, services=["iam"]) as fed:
        code, text, err = await stekker(urls, data_dir, "--as", "zuidas", "token", "issue",
                                        "--role", "operator", "--org", "zuidas-ops")
        assert code == 0, err
        issued = text.strip()
        code, out, err = await stekker(urls, data_dir, "token", "verify", issued, "--json")
        assert code == 0, err
        assert json.loads(out)["member"] == "zuidas"
        for member in ("amstel", "dommel"):  # v1's threshold is 2 of 3
            code, _, err = await stekker(urls, data_dir, "--as", member,
                                         "member", "suspend", "zuidas")
            assert code == 0, err
        await wait_until(lambda: all(n.ctx.trust.version == 2 for n in fed.nodes.values()),
                         what="v2 everywhere")
        code, out, _ = await stekker(urls, data_dir, "token", "verify", issued, "--json")
        assert code == 1
        assert json.loads(out)["reason"] == "token_issuer_not_active"
        code, _, err = await stekker(urls, data_dir, "token", "verify", issued)
        assert code == 1 and "token_issuer_not_active" in err
