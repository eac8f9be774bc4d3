"""The demo as a library function: a seeded batch of complaints through the whole default
procedure in simulated time with the scheduler firing the clocks, every kind of refusal
really refused by the engine, warnings and breaches, extensions with consent, and a clean
deep verification."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from complaintflow import Engine, InvalidInput, SimulatedClock, load_rules
from complaintflow.demo import (
    DEMO_START,
    DOWNTIME,
    MAX_EXTENSIONS,
    REFUSAL_KINDS,
    TIMING_STEPS,
    DemoSummary,
    after_office_hours,
    is_demo_database,
    office_calendar,
    office_moment,
    open_demo_engine,
    run_demo,
)

COUNT = 40


def demo(path: Path, seed: int = 7) -> tuple[DemoSummary, Engine]:
    engine, clock = open_demo_engine(path)
    return run_demo(engine, COUNT, seed, clock=clock), engine


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoSummary, Path]:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    summary, engine = demo(path)
    engine.close()
    return summary, path


def test_every_kind_of_refusal_is_really_refused(first: tuple[DemoSummary, Path]) -> None:
    summary, _ = first
    assert set(summary.refusals_by_kind) == set(REFUSAL_KINDS)
    assert all(n > 0 for n in summary.refusals_by_kind.values())
    assert set(summary.refusals_by_check) == {"role", "separation_of_duties", "fields", "approval"}
    assert summary.refusals == sum(summary.refusals_by_kind.values())
    by_check: dict[str, int] = {}
    for kind, n in summary.refusals_by_kind.items():
        by_check[REFUSAL_KINDS[kind]] = by_check.get(REFUSAL_KINDS[kind], 0) + n
    assert by_check == dict(summary.refusals_by_check)


def test_complaints_are_closed_reopened_disputed_and_some_left_in_progress(
    first: tuple[DemoSummary, Path],
) -> None:
    summary, _ = first
    assert summary.count == COUNT == sum(summary.states.values())
    assert summary.closed > 0 and summary.reopens > 0 and summary.disputes > 0
    assert summary.approvals > 0 and summary.signed_replies > 0
    assert summary.states["closed"] == summary.closed + summary.rejected
    assert 0 < summary.in_progress < COUNT
    assert len([s for s in summary.states if s != "closed"]) >= 2
    assert set(summary.severities) == {"general", "major"}
    assert summary.transitions > COUNT * 5


def test_the_history_verifies_deeply_and_matches_the_summary(
    first: tuple[DemoSummary, Path],
) -> None:
    summary, path = first
    assert summary.verified_ok and summary.verified_deep and summary.findings == 0
    assert summary.verified_complaints == COUNT
    # one event per submission, per transition fired and per clock event (warnings,
    # breaches, re-derivations, consents, extensions); refused attempts store nothing
    assert summary.verified_events == COUNT + summary.transitions + sum(
        summary.clock_events.values()
    )
    with Engine.open(f"sqlite:///{path}", clock=SimulatedClock(summary.ended_at)) as engine:
        assert engine.verify(deep=True).ok
        for state, n in summary.states.items():
            assert engine.find(state=state, limit=1).total == n
        for level, n in summary.severities.items():
            assert engine.find(severity=level, limit=1).total == n


def test_the_scheduler_fires_warnings_and_breaches(first: tuple[DemoSummary, Path]) -> None:
    summary, path = first
    assert summary.warnings > 0 and summary.breaches > 0
    assert summary.clock_events["timer_warning"] == summary.warnings
    assert summary.clock_events["timer_breached"] == summary.breaches
    breached = {name for name, n in summary.clocks.items() if n.get("breaches")}
    assert len(breached) >= 5  # people are late at many steps, not just one
    assert {"first_response", "registration", "whole_complaint"} <= breached
    # every warning and breach of the default rules notifies somebody; plus the reviews
    assert summary.notifications == summary.warnings + summary.breaches + summary.reviews
    assert summary.reviews >= 1  # the monthly review of unresolved complaints on the 4th
    # urgent complaints received after hours breach at once and go to the GM
    urgent = summary.clocks.get("urgent_after_hours", {}).get("breaches", 0)
    assert urgent == summary.urgent_after_hours == summary.escalated
    # the scheduler was down one afternoon and caught up: some deadlines fired late
    assert summary.max_lateness > timedelta(minutes=5)
    assert summary.ticks > 0
    with Engine.open(f"sqlite:///{path}", clock=SimulatedClock(summary.ended_at)) as engine:
        assert engine.outbox.pending() == summary.notifications
        down_from, down_until = DOWNTIME
        late = [
            e
            for c in engine.find(limit=COUNT).items
            for e in engine.history(c.number)
            if e.type in ("timer_warning", "timer_breached")
        ]
        assert not [e for e in late if down_from <= e.occurred_at < down_until]
        assert [e for e in late if e.occurred_at == down_until]  # the catch-up


def test_people_use_the_timing_steps_and_extend_with_consent(
    first: tuple[DemoSummary, Path],
) -> None:
    summary, path = first
    assert set(summary.timing_steps) <= set(TIMING_STEPS)
    for step in ("respond", "hand_over", "contact_customer", "report_progress"):
        assert summary.timing_steps.get(step, 0) > 0, step
    assert 1 <= summary.extensions <= MAX_EXTENSIONS
    assert summary.clock_events["customer_consent"] == summary.extensions
    assert summary.clock_events["timer_extended"] == summary.extensions
    with Engine.open(f"sqlite:///{path}", clock=SimulatedClock(summary.ended_at)) as engine:
        extended = [
            (c.number, e)
            for c in engine.find(limit=COUNT).items
            for e in engine.history(c.number)
            if e.type == "timer_extended"
        ]
        assert len(extended) == summary.extensions
        for number, event in extended:
            assert event.payload["timer"] == "whole_complaint"
            (clock,) = [t for t in engine.timers(number) if t.timer == "whole_complaint"]
            assert clock.extensions and clock.extensions[0]["consent_seq"] == event.seq - 1


def test_revisits_wait_five_days_after_the_feedback(first: tuple[DemoSummary, Path]) -> None:
    summary, path = first
    revisits = 0
    with Engine.open(f"sqlite:///{path}", clock=SimulatedClock(summary.ended_at)) as engine:
        for complaint in engine.find(limit=COUNT).items:
            fed_back = None
            for event in engine.history(complaint.number):
                if event.trigger == "feed_back":
                    fed_back = event.occurred_at
                elif event.trigger == "revisit":
                    assert fed_back is not None
                    assert event.occurred_at - fed_back >= timedelta(days=5)
                    revisits += 1
    assert revisits > 0


def test_simulated_time_starts_monday_morning_in_shanghai(first: tuple[DemoSummary, Path]) -> None:
    summary, _ = first
    assert summary.started_at == DEMO_START
    assert summary.span > timedelta(days=14)
    doc = summary.to_json()
    assert doc["simulated"]["start"] == "2026-03-02T09:00:00+08:00"
    assert doc["verification"] == {
        "ok": True,
        "deep": True,
        "events": summary.verified_events,
        "complaints": COUNT,
        "findings": 0,
    }


def test_the_same_seed_gives_the_same_summary(
    first: tuple[DemoSummary, Path], tmp_path: Path
) -> None:
    summary, _ = first
    again, engine = demo(tmp_path / "again.db")
    engine.close()
    assert again == summary
    assert again.to_json() == summary.to_json()


def test_the_demo_database_is_recognised(first: tuple[DemoSummary, Path], tmp_path: Path) -> None:
    _, path = first
    assert is_demo_database(path)
    assert is_demo_database(tmp_path / "absent.db")
    real = tmp_path / "real.db"
    Engine.open(f"sqlite:///{real}").close()
    assert not is_demo_database(real)
    (tmp_path / "notes.txt").write_text("not a database", "utf-8")
    assert not is_demo_database(tmp_path / "notes.txt")


def test_run_demo_needs_a_simulated_clock(tmp_path: Path) -> None:
    with (
        Engine.open(f"sqlite:///{tmp_path / 'x.db'}") as engine,
        pytest.raises(InvalidInput, match="SimulatedClock"),
    ):
        run_demo(engine, 1)
    late = SimulatedClock(DEMO_START + timedelta(days=1))
    with (
        Engine.open(f"sqlite:///{tmp_path / 'y.db'}", clock=late) as engine,
        pytest.raises(InvalidInput, match="past the demo start"),
    ):
        run_demo(engine, 1, clock=late)


@pytest.mark.parametrize(
    ("start", "hours", "end"),
    [
        ("2026-03-02T09:00", 1, "2026-03-02T10:00"),  # Monday, inside office hours
        ("2026-03-02T11:30", 1, "2026-03-02T13:30"),  # over the lunch break
        ("2026-03-02T17:00", 1, "2026-03-03T09:00"),  # carries over to the next morning
        ("2026-03-06T17:00", 1, "2026-03-09T09:00"),  # Friday evening to Monday
        ("2026-03-07T11:00", 0.5, "2026-03-09T09:00"),  # Saturday: from Monday's opening
        ("2026-04-03T17:00", 1, "2026-04-07T09:00"),  # Qingming: Monday 6 April is off
        ("2026-03-02T06:00", 8, "2026-03-02T17:30"),  # a whole working day
    ],
)
def test_office_time_follows_the_rules_calendar(start: str, hours: float, end: str) -> None:
    calendar = office_calendar(load_rules())
    zone = DEMO_START.tzinfo
    begin = datetime.fromisoformat(start).replace(tzinfo=zone)
    expected = datetime.fromisoformat(end).replace(tzinfo=zone)
    assert after_office_hours(calendar, begin, hours) == expected
    assert office_moment(calendar, begin) == max(begin, office_moment(calendar, begin))
