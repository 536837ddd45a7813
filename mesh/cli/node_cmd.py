"""`stekker node` and `stekker service`: run a member's services."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer

from mesh.bus import Bus
from mesh.cli import common
from mesh.errors import ConfigError, MeshError
from mesh.keys import load_or_create_identity
from mesh.runtime import Node, NodeContext, NodeSettings, configure, run_until_signalled
from mesh.services import SERVICES, make_services
from mesh.specfile import load_member_profile
from mesh.trust import TrustStore

DEMO_MEMBERS = Path("deploy/demo/members")


def _profile_path(member: str, config: Path | None) -> Path:
    if config is not None:
        return config
    local = common.settings().data_dir / "members" / f"{member}.toml"
    return local if local.exists() else DEMO_MEMBERS / f"{member}.toml"


async def _run(member: str, config: Path | None, services: list[str] | None,
               settings: NodeSettings) -> None:
    profile = load_member_profile(_profile_path(member, config))
    if profile.id != member:
        raise ConfigError(f"{config}: profile id {profile.id!r} is not {member!r}")
    chosen = make_services(services)  # an unknown name fails here, before connecting
    data_dir = common.settings().data_dir
    identity = load_or_create_identity(data_dir / "keys", member)
    trust = TrustStore()
    # How long to keep trying to reach NATS at start (a cluster may still be electing).
    connect_timeout = float(os.environ.get("STEKKER_CONNECT_TIMEOUT", "30"))
    bus = await Bus.connect(common.servers(), identity=identity, trust=trust,
                            service="node", name=f"stekker-node-{member}",
                            connect_timeout_s=connect_timeout,
                            **common.nats_credentials(member))
    await bus.provision(settings.replicas)
    ctx = NodeContext(bus=bus, identity=identity, profile=profile, data_dir=data_dir,
                      settings=settings, trust=trust)
    await run_until_signalled(Node(ctx, chosen))


def register(app: typer.Typer) -> None:
    @app.command("node")
    def node(
        member: str = typer.Option(..., "--member", help="Member id this node runs for."),
        config: Path | None = typer.Option(
            None, "--config", help="Member profile (TOML); default: data folder or demo."
        ),
        driver: str = common.driver_option(),
        heartbeat: float = common.heartbeat_option(),
        suspicion: float = common.suspicion_option(),
        recovery_beats: int = typer.Option(
            3, "--recovery-beats", min=1,
            help="Beats in a row before a member declared down counts as recovered."),
        recovery_steady: float = typer.Option(
            2.0, "--recovery-steady", min=0.0,
            help="... and spread over at least this many seconds."),
        flap_guard: float = typer.Option(
            60.0, "--flap-guard", min=0.0,
            help="Seconds after a recovery during which a member is suspected only after "
            "3x the suspicion timeout (0: off)."),
        replace_rate: float = common.replace_rate_option(),
        replicas: int = typer.Option(1, "--replicas", help="Replicas for new streams (≤3)."),
        services: str | None = typer.Option(
            None, "--services", help=f"Comma-separated subset of: {', '.join(SERVICES)}."
        ),
        require_tokens: bool = typer.Option(
            False, "--require-tokens",
            help="Refuse submissions and takeover requests without a valid Fed-Token "
            "(tenant/operator to submit, operator for takeovers) of the publishing member.",
        ),
    ) -> None:
        """Run all (or some) of a member's services in one process until SIGTERM/SIGINT."""
        configure(f"node-{member}")
        settings = NodeSettings(heartbeat_interval_s=heartbeat, suspicion_timeout_s=suspicion,
                                recovery_beats=recovery_beats,
                                recovery_steady_s=recovery_steady, flap_guard_s=flap_guard,
                                replace_rate_per_s=replace_rate,
                                driver=driver, replicas=replicas,
                                require_tokens=require_tokens)
        names = [s.strip() for s in services.split(",")] if services else None
        try:
            asyncio.run(_run(member, config, names, settings))
        except MeshError as exc:
            common.fail(str(exc))
        except KeyboardInterrupt:
            pass

    @app.command("service")
    def service(
        name: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
        member: str = typer.Option(..., "--member", help="Member id this service runs for."),
        config: Path | None = typer.Option(None, "--config", help="Member profile (TOML)."),
        driver: str = common.driver_option(),
        require_tokens: bool = typer.Option(
            False, "--require-tokens",
            help="Refuse submissions and takeover requests without a valid Fed-Token.",
        ),
    ) -> None:
        """Run one service of a member as its own process (iam comes along for trust)."""
        configure(f"{name}-{member}")
        settings = NodeSettings(driver=driver, require_tokens=require_tokens)
        try:
            asyncio.run(_run(member, config, [name], settings))
        except MeshError as exc:
            common.fail(str(exc))
        except KeyboardInterrupt:
            pass
