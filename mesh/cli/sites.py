"""`stekker member site-down/site-up`: a member reports its own dark sites.

Signed with the member's own key (only it may speak for its sites), published as
`member.sites.v1` with the full list of its dark sites; its agent follows the newest.
"""

from __future__ import annotations

from contracts.failover import SitesReported
from contracts.state import MemberRecord
from mesh import layout
from mesh.cli import common
from mesh.errors import ConfigError
from mesh.state import bucket


def next_dark(current: list[str], site: str, *, dark: bool) -> list[str]:
    """The member's dark sites after reporting `site` dark (or back)."""
    return sorted(set(current) | {site}) if dark else sorted(set(current) - {site})


async def report_site(member: str, site: str, *, dark: bool) -> list[str]:
    """Publish `member`'s dark sites with `site` added (or removed); returns them."""
    bus = await common.open_bus(sign=True, member=member)
    try:
        entry = await (await bucket(bus, layout.KV_MEMBERS, MemberRecord)).get(member)
        if entry is None:
            raise ConfigError(f"no member {member!r} has announced itself")
        sites = [s.id for s in entry.value.profile.sites]
        if site not in sites:
            raise ConfigError(f"{member} has no site {site!r} (sites: {', '.join(sites)})")
        found = await bus.last_event(SitesReported.subject(member))
        current = found[0].dark if found and isinstance(found[0], SitesReported) else []
        now = next_dark(current, site, dark=dark)
        await bus.publish(SitesReported(dark=now))
        return now
    finally:
        await bus.close()
