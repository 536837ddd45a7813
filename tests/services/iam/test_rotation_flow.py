"""Key rotation on the bus: filed by the member, endorsed to the threshold, in force
everywhere; the old key is refused after its retirement, the new one is accepted."""

from __future__ import annotations

from pathlib import Path

from contracts.base import Event
from contracts.security import SecurityViolation
from mesh.envelope import Envelope, new_msg_id
from mesh.keys import load_identity
from mesh.server import NatsCluster
from support import federation, wait_until
from support_iam import stekker


async def test_rotate_a_key_by_endorsement(nats_server: NatsCluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    urls = nats_server.urls
    async with federation(urls, data_dir, services=["iam"]) as fed:
        old = fed.identity("amstel")
        # --grace 0: the old key retires at once, so its next message is refused.
        code, out, err = await stekker(urls, data_dir, "--as", "amstel", "member",
                                       "rotate-key", "--grace", "0")
        assert code == 0, err
        new = load_identity(data_dir / "keys" / "next", "amstel")
        assert new.key_id != old.key_id and new.key_id in out
        code, _, err = await stekker(urls, data_dir, "--as", "amstel", "member", "rotate-key",
                                     "--finish")
        assert code == 1 and "not hold" in err  # one endorsement of two: not yet
        code, _, err = await stekker(urls, data_dir, "--as", "dommel", "member",
                                     "endorse-rotation", "amstel")
        assert code == 0, err
        await wait_until(lambda: all(n.ctx.trust.key("amstel", new.key_id) is not None
                                     for n in fed.nodes.values()), what="v2 everywhere")
        code, _, err = await stekker(urls, data_dir, "roster", "verify")
        assert code == 0, err

        code, out, err = await stekker(urls, data_dir, "--as", "amstel", "member", "rotate-key",
                                       "--finish")
        assert code == 0, err
        assert load_identity(data_dir / "keys", "amstel").key_id == new.key_id

        watcher = await fed.bus("dommel")
        seen: dict[str, tuple[str, str]] = {}

        async def on_event(event: Event, env: Envelope) -> None:
            assert isinstance(event, SecurityViolation)
            seen[env.msg_id] = (event.reason, event.msg_id or "")

        await watcher.consume(on_event, subjects=[SecurityViolation.subject_pattern()],
                              durable=None)
        stale = await fed.bus("amstel")
        stale.identity = old  # a node not restarted, or a thief of the old key
        stale_id = new_msg_id()
        await stale.publish(SecurityViolation(reason="old-key", offending_subject="t"),
                            msg_id=stale_id)
        fresh = await fed.bus("amstel")  # signs with the installed new key
        fresh_id = new_msg_id()
        await fresh.publish(SecurityViolation(reason="new-key", offending_subject="t"),
                            msg_id=fresh_id)
        await wait_until(lambda: fresh_id in seen, what="the new key's message accepted")
        await wait_until(lambda: ("key_retired", stale_id) in seen.values(),
                         what="the old key's message refused as key_retired")
        assert stale_id not in seen
