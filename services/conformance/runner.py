"""Runs the conformance checks in order, each timed, each failing on its own."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from mesh.bus import Bus
from mesh.errors import ConfigError, MeshError, TerminalError
from mesh.observability import logger
from services.conformance.checks import (
    Probe,
    check_announcement,
    check_binds_placement,
    check_heartbeat,
    check_ignores_forged,
)
from services.conformance.result import CheckFailed, CheckResult

log = logger("services.conformance")
Check = Callable[[Probe], Awaitable[str]]

CHECKS: dict[str, Check] = {
    "announcement": check_announcement,
    "heartbeat": check_heartbeat,
    "binds_placement": check_binds_placement,
    "ignores_forged": check_ignores_forged,
}


def check_preconditions(bus: Bus, member: str) -> None:
    """Refuse what would make the results meaningless: testing yourself, or a member or
    acting key the roster does not know."""
    if bus.identity is None:
        raise TerminalError("conformance needs a signing member key (--as)")
    acting = bus.identity.member
    if acting == member:
        raise ConfigError(f"refusing to test {member} with its own key; "
                          "pass --as another member")
    if not bus.trust.is_member(member):
        raise ConfigError(f"{member} is not a member of the roster in force")
    if bus.trust.key(acting, bus.identity.key_id) is None:
        raise ConfigError(f"the key of {acting} ({bus.identity.key_id}) is not an active key "
                          "in the roster in force")


async def run_check(name: str, check: Check, probe: Probe) -> CheckResult:
    start = time.monotonic()
    try:
        detail = await check(probe)
        passed = True
    except CheckFailed as exc:
        detail, passed = str(exc), False
    except MeshError as exc:
        detail, passed = f"error: {exc}", False
    except Exception as exc:  # a broken check must not hide the others' results
        log.exception("check crashed", check=name)
        detail, passed = f"error: {type(exc).__name__}: {exc}", False
    return CheckResult(check=name, passed=passed, detail=detail,
                       duration_s=round(time.monotonic() - start, 3))


async def run_suite(
    bus: Bus, member: str, *, timeout_s: float = 10.0, only: Sequence[str] | None = None
) -> list[CheckResult]:
    """Every check (or those named in `only`) against `member`, signing as the bus's
    member; raises ConfigError when the preconditions fail."""
    check_preconditions(bus, member)
    probe = Probe(bus=bus, member=member, timeout_s=timeout_s)
    names = list(only) if only else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ConfigError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    return [await run_check(name, CHECKS[name], probe) for name in names]
