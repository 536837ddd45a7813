"""The severity table and the scale."""

from __future__ import annotations

import pytest

from contracts.catalog import MESSAGE_TYPES
from services.soc.severity import LEVELS, at_least, rank, severity_of


@pytest.mark.parametrize(
    ("type_name", "kwargs", "expected"),
    [
        ("security.violation.v1", {}, "high"),
        ("member.down.v1", {}, "high"),
        ("member.suspected.v1", {}, "medium"),
        ("member.suspected.v1", {"withdrawn": True}, "low"),
        ("workload.failed.v1", {}, "medium"),
        ("member.recovered.v1", {}, "low"),
        ("takeover.requested.v1", {"drill": False}, "high"),
        ("takeover.completed.v1", {"drill": True}, "low"),
        ("takeover.step.v1", {"drill": None}, "high"),  # unknown counts as real
        ("workload.placed.v1", {}, "info"),
        ("registry.announced.v1", {}, "info"),
        ("iam.roster.v1", {}, "info"),
    ],
)
def test_table(type_name: str, kwargs: dict[str, object], expected: str) -> None:
    assert severity_of(type_name, **kwargs) == expected  # type: ignore[arg-type]


def test_every_message_type_has_a_level_on_the_scale() -> None:
    for name in MESSAGE_TYPES:
        assert severity_of(name) in LEVELS
        assert severity_of(name, drill=True) in LEVELS


def test_scale_and_minimum() -> None:
    assert LEVELS == ("info", "low", "medium", "high", "critical")
    assert rank("info") < rank("medium") < rank("critical")
    assert at_least("high") == ("high", "critical")
    assert at_least("info") == LEVELS
    with pytest.raises(ValueError, match="unknown severity"):
        rank("urgent")
