"""`stekker federation init`, `roster sign|show|verify`, and the iam service's chain check."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from contracts.iam import Roster
from mesh.server import NatsCluster
from services.iam.store import roster_bucket
from support import federation, wait_until
from support_iam import offline, stekker, successor


def test_three_founders_found_a_federation_by_files(tmp_path: Path) -> None:
    dirs = {m: tmp_path / m for m in ("amstel", "dommel", "zuidas")}
    for member, folder in dirs.items():
        code, out, err = offline(folder, "federation", "init", "--member", member)
        assert code == 0, err
        assert (folder / "founders" / f"{member}.card.json").exists()
    cards = [str(dirs[m] / "founders" / f"{m}.card.json") for m in ("dommel", "zuidas")]
    code, out, err = offline(dirs["amstel"], "federation", "init", "--member", "amstel",
                             "--federation", "nl-gov",
                             *[a for c in cards for a in ("--founder", c)])
    assert code == 0, err
    proposal = dirs["amstel"] / "genesis-proposal.json"
    assert proposal.exists() and not (dirs["amstel"] / "genesis.json").exists()

    code, out, _ = offline(dirs["dommel"], "--as", "dommel", "roster", "sign", str(proposal))
    assert code == 0 and "still to sign: zuidas" in out
    code, out, _ = offline(dirs["zuidas"], "--as", "zuidas", "roster", "sign", str(proposal))
    assert code == 0 and "genesis written" in out
    genesis = msgspec.json.decode((dirs["zuidas"] / "genesis.json").read_bytes(), type=Roster)
    assert genesis.body.federation == "nl-gov" and genesis.body.threshold == 2
    assert sorted(s.member for s in genesis.signatures) == ["amstel", "dommel", "zuidas"]


async def test_roster_verify_and_the_service_refuse_a_bad_successor(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    data_dir = tmp_path / "fed"
    async with federation(nats_server.urls, data_dir, services=["iam"]) as fed:
        code, out, err = await stekker(nats_server.urls, data_dir, "roster", "verify", "--json")
        assert code == 0, err
        assert json.loads(out)["holds"] is True

        bus = await fed.bus("amstel")
        kv = await roster_bucket(bus)
        v1 = bus.trust.roster
        assert v1 is not None
        # One signature where the threshold is 2: refused by everyone.
        await kv.create("v2", successor(v1, [fed.identity("amstel")]))
        code, out, _ = await stekker(nats_server.urls, data_dir, "roster", "verify", "--json")
        report = json.loads(out)
        assert code == 1 and report["holds"] is False
        assert "roster_threshold_not_met" in report["versions"][1]["reason"]
        iam = fed.nodes["dommel"].started[0]
        await wait_until(lambda: "v2" in iam.health()["refused_versions"], what="refusal")
        assert fed.nodes["dommel"].ctx.trust.version == 1

        # A good v2 (the threshold of v1's keys) is put in force everywhere.
        await kv.put("v2", successor(v1, [fed.identity("amstel"), fed.identity("zuidas")]))
        for member in fed.nodes:
            await wait_until(lambda m=member: fed.nodes[m].ctx.trust.version == 2,  # type: ignore[misc]
                             what=f"v2 at {member}")
        code, out, _ = await stekker(nats_server.urls, data_dir, "roster", "show", "--json")
        assert code == 0 and [r["body"]["version"] for r in json.loads(out)] == [1, 2]
        # A skipped version (v4 without v3) is never reached by the chain walk.
        await kv.create("v4", successor(v1, [fed.identity("amstel"), fed.identity("zuidas")],
                                        version=4))
        code, _, _ = await stekker(nats_server.urls, data_dir, "roster", "verify")
        assert code == 0
