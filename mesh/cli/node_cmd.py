"""`stekker node` and `stekker service`: run a member's services.

The failover knobs come from the command line, else from `[node.failover]` of the
member's config file (`--config`), else from `NodeSettings`' defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import typer

from mesh import loop
from mesh.bus import Bus
from mesh.cli import common
from mesh.errors import ConfigError, MeshError
from mesh.keys import load_or_create_identity
from mesh.runtime import Node, NodeContext, NodeSettings, configure, run_until_signalled
from mesh.services import SERVICES, make_services
from mesh.specfile import FailoverKnobs, load_failover_knobs, load_member_profile
from mesh.trust import TrustStore

DEMO_MEMBERS = Path("deploy/demo/members")

# `[node.failover]` knob (and flag, with dashes) → `NodeSettings` field.
KNOBS = {
    "heartbeat": "heartbeat_interval_s",
    "suspicion": "suspicion_timeout_s",
    "recovery_beats": "recovery_beats",
    "recovery_steady": "recovery_steady_s",
    "flap_guard": "flap_guard_s",
    "replace_rate": "replace_rate_per_s",
}


def failover_settings(
    knobs: FailoverKnobs, flags: Mapping[str, float | int | None]
) -> dict[str, float | int]:
    """`NodeSettings` fields for the failover knobs: a flag given (not None) wins over
    the config file, the file over the default (a field left out)."""
    given = {**knobs.given(), **{k: v for k, v in flags.items() if v is not None}}
    return {KNOBS[k]: v for k, v in given.items()}


def _knobs(member: str, config: Path | None) -> FailoverKnobs:
    try:
        return load_failover_knobs(_profile_path(member, config))
    except MeshError as exc:
        common.fail(str(exc))


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
        heartbeat: float | None = common.heartbeat_option(),
        suspicion: float | None = common.suspicion_option(),
        recovery_beats: int | None = common.recovery_beats_option(),
        recovery_steady: float | None = common.recovery_steady_option(),
        flap_guard: float | None = common.flap_guard_option(),
        replace_rate: float | None = common.replace_rate_option(),
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
        """Run all (or some) of a member's services in one process until SIGTERM/SIGINT.

        The failover knobs may also be set in the member's config file, \\[node.failover]
        (heartbeat, suspicion, recovery_beats, recovery_steady, flap_guard,
        replace_rate); a flag given here overrides the file."""
        configure(f"node-{member}")
        failover = failover_settings(_knobs(member, config), {
            "heartbeat": heartbeat, "suspicion": suspicion, "recovery_beats": recovery_beats,
            "recovery_steady": recovery_steady, "flap_guard": flap_guard,
            "replace_rate": replace_rate})
        settings = NodeSettings(driver=driver, replicas=replicas,
                                require_tokens=require_tokens, **failover)  # type: ignore[arg-type]
        names = [s.strip() for s in services.split(",")] if services else None
        try:
            loop.run(_run(member, config, names, settings))
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
        """Run one service of a member as its own process (iam comes along for trust).
        The failover knobs come from [node.failover] of the member's config file."""
        configure(f"{name}-{member}")
        failover = failover_settings(_knobs(member, config), {})
        settings = NodeSettings(driver=driver, require_tokens=require_tokens,
                                **failover)  # type: ignore[arg-type]
        try:
            loop.run(_run(member, config, [name], settings))
        except MeshError as exc:
            common.fail(str(exc))
        except KeyboardInterrupt:
            pass
