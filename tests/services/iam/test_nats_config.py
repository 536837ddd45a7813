"""The NATS accounts of `stekker deploy nats-config`, as text: pure, no server (the
servers that run them: tests/integration/test_nats_permissions.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from contracts.iam import Roster, RosterBody
from mesh import layout
from mesh.errors import ConfigError
from mesh.keys import Identity
from services.iam.genesis import build_genesis
from services.iam.nats_config import (
    AUDITOR,
    SOC_READER,
    member_user,
    nats_auth_config,
    new_seed,
    public_nkey,
    users_for,
)
from services.iam.nats_files import known_seeds, write_nats_auth
from services.iam.token_files import local_token
from support import demo_profiles

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def roster() -> Roster:
    profiles = demo_profiles()
    ids = {p.id: Identity.generate(p.id) for p in profiles}
    return build_genesis("stekker-test", profiles, ids, NOW)


def with_suspended(roster: Roster, member: str) -> Roster:
    members = [msgspec.structs.replace(m, state="suspended") if m.id == member else m
               for m in roster.body.members]
    body = RosterBody(federation=roster.body.federation, version=2, issued_at=NOW,
                      threshold=2, members=members)
    return Roster(body=body, signatures=[])


def test_a_member_publishes_as_itself_and_writes_its_own_keys() -> None:
    user = member_user("amstel", ["amstel", "dommel", "zuidas"])
    assert "fed.v1.*.*.amstel" in user.publish and "soc.v1.*.amstel" in user.publish
    assert not any(".dommel" in s or ".zuidas" in s for s in user.publish)
    assert f"$KV.{layout.KV_MEMBERS}.amstel" in user.publish
    assert f"$KV.{layout.KV_MEMBERS}.>" not in user.publish
    assert f"$KV.{layout.KV_PLACEMENTS}.>" in user.publish  # shared by design
    assert user.publish_deny == ("$KV.fed_decisions.rotation.dommel",
                                 "$KV.fed_decisions.rotation.zuidas")
    # No wildcard over the JetStream API: no update, delete or purge of streams.
    assert "$JS.API.>" not in user.publish
    assert not any(s.startswith(("$JS.API.STREAM.UPDATE", "$JS.API.STREAM.DELETE"))
                   for s in user.publish)
    assert "$JS.API.>" in user.subscribe_deny
    assert "stekker.v1.health.dommel" in user.subscribe_deny
    assert "stekker.v1.health.amstel" not in user.subscribe_deny


def test_every_bucket_is_writable_by_some_member_service() -> None:
    """A bucket added to the layout is not silently closed to the services."""
    user = member_user("amstel", ["amstel"])
    for spec in layout.BUCKETS:
        assert any(s.startswith(f"$KV.{spec.name}.") for s in user.publish), spec.name


def test_suspended_members_have_no_user(roster: Roster) -> None:
    names = [u.name for u in users_for(with_suspended(roster, "zuidas"))]
    assert names == ["amstel", "dommel", SOC_READER, AUDITOR]
    amstel = users_for(with_suspended(roster, "zuidas"))[0]
    assert "$KV.fed_decisions.rotation.zuidas" not in amstel.publish_deny


def test_readers_only_read(roster: Roster) -> None:
    users = {u.name: u for u in users_for(roster)}
    soc = users[SOC_READER]
    assert soc.subscribe == ("soc.v1.>", "_INBOX.>")
    assert all(s.startswith(("$JS.API.", "$JS.ACK.SOC", "$JS.FC.SOC", "_INBOX"))
               for s in soc.publish)
    assert not any(s.startswith(("$KV.", "$O.", "fed.", "soc.")) for s in soc.publish)


def test_the_config_holds_public_keys_only(roster: Roster) -> None:
    auth = nats_auth_config(roster)
    assert set(auth.seeds) == {"amstel", "dommel", "zuidas", SOC_READER, AUDITOR}
    for seed in auth.seeds.values():
        assert seed.startswith("SU") and seed not in auth.accounts
        assert f'nkey: "{public_nkey(seed)}"' in auth.accounts
    assert 'deny: ["$KV.fed_decisions.rotation.dommel"' in auth.accounts
    again = nats_auth_config(roster, auth.seeds)
    assert again.seeds == auth.seeds and again.accounts == auth.accounts


def test_a_bad_seed_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an nkey seed"):
        public_nkey("SUnot-a-seed")
    (tmp_path / "amstel.nk").write_text("garbage\n")
    with pytest.raises(ConfigError, match=r"amstel\.nk"):
        known_seeds(tmp_path)


def test_written_seeds_are_private_and_kept(tmp_path: Path, roster: Roster) -> None:
    out = tmp_path / "auth"
    first = write_nats_auth(out, roster)
    assert out.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in first.seeds.values())
    second = write_nats_auth(out, with_suspended(roster, "zuidas"))
    assert second.auth.seeds == {k: v for k, v in first.auth.seeds.items() if k != "zuidas"}
    assert public_nkey(first.auth.seeds["zuidas"]) not in second.accounts.read_text()
    assert new_seed() != new_seed()


def test_the_local_token_is_renewed_only_when_short(tmp_path: Path) -> None:
    amstel = Identity.generate("amstel")
    path = tmp_path / "tokens" / "amstel.jwt"
    token = local_token(amstel, path, NOW)
    assert path.stat().st_mode & 0o777 == 0o600
    assert local_token(amstel, path, NOW + dt.timedelta(minutes=50)) == token
    renewed = local_token(amstel, path, NOW + dt.timedelta(minutes=56))
    assert renewed != token
    rotated = Identity.generate("amstel")  # a new key: a new token
    assert local_token(rotated, path, NOW + dt.timedelta(minutes=56)) != renewed
