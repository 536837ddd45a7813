"""How much a SOC should care about a federation event: one pure table.

Levels follow the usual SOC scale, lowest first. The table is by versioned type name;
the few types whose weight depends on their content (a takeover drill or a real one, a
suspicion raised or withdrawn) take that fact as an argument, so the function stays pure.
"""

from __future__ import annotations

from typing import Literal, get_args

Severity = Literal["info", "low", "medium", "high", "critical"]
LEVELS: tuple[str, ...] = get_args(Severity)

# Fixed weights by type. Everything not listed is routine: info.
BY_TYPE: dict[str, Severity] = {
    "security.violation.v1": "high",
    "member.down.v1": "high",
    "member.suspected.v1": "medium",
    "workload.failed.v1": "medium",
    "member.recovered.v1": "low",
}
# A real takeover (calamity, acquisition) moves workloads and data between members; a
# drill is practice and leaves the source untouched.
TAKEOVER_REAL: Severity = "high"
TAKEOVER_DRILL: Severity = "low"


def severity_of(type_name: str, *, drill: bool | None = None, withdrawn: bool = False) -> Severity:
    """The severity of one event.

    `drill` matters for `takeover.*` only; None means "not known" and counts as a real
    takeover: a SOC would rather see a drill step as high than miss a real takeover.
    `withdrawn` is a `member.suspected` whose observer hears the member again.
    """
    if type_name.startswith("takeover."):
        return TAKEOVER_DRILL if drill else TAKEOVER_REAL
    if type_name == "member.suspected.v1" and withdrawn:
        return "low"
    return BY_TYPE.get(type_name, "info")


def rank(level: str) -> int:
    """Position on the scale (info = 0); raises ValueError for an unknown level."""
    try:
        return LEVELS.index(level)
    except ValueError:
        raise ValueError(f"unknown severity {level!r}; one of: {', '.join(LEVELS)}") from None


def at_least(minimum: str) -> tuple[str, ...]:
    """The levels at or above `minimum`, e.g. for `soc tail --severity medium`."""
    return LEVELS[rank(minimum):]
