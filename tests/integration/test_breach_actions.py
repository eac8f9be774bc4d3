"""A breach action that fires a transition (``on_breach: {fire: ...}``), driven only through
the scheduler's public API (``Scheduler(engine).tick()``) in simulated time, on both
backends: the complaint moves, as the scheduler's system actor, the breach is recorded
once; a transition the rules refuse at that moment is recorded as ``timer_action_refused``
and nothing else changes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from complaintflow import Actor, Engine, HistoryEvent, Scheduler, SimulatedClock, parse_rules
from tests.integration.test_timers import local

ESCALATING = """\
name: 超时升级测试
initial: received
states:
  - {id: received, label: {zh: 接获, en: Received}}
  - {id: waiting, label: {zh: 等待客户补充资料, en: Waiting for the customer}}
  - {id: escalated, label: {zh: 已升级, en: Escalated}}
  - {id: closed, label: {zh: 结案, en: Closed}, final: true}
roles:
  - {id: clerk, label: {zh: 文员, en: Clerk}}
  - {id: manager, label: {zh: 经理, en: Manager}}
fields:
  - {id: note, type: string, label: {zh: 备注, en: Note}}
severity:
  levels: [general, major]
  default: general
transitions:
  - {trigger: wait, from: [received], to: waiting, roles: [clerk]}
  - {trigger: escalate, from: [received], to: escalated, roles: [manager]}
  - {trigger: close, from: [received, waiting, escalated], to: closed, roles: [clerk]}
timers:
  - id: answer
    label: {zh: 答复时限, en: Answer}
    start: {on: receipt}
    stop: [closed, escalated]
    duration: {hours: 2}
    on_breach: {fire: escalate, notify: [manager]}
"""
CLERK = Actor("wu.clerk", ["clerk"])


@pytest.fixture
def escalating(db_url: str, clock: SimulatedClock) -> Iterator[Engine]:
    engine = Engine.open(db_url, rules=parse_rules(ESCALATING, "escalating.yaml"), clock=clock)
    try:
        yield engine
    finally:
        engine.close()


def of_type(engine: Engine, number: str, *types: str) -> list[HistoryEvent]:
    return [e for e in engine.history(number) if e.type in types]


def test_a_breach_fires_the_transition_as_the_scheduler(
    escalating: Engine, clock: SimulatedClock
) -> None:
    engine = escalating
    number = engine.submit({"note": "x"}, CLERK).number  # Monday 09:00: due 11:00
    scheduler = Scheduler(engine)
    clock.set(local(3, 2, 10, 59, 59))
    scheduler.tick()
    assert engine.get(number).state == "received"
    assert of_type(engine, number, "timer_breached") == []
    clock.set(local(3, 2, 11))
    scheduler.tick()
    assert engine.get(number).state == "escalated"
    history = engine.history(number)
    breach, moved = history[-2:]
    assert breach.type == "timer_breached"
    assert breach.payload["actions"]["fire"] == "escalate"
    assert (moved.type, moved.trigger, moved.from_state, moved.to_state) == (
        "transition",
        "escalate",
        "received",
        "escalated",
    )
    assert moved.occurred_at == breach.occurred_at == local(3, 2, 11)
    # the scheduler's own system actor, given the roles of the transition it fires
    assert moved.actor_id == breach.actor_id
    assert moved.actor_id.startswith("system:")
    assert moved.actor_roles == ("manager",)
    [answer] = engine.timers(number)
    assert (answer.status, answer.breached_at) == ("stopped", local(3, 2, 11))
    # later ticks fire nothing more: one breach, one transition
    for hours in (1, 24):
        clock.set(local(3, 2, 11) + timedelta(hours=hours))
        scheduler.tick()
    assert len(of_type(engine, number, "timer_breached")) == 1
    assert len(of_type(engine, number, "transition")) == 1
    assert engine.get(number).version == len(engine.history(number)) == 3
    deep = engine.verify(deep=True)  # the system's transition passes the guards again
    assert deep.ok, deep.findings


def test_a_refused_breach_transition_is_recorded_and_changes_nothing_else(
    escalating: Engine, clock: SimulatedClock
) -> None:
    engine = escalating
    number = engine.submit({"note": "x"}, CLERK).number  # Monday 09:00: due 11:00
    clock.set(local(3, 2, 10))
    engine.fire(number, "wait", CLERK)  # escalate is not allowed from waiting
    scheduler = Scheduler(engine)
    clock.set(local(3, 2, 11, 30))
    scheduler.tick()
    complaint = engine.get(number)
    assert complaint.state == "waiting"
    breach, refused = engine.history(number)[-2:]
    assert breach.type == "timer_breached"
    assert breach.payload["actions"]["fire"] == "escalate"
    assert breach.payload["lateness_seconds"] == 30 * 60
    assert refused.type == "timer_action_refused"
    assert refused.actor_id == breach.actor_id
    assert refused.payload["timer"] == "answer"
    assert refused.payload["trigger"] == "escalate"
    assert refused.payload["check"] == "source_state"
    assert (refused.from_state, refused.to_state) == ("waiting", "waiting")
    assert of_type(engine, number, "transition") == [engine.history(number)[1]]
    [answer] = engine.timers(number)
    assert (answer.status, answer.breached_at) == ("running", local(3, 2, 11, 30))
    clock.set(local(3, 3, 9))
    scheduler.tick()
    assert len(of_type(engine, number, "timer_breached", "timer_action_refused")) == 2
    assert engine.get(number).version == complaint.version
    deep = engine.verify(deep=True)
    assert deep.ok, deep.findings
