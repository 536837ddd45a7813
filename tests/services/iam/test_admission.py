"""Admission and suspension by endorsement: below the threshold nothing changes; a key
counted twice counts once; at the threshold the next roster is in force everywhere."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from contracts.workload import WorkloadReleased
from mesh.envelope import open_message, seal
from mesh.errors import Rejected
from mesh.keys import load_identity
from mesh.server import NatsCluster
from services.iam.endorsing import endorse_change
from support import federation, wait_until
from support_iam import stekker


async def test_admit_then_suspend(nats_server: NatsCluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    urls = nats_server.urls
    async with federation(urls, data_dir, services=["iam"]) as fed:
        report = tmp_path / "conformance.xml"
        report.write_text("<testsuite tests='5' failures='0'/>")
        cand_dir = tmp_path / "candidate"
        code, _, err = await stekker(urls, cand_dir, "member", "apply", "--member", "nieuw",
                                     "--federation", "stekker-test", "--conformance",
                                     str(report), "--out", str(tmp_path / "req.json"))
        assert code == 0, err
        code, _, err = await stekker(urls, data_dir, "--as", "amstel", "member", "request",
                                     str(tmp_path / "req.json"))
        assert code == 0, err

        iams = {m: fed.nodes[m].started[0] for m in fed.nodes}

        def pending() -> list[int]:
            return [max(i.health()["pending_endorsements"].values(), default=0)
                    for i in iams.values()]

        # One endorsement, then the same key again: still one counted; v1 stays.
        for _ in range(2):
            code, _, err = await stekker(urls, data_dir, "--as", "amstel",
                                         "member", "endorse", "nieuw")
            assert code == 0, err
        await wait_until(lambda: pending() == [1, 1, 1], what="one endorsement everywhere")
        assert all(n.ctx.trust.version == 1 for n in fed.nodes.values())

        code, _, err = await stekker(urls, data_dir, "--as", "dommel",
                                     "member", "endorse", "nieuw")
        assert code == 0, err
        await wait_until(lambda: all(n.ctx.trust.version == 2 for n in fed.nodes.values()),
                         what="v2 everywhere")
        assert fed.nodes["zuidas"].ctx.trust.member_ids() == ["amstel", "dommel", "nieuw",
                                                               "zuidas"]
        code, _, _ = await stekker(urls, data_dir, "roster", "verify")
        assert code == 0

        # Suspend zuidas: v2 has 4 active members, threshold 3.
        zuidas = fed.identity("zuidas")
        nieuw_bus = await fed.bus("amstel")
        nieuw_bus.identity = load_identity(cand_dir / "keys", "nieuw")
        for member in ("amstel", "dommel"):
            code, _, err = await stekker(urls, data_dir, "--as", member,
                                         "member", "suspend", "zuidas")
            assert code == 0, err
        await wait_until(lambda: pending() == [2, 2, 2], what="two suspension endorsements")
        assert fed.nodes["amstel"].ctx.trust.version == 2
        await endorse_change(nieuw_bus, "suspend", "zuidas")
        await wait_until(lambda: all(n.ctx.trust.version == 3 for n in fed.nodes.values()),
                         what="v3 everywhere")

        # From now on zuidas's signed messages are refused.
        trust = fed.nodes["amstel"].ctx.trust
        event = WorkloadReleased(workload="wl-1", member="zuidas", cause="test")
        subject = WorkloadReleased.subject("zuidas", "wl-1")
        body = msgspec.json.encode(event)
        now = dt.datetime.now(dt.UTC)
        headers = seal(zuidas, subject, WorkloadReleased.type_name(), body, now=now)
        with pytest.raises(Rejected) as caught:
            open_message(subject, headers, body, trust, received=now)
        assert caught.value.reason == "unknown_key"
