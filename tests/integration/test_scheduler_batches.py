"""A batch's breach that raises the severity re-derives exactly the clocks it changes.

The scheduler decides for a whole batch which complaints need ``sla.on_event`` (a running,
not yet breached clock whose budget variant reads the severity, or a pause out of step with
the state); only those take a path of their own. Checked on both backends: the clock that
changes gets one ``timers_rederived`` event right after the breach and its deadline moves;
a clock breached in the same batch is left alone; nothing fires twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from complaintflow import Actor, Engine, SimulatedClock, parse_rules
from complaintflow.scheduler import Scheduler

START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
CLERK = Actor("clerk.li", ["clerk"])

RULES = parse_rules(
    """
name: severity-dependent clocks
initial: received
states:
  - {id: received, label: {zh: 接获, en: Received}}
  - {id: closed, label: {zh: 结案, en: Closed}, final: true}
roles:
  - {id: clerk, label: {zh: 文员, en: Clerk}}
  - {id: manager, label: {zh: 经理, en: Manager}}
fields:
  - {id: note, type: string, label: {zh: 备注, en: Note}}
severity:
  levels: [general, major]
  default: general
timers:
  - id: first
    label: {zh: 时限一, en: First}
    start: {on: receipt}
    stop: [closed]
    duration: {minutes: 10}
    on_breach: {notify: [manager], raise_severity: major}
  - id: whole
    label: {zh: 全程, en: Whole}
    start: {on: receipt}
    stop: [closed]
    duration: {minutes: 60}
    variants:
      - when: {field: severity, eq: major}
        duration: {minutes: 30}
    on_breach: {notify: [clerk]}
transitions:
  - {trigger: close, from: [received], to: closed, roles: [manager]}
""",
    "severity-clocks.yaml",
)


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[Engine, SimulatedClock]]:
    clock = SimulatedClock(START)
    engine = Engine.open(db_url, rules=RULES, clock=clock)
    try:
        yield engine, clock
    finally:
        engine.close()


def types(engine: Engine, number: str) -> list[str]:
    return [e.type for e in engine.history(number)]


def test_a_raised_severity_rederives_the_clock_whose_budget_depends_on_it(
    world: tuple[Engine, SimulatedClock],
) -> None:
    engine, clock = world
    number = engine.submit({"note": "x"}, CLERK).number
    clock.set(START + timedelta(minutes=11))
    report = Scheduler(engine).tick()
    assert (report.fired, report.breaches) == (1, 1)
    history = engine.history(number)
    assert [e.type for e in history] == ["submitted", "timer_breached", "timers_rederived"]
    rederived = history[-1].payload
    assert rederived["reason"] == "severity raised"
    assert [t["timer"] for t in rederived["timers"]["rederived"]] == ["whole"]
    whole = next(t for t in engine.timers(number) if t.timer == "whole")
    assert whole.due_at == START + timedelta(minutes=30)
    assert engine.get(number).severity == "major"
    assert Scheduler(engine).tick().fired == 0
    clock.set(START + timedelta(minutes=31))
    assert Scheduler(engine).tick().fired == 1
    assert types(engine, number)[3:] == ["timer_breached"]
    assert engine.next_due() is None
    assert engine.verify().ok


def test_a_clock_breached_in_the_same_batch_is_not_rederived(
    world: tuple[Engine, SimulatedClock],
) -> None:
    engine, clock = world
    late = engine.submit({"note": "late"}, CLERK).number  # first due +10, whole +60
    clock.set(START + timedelta(minutes=5))
    fresh = engine.submit({"note": "fresh"}, CLERK).number  # first due +15, whole +65
    clock.set(START + timedelta(minutes=61))
    report = Scheduler(engine).tick()
    # first batch: late/first, fresh/first, late/whole; both severities raised
    assert types(engine, late) == ["submitted", "timer_breached", "timer_breached"]
    assert types(engine, fresh)[:3] == ["submitted", "timer_breached", "timers_rederived"]
    # fresh/whole shortened to 30 minutes from +5: already past, so due at once (late),
    # fired by a second batch of the same tick
    assert (report.fired, report.batches) == (4, 2)
    assert types(engine, fresh)[3:] == ["timer_breached"]
    assert engine.history(fresh)[3].payload["lateness_seconds"] == 26 * 60
    assert report.next_due is None
    assert Scheduler(engine).tick().fired == 0
    assert engine.next_due() is None
    assert engine.verify().ok
