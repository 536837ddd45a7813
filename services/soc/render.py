"""One readable line per CloudEvent for `stekker soc tail`. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from services.soc.cloudevents import EXT_SEVERITY, fed_type, publisher

MAX_SUMMARY = 100
# rich styles per severity, for a terminal.
STYLES: dict[str, str] = {
    "info": "dim",
    "low": "cyan",
    "medium": "yellow",
    "high": "bold red",
    "critical": "bold white on red",
}

Data = dict[str, Any]
# The SDK writes microseconds; Fed-Time has milliseconds, so the rest is noise on screen.
_MICROS = re.compile(r"(\.\d{3})\d{3}(Z|[+-]\d{2}:\d{2})$")


def _site(d: Data) -> str:
    """A site-level failover event names its site first (`member.down.v1` with `site`)."""
    return f"site {d['site']}: " if d.get("site") else ""


def _violation(d: Data) -> str:
    detail = f" ({d['detail']})" if d.get("detail") else ""
    return f"{d.get('reason')}{detail} claimed={d.get('claimed_member')} msg={d.get('msg_id')}"


def _placed(d: Data) -> str:
    where = ", ".join(f"{a.get('member')}/{a.get('site')}" for a in d.get("assignments", []))
    return f"gen {d.get('generation')} → {where or 'nowhere'}"


def _first(parts: list[str], total: int) -> str:
    """The first few of many, then how many more (the line is cut at MAX_SUMMARY)."""
    more = f" +{total - len(parts)}" if total > len(parts) else ""
    return ", ".join(parts) + more


def _placements(d: Data) -> str:
    items = d.get("placements", [])
    where = [f"{(i.get('spec') or {}).get('id')}→" + ",".join(
        f"{a.get('member')}/{a.get('site')}" for a in i.get("assignments", []))
        for i in items[:3]]
    return f"{len(items)} placement(s): {_first(where, len(items))}"


def _bindings(d: Data) -> str:
    items = d.get("bindings", [])
    where = [f"{i.get('workload')}@{i.get('site')}" for i in items[:3]]
    return f"{len(items)} replica(s) driver={d.get('driver')}: {_first(where, len(items))}"


def _takeover(d: Data) -> str:
    parts = [f"saga {d.get('saga')}"]
    for key in ("reason", "step", "status", "workload", "passed"):
        if d.get(key) is not None:
            parts.append(f"{key}={d[key]}")
    if d.get("drill"):
        parts.append("drill")
    return " ".join(parts)


SUMMARIES: dict[str, Callable[[Data], str]] = {
    "security.violation.v1": _violation,
    "workload.submitted.v1": lambda d: (
        f"{d.get('spec', {}).get('id')} tenant={d.get('spec', {}).get('tenant')} "
        f"criticality={d.get('spec', {}).get('criticality')}"
    ),
    "workload.placed.v1": _placed,
    "workload.placements.v1": _placements,
    "workload.dispatched.v1": _placements,
    "workload.bindings.v1": _bindings,
    "workload.bound.v1": lambda d: (
        f"site={d.get('site')} gen {d.get('generation')} driver={d.get('driver')}"
        + (f" ({d['detail']})" if d.get("detail") else "")
    ),
    "workload.failed.v1": lambda d: str(d.get("reason")),
    "workload.released.v1": lambda d: f"member={d.get('member')} cause={d.get('cause') or '-'}",
    "member.suspected.v1": lambda d: _site(d) + (
        f"silent {d.get('silence_s')}s" if d.get("suspected", True) else "suspicion withdrawn"
    ),
    "member.down.v1": lambda d: _site(d) + (
        f"epoch {d.get('epoch')} quorum {d.get('quorum')} "
        f"observers={','.join(e.get('observer', '?') for e in d.get('evidence', []))}"
    ),
    "member.recovered.v1": lambda d: _site(d) + f"epoch {d.get('epoch')}",
    "member.sites.v1": lambda d: f"dark: {', '.join(d.get('dark') or []) or 'none'}",
    "registry.announced.v1": lambda d: (
        f"{d.get('profile', {}).get('name')}, "
        f"{len(d.get('profile', {}).get('sites', []))} site(s)"
    ),
    "registry.capacity.v1": lambda d: f"{len(d.get('sites', []))} site(s)",
    "iam.roster.v1": lambda d: (
        f"version {d.get('roster', {}).get('body', {}).get('version')}, "
        f"{len(d.get('roster', {}).get('body', {}).get('members', []))} member(s)"
    ),
}


def _generic(d: Data) -> str:
    scalars = [f"{k}={v}" for k, v in d.items() if isinstance(v, str | int | float | bool)]
    return " ".join(scalars[:4])


def data_summary(ce: dict[str, Any]) -> str:
    """A short text of what the event's data says, by federation type."""
    data = ce.get("data")
    if not isinstance(data, dict):
        return ""
    kind = fed_type(ce)
    summarise = SUMMARIES.get(kind)
    if summarise is None and kind.startswith("takeover."):
        summarise = _takeover
    try:
        text = (summarise or _generic)(data)
    except (AttributeError, TypeError):  # data of an unexpected shape: say what we can
        text = _generic(data)
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def line_fields(ce: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    """(time, severity, type, source member, subject, summary) of one CloudEvent."""
    return (
        _MICROS.sub(r"\1\2", str(ce.get("time", ""))),
        str(ce.get(EXT_SEVERITY, "")),
        fed_type(ce),
        publisher(ce),
        str(ce.get("subject", "")),
        data_summary(ce),
    )
