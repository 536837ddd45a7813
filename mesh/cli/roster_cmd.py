"""`stekker roster show|verify|sign` and `stekker federation init`: the roster chain."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import cast

import typer

from contracts.iam import Roster
from mesh.cli import common
from mesh.errors import MeshError
from mesh.keys import load_or_create_identity
from services.iam.chain import chain_report
from services.iam.founding import (
    CARDS_DIR,
    PROPOSAL_FILE,
    FounderCard,
    add_signature,
    card_of,
    genesis_body,
    genesis_complete,
    read_json,
    write_json,
)
from services.iam.genesis import GENESIS_FILE
from services.iam.store import read_chain


async def _stored_chain() -> list[Roster]:
    from mesh.bus import Bus

    # Unverified on purpose: `verify` must see a broken chain to report it.
    bus = await Bus.connect(common.servers(), service="cli-roster", connect_timeout_s=5.0,
                            **common.nats_credentials())
    try:
        return await read_chain(bus)
    finally:
        await bus.close()


def _group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    from mesh.cli.up_cmd import _group as shared_group

    return shared_group(app, name, help_text)


def register(app: typer.Typer) -> None:
    roster = _group(app, "roster", "The signed roster: its versions, their chain, signing.")
    federation = _group(app, "federation", "Founding a federation.")

    @roster.command("show")
    def show(as_json: bool = typer.Option(False, "--json", help="The chain as JSON.")) -> None:
        """Every roster version: members, keys, states, threshold and who signed it."""
        chain = common.run(_stored_chain)
        if as_json:
            common.print_json(chain)
            return
        if not chain:
            common.fail("the federation has no roster yet")
        last = chain[-1].body
        typer.echo(f"federation {last.federation}: roster version {last.version}, "
                   f"threshold {last.threshold}")
        common.print_table(None, ["member", "state", "roles", "key id"], [
            [m.id, m.state, ",".join(m.roles), m.key_id] for m in last.members])
        for r in chain:
            typer.echo(f"v{r.body.version} issued {r.body.issued_at.isoformat()} signed by "
                       + ", ".join(sorted({s.member for s in r.signatures})))

    @roster.command("verify")
    def verify(as_json: bool = typer.Option(False, "--json", help="The report as JSON.")) -> None:
        """Check the whole chain v1..vN; exit 0 only when every version holds."""
        chain = common.run(_stored_chain)
        report = chain_report(chain)
        holds = bool(report) and all(r.ok for r in report)
        if as_json:
            common.print_json({"holds": holds, "versions": report})
        else:
            for r in report:
                typer.echo(f"v{r.version}: {'ok' if r.ok else 'REFUSED'}"
                           f" (signed by {', '.join(r.signers) or 'nobody'})"
                           + (f" {r.reason}" if r.reason else ""))
            typer.echo("chain holds" if holds else "chain does NOT hold")
        raise typer.Exit(0 if holds else 1)

    @roster.command("sign")
    def sign(
        file: Path = typer.Argument(..., help="A roster proposal (JSON)."),
    ) -> None:
        """Add the acting member's (--as) signature to a roster proposal file."""
        try:
            proposal = cast(Roster, read_json(file, Roster))
            identity = common.acting_identity()
        except MeshError as exc:
            common.fail(str(exc))
        signed = add_signature(proposal, identity)
        write_json(file, signed)
        typer.echo(f"{identity.member} signed {file} (version {signed.body.version})")
        if signed.body.version == 1:
            if genesis_complete(signed):
                out = write_json(common.settings().data_dir / GENESIS_FILE, signed)
                typer.echo(f"every founder signed: genesis written to {out}; start the nodes")
            else:
                founders = {m.id for m in signed.body.members}
                missing = sorted(founders - {s.member for s in signed.signatures})
                typer.echo(f"still to sign: {', '.join(missing)}")

    @federation.command("init")
    def init(
        member: str = typer.Option(..., "--member", help="Your member id."),
        name: str = typer.Option("", "--name", help="Your organisation's name."),
        fed_name: str = typer.Option("stekker", "--federation", help="Federation name."),
        founders: list[Path] = typer.Option(
            [], "--founder", help="Another founder's card (repeat); writes the proposal."),
        threshold: int | None = typer.Option(None, "--threshold", help="Default ⌈2n/3⌉."),
    ) -> None:
        """Create your key and founder card; with the other founders' cards, also the
        genesis proposal, signed by you (see docs/identity.md)."""
        data_dir = common.settings().data_dir
        try:
            identity = load_or_create_identity(data_dir / "keys", member)
            card = card_of(identity, name or member)
            card_path = write_json(data_dir / CARDS_DIR / f"{member}.card.json", card)
            typer.echo(f"your key id: {identity.key_id}; your card: {card_path}")
            if not founders:
                typer.echo("send the card to the other founders; compare key ids by phone")
                return
            cards = [card, *(cast(FounderCard, read_json(p, FounderCard)) for p in founders)]
            body = genesis_body(fed_name, cards, dt.datetime.now(dt.UTC), threshold)
        except MeshError as exc:
            common.fail(str(exc))
        proposal = add_signature(Roster(body=body, signatures=[]), identity)
        out = write_json(data_dir / PROPOSAL_FILE, proposal)
        typer.echo(f"genesis proposal for {len(body.members)} founders: {out}; each founder "
                   "now runs `stekker roster sign` on it")

