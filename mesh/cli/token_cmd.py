"""`stekker token issue|verify`: short-lived bearer tokens signed by a member key."""

from __future__ import annotations

import datetime as dt

import typer

from mesh.cli import common
from mesh.errors import MeshError, Rejected
from services.iam.tokens import MAX_TTL_S, ROLES, Claims, issue_token, verify_token


def _claims_json(claims: Claims) -> dict[str, object]:
    return {"valid": True, "role": claims.role, "org": claims.org, "member": claims.member,
            "key_id": claims.key_id, "iat": claims.iat.isoformat(),
            "exp": claims.exp.isoformat()}


async def _verify(token: str) -> Claims | Rejected:
    bus = await common.open_bus()  # the roster in force, its chain verified
    try:
        return verify_token(token, bus.trust, dt.datetime.now(dt.UTC))
    except Rejected as refused:
        return refused
    finally:
        await bus.close()


def register(app: typer.Typer) -> None:
    from mesh.cli.up_cmd import _group

    token = _group(app, "token", "Short-lived bearer tokens for tenants, operators, "
                   "SOC readers and auditors (EdDSA JWTs signed by a member key).")

    @token.command("issue")
    def issue(
        role: str = typer.Option(..., "--role", help=f"One of: {', '.join(ROLES)}."),
        org: str = typer.Option(..., "--org", help="The bearer's organisation."),
        ttl: int = typer.Option(3600, "--ttl", help=f"Seconds valid (at most {MAX_TTL_S})."),
        as_json: bool = typer.Option(False, "--json", help="Token and claims as JSON."),
    ) -> None:
        """Issue a token signed by the acting member's key (--as); works offline.
        Give it to the bearer, who passes it as --token or STEKKER_TOKEN."""
        try:
            identity = common.acting_identity()
            now = dt.datetime.now(dt.UTC)
            text = issue_token(identity, role, org, ttl, now)
        except (MeshError, ValueError) as exc:
            common.fail(str(exc))
        if as_json:
            common.print_json({"token": text, "role": role, "org": org,
                               "member": identity.member, "key_id": identity.key_id,
                               "exp": (now + dt.timedelta(seconds=ttl)).isoformat()})
        else:
            typer.echo(text)

    @token.command("verify")
    def verify(
        text: str = typer.Argument(..., metavar="TOKEN", help="The token to check."),
        as_json: bool = typer.Option(False, "--json", help="The result as JSON."),
    ) -> None:
        """Check a token against the roster in force: signature, issuer still active,
        not expired. Exit 0 only when valid."""
        claims = common.run(lambda: _verify(text))
        if isinstance(claims, Rejected):
            if as_json:
                common.print_json({"valid": False, "reason": claims.reason,
                                   "detail": claims.detail})
                raise typer.Exit(1)
            common.fail(f"token refused: {claims}")
        if as_json:
            common.print_json(_claims_json(claims))
        else:
            typer.echo(f"valid: {claims.role} of {claims.org}, issued by {claims.member} "
                       f"(key {claims.key_id}), expires {claims.exp.isoformat()}")
