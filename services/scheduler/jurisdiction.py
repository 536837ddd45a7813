"""Which countries a workload's `jurisdictions` allow: ISO codes plus the words EU and EEA."""

from __future__ import annotations

from collections.abc import Iterable

# The 27 EU member states by ISO 3166-1 alpha-2 code (Greece is GR, not the EU's "EL").
EU: frozenset[str] = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
)
# The European Economic Area: the EU plus Iceland, Liechtenstein and Norway.
EEA: frozenset[str] = EU | {"IS", "LI", "NO"}

_GROUPS = {"EU": EU, "EEA": EEA}


def allowed_countries(jurisdictions: Iterable[str]) -> frozenset[str]:
    countries: set[str] = set()
    for item in jurisdictions:
        countries |= _GROUPS.get(item, {item})
    return frozenset(countries)
