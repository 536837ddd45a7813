"""Which services a node runs, in start order, found by name.

The order matters: iam puts the roster in force before anyone verifies a message; the
registry announces the member before its agent reports capacity.
"""

from __future__ import annotations

import importlib
from typing import Any

from mesh.errors import ConfigError

# name -> "module:Class"
SERVICES: dict[str, str] = {
    "iam": "services.iam.service:IamService",
    "registry": "services.registry.service:RegistryService",
    "soc": "services.soc.service:SocService",
    "scheduler": "services.scheduler.service:SchedulerService",
    "agent": "services.agent.service:AgentService",
    "failover": "services.failover.service:FailoverService",
    "takeover": "services.takeover.service:TakeoverService",
}


def make_service(name: str) -> Any:
    try:
        target = SERVICES[name]
    except KeyError:
        raise ConfigError(
            f"unknown service {name!r}; known: {', '.join(SERVICES)}"
        ) from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()


def make_services(names: list[str] | None = None) -> list[Any]:
    """The named services (iam always first, since every other one needs the roster)."""
    chosen = names or list(SERVICES)
    unknown = [n for n in chosen if n not in SERVICES]
    if unknown:
        raise ConfigError(f"unknown service {unknown[0]!r}; known: {', '.join(SERVICES)}")
    if "iam" not in chosen:
        chosen = ["iam", *chosen]
    return [make_service(n) for n in sorted(chosen, key=list(SERVICES).index)]
