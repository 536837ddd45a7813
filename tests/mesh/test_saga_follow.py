"""Following a saga in the CLI: a bar per workload on a terminal, plain lines otherwise."""

from __future__ import annotations

import datetime as dt

import pytest

from contracts.takeover import PlanItem, TakeoverProposed, TakeoverStep
from mesh.cli.saga_follow import View
from mesh.envelope import Envelope

PLAN = [PlanItem(workload="w1", source="dommel", successor="amstel", site="ams1")]


def env(member: str) -> Envelope:
    return Envelope(subject="s", msg_id="m", type_name="t", member=member, key_id="k",
                    time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), headers={})


def events() -> list[tuple[object, Envelope]]:
    proposed = TakeoverProposed(saga="s1", member="dommel", reason="drill", drill=True,
                                plan=PLAN, plan_hash="ab" * 32, quorum=2)
    steps = [TakeoverStep(saga="s1", member="dommel", step=step, status="ok", workload="w1",
                          actor="amstel", attempt=2 if step == "shadow_start" else 1)
             for step in ("export", "shadow_start")]
    return [(proposed, env("amstel")), *((s, env("amstel")) for s in steps)]


def test_plain_lines_when_not_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with View(echo=True, tty=False) as view:
        for event, envelope in events():
            view.event(event, envelope)  # type: ignore[arg-type]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("  proposed by amstel: 1 workload(s)")
    assert out[2] == "  shadow_start ok w1 on amstel (attempt 2)"


def test_a_bar_per_workload_on_a_terminal() -> None:
    with View(echo=True, tty=True) as view:
        for event, envelope in events():
            view.event(event, envelope)  # type: ignore[arg-type]
        assert view.progress is not None
        (task,) = view.progress.tasks
        assert task.description == "w1" and task.completed == 2 and task.total == 2
        assert task.fields["stage"] == "shadow_start ok"
