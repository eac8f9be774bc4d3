"""Deep verification of what breaches and warnings do: their recorded actions against the
timer's ``on_breach`` and warnings, the row's ``severity_floor`` and ``escalated_to``
against the replay, and ``--since`` reaching an idle complaint whose deadline passed unrecorded.

Forgeries are re-chained (``rechain``), so the plain chain check passes and each finding
comes from the deep part; histories the engine wrote itself verify clean.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from complaintflow import Actor, Engine, SimulatedClock, parse_rules
from complaintflow.scheduler import Scheduler
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import deadlines as D
from complaintflow.storage.tables import events as E
from complaintflow.verify import verify_parallel
from tests.integration.test_breach_actions import CLERK as ESCALATING_CLERK
from tests.integration.test_breach_actions import ESCALATING
from tests.integration.test_replay_audit import (
    complaint_id,
    delete_event,
    findings,
    forge,
    rechain,
)
from tests.integration.test_timers import local

START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
CLERK = Actor("clerk.li", ["clerk"])
MANAGER = Actor("manager.wu", ["manager"])

RULES = parse_rules(
    """
name: breach actions
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
  levels: [general, major, critical]
  default: general
timers:
  - id: first
    label: {zh: 时限一, en: First}
    start: {on: receipt}
    stop: [closed]
    duration: {minutes: 10}
    warnings: [{fraction: 0.5, notify: [clerk]}]
    on_breach: {notify: [manager], raise_severity: major, reassign: manager}
  - id: whole
    label: {zh: 全程, en: Whole}
    start: {on: receipt}
    stop: [closed]
    duration: {minutes: 60}
    on_breach: {notify: [clerk]}
transitions:
  - {trigger: close, from: [received], to: closed, roles: [manager]}
""",
    "breach-actions.yaml",
)


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[Engine, SimulatedClock]]:
    clock = SimulatedClock(START)
    engine = Engine.open(db_url, rules=RULES, clock=clock)
    try:
        yield engine, clock
    finally:
        engine.close()


def kinds(engine: Engine, number: str, **kwargs: Any) -> list[tuple[int | None, str]]:
    return [(seq, kind) for n, seq, kind in findings(engine.verify(deep=True, **kwargs))
            if n == number]


def details(engine: Engine, kind: str, **kwargs: Any) -> list[str]:
    return [f.detail for f in engine.verify(deep=True, **kwargs).findings if f.kind == kind]


def breached(engine: Engine, clock: SimulatedClock) -> tuple[str, dict[str, int]]:
    """A complaint whose two clocks breached (first escalates and raises the severity),
    and the seq of each breach by timer."""
    number = engine.submit({"note": "x"}, CLERK).number
    clock.set(START + timedelta(minutes=61))
    Scheduler(engine).tick()
    seqs = {e.payload["timer"]: e.seq for e in engine.history(number)
            if e.type == "timer_breached"}
    assert set(seqs) == {"first", "whole"}
    return number, seqs


def set_row(engine: Engine, number: str, **values: Any) -> None:
    with engine.database.begin() as conn:
        assert conn.execute(sa.update(C).where(C.c.number == number).values(**values)
                            ).rowcount == 1


# -- the breach's actions against on_breach ------------------------------------------------


def test_the_engines_breaches_verify_clean(world: tuple[Engine, SimulatedClock]) -> None:
    engine, clock = world
    number, seqs = breached(engine, clock)
    first = next(e for e in engine.history(number) if e.seq == seqs["first"])
    assert first.payload["actions"] == {"raise_severity": "major", "reassign": "manager",
                                        "notify": ["manager"]}
    complaint = engine.get(number)
    assert (complaint.severity, complaint.escalated_to) == ("major", "manager")
    report = engine.verify(deep=True)
    assert report.ok, report.findings


def _without(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda p: p["actions"].pop(name)


def _with(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda p: p["actions"].update({name: value})


@pytest.mark.parametrize(("timer", "edit", "shown"), [
    pytest.param("first", _without("reassign"),
                 "reassign recorded none, the rule gives manager", id="escalation-removed"),
    pytest.param("first", _with("reassign", "clerk"),
                 "reassign recorded clerk, the rule gives manager", id="escalation-elsewhere"),
    pytest.param("first", _without("raise_severity"),
                 "raise_severity recorded none, the rule gives major", id="raise-removed"),
    pytest.param("first", _with("raise_severity", "critical"),
                 "raise_severity recorded critical, the rule gives major", id="raise-altered"),
    pytest.param("first", _with("notify", []),
                 "notify recorded [], the rule gives [manager]", id="notify-emptied"),
    pytest.param("whole", _with("notify", ["clerk", "manager"]),
                 "notify recorded [clerk, manager], the rule gives [clerk]", id="notify-added"),
    pytest.param("whole", _with("fire", "close"),
                 "fire recorded close, the rule gives none", id="fire-added"),
    pytest.param("whole", _with("reassign", "manager"),
                 "reassign recorded manager, the rule gives none", id="escalation-added"),
    pytest.param("whole", lambda p: p.update(actions=["notify"]),
                 "actions recorded ['notify'], the rule gives notify [clerk]", id="not-a-map"),
])
def test_a_breach_with_other_actions_than_on_breach(
    world: tuple[Engine, SimulatedClock], timer: str, edit: Callable[[dict[str, Any]], None],
    shown: str,
) -> None:
    engine, clock = world
    number, seqs = breached(engine, clock)
    other = engine.submit({"note": "untouched"}, CLERK).number
    forge(engine, number, seqs[timer], edit)
    assert engine.verify().ok  # re-chained: the plain check is fooled
    found = kinds(engine, number)
    assert (seqs[timer], "wrong_breach_actions") in found
    (detail,) = details(engine, "wrong_breach_actions")
    assert detail.startswith(f"timer {timer} run 1: {shown}"), detail
    assert f"(on_breach of rule set {engine.rules.version[:12]})" in detail
    assert kinds(engine, other) == []


@pytest.mark.parametrize(("edit", "shown"), [
    pytest.param(_without("notify"), "notify recorded none, the rule gives [clerk]",
                 id="notify-removed"),
    pytest.param(_with("notify", ["manager"]),
                 "notify recorded [manager], the rule gives [clerk]", id="notify-elsewhere"),
    pytest.param(_with("reassign", "manager"),
                 "reassign recorded manager, the rule gives none", id="escalation-added"),
])
def test_a_warning_with_other_actions_than_its_rule(
    world: tuple[Engine, SimulatedClock], edit: Callable[[dict[str, Any]], None], shown: str,
) -> None:
    engine, clock = world
    number = engine.submit({"note": "x"}, CLERK).number
    clock.set(START + timedelta(minutes=6))
    Scheduler(engine).tick()
    (warning,) = [e for e in engine.history(number) if e.type == "timer_warning"]
    assert warning.payload["actions"] == {"notify": ["clerk"]}
    assert engine.verify(deep=True).ok
    forge(engine, number, warning.seq, edit)
    assert engine.verify().ok
    assert (warning.seq, "wrong_warning_actions") in kinds(engine, number)
    (detail,) = details(engine, "wrong_warning_actions")
    assert detail == (f"timer first run 1: {shown} (warning 1 of rule set "
                      f"{engine.rules.version[:12]})")


def test_a_breach_whose_severity_follows_a_forged_raise(
    world: tuple[Engine, SimulatedClock],
) -> None:
    """Raise and severity forged together are consistent with each other: only the rule
    says the raise is wrong."""
    engine, clock = world
    number, seqs = breached(engine, clock)

    def to_critical(p: dict[str, Any]) -> None:
        p["actions"]["raise_severity"] = "critical"
        p["severity"] = "critical"

    forge(engine, number, seqs["first"], to_critical)
    assert (seqs["first"], "wrong_breach_actions") in kinds(engine, number)
    assert (seqs["first"], "wrong_severity") not in kinds(engine, number)


# -- the row's severity floor and escalation -----------------------------------------------


@pytest.mark.parametrize(("values", "kind", "shown"), [
    pytest.param({"severity_floor": None}, "severity_floor_mismatch",
                 "stored severity floor None, the breaches recorded give 'major'",
                 id="floor-cleared"),
    pytest.param({"severity_floor": "critical"}, "severity_floor_mismatch",
                 "stored severity floor 'critical', the breaches recorded give 'major'",
                 id="floor-raised"),
    pytest.param({"escalated_to": None}, "escalation_mismatch",
                 "stored escalated to None, the breaches recorded give 'manager'",
                 id="escalation-cleared"),
    pytest.param({"escalated_to": "clerk"}, "escalation_mismatch",
                 "stored escalated to 'clerk', the breaches recorded give 'manager'",
                 id="escalation-moved"),
])
def test_a_hand_edited_floor_or_escalation_after_breaches(
    world: tuple[Engine, SimulatedClock], values: dict[str, Any], kind: str, shown: str,
) -> None:
    engine, clock = world
    number, _ = breached(engine, clock)
    last = engine.get(number).version
    set_row(engine, number, **values)
    assert engine.verify().ok  # not something the plain check compares
    assert kinds(engine, number) == [(last, kind)]
    assert details(engine, kind) == [shown]


def test_replay_shows_the_floor_and_escalation_the_breaches_gave(
    world: tuple[Engine, SimulatedClock],
) -> None:
    """``engine.replay`` derives the severity floor from the breaches up to its instant,
    as the scheduler raised the row's: none before the first breach, then the raise."""
    engine, clock = world
    number, seqs = breached(engine, clock)
    at = {e.seq: e.occurred_at for e in engine.history(number)}
    before = engine.replay(number, at=at[seqs["first"]] - timedelta(seconds=1))
    assert (before.severity_floor, before.escalated_to) == (None, None)
    after = engine.replay(number)
    assert (after.severity_floor, after.escalated_to) == ("major", "manager")
    with engine.database.connect() as conn:
        row = conn.execute(sa.select(C.c.severity_floor, C.c.escalated_to)
                           .where(C.c.number == number)).one()
    assert tuple(row) == ("major", "manager")
    assert after.to_json()["severity_floor"] == "major"


def test_a_floor_or_escalation_no_breach_gave(world: tuple[Engine, SimulatedClock]) -> None:
    engine, _ = world
    floored = engine.submit({"note": "x"}, CLERK).number
    escalated = engine.submit({"note": "y"}, CLERK).number
    set_row(engine, floored, severity_floor="major")
    set_row(engine, escalated, escalated_to="manager")
    assert engine.verify().ok
    assert kinds(engine, floored) == [(1, "severity_floor_mismatch")]
    assert kinds(engine, escalated) == [(1, "escalation_mismatch")]


def test_a_forged_breach_escalation_is_also_out_of_step_with_the_row(
    world: tuple[Engine, SimulatedClock],
) -> None:
    """The history is what the row is compared with: a breach edited to escalate elsewhere
    leaves the row naming the role the engine escalated to."""
    engine, clock = world
    number, seqs = breached(engine, clock)
    forge(engine, number, seqs["first"], _with("reassign", "clerk"))
    found = kinds(engine, number)
    assert (seqs["first"], "wrong_breach_actions") in found
    assert (engine.get(number).version, "escalation_mismatch") in found


# -- --since and idle complaints -----------------------------------------------------------


def test_since_checks_an_idle_complaint_whose_deadline_passed_unrecorded(
    world: tuple[Engine, SimulatedClock],
) -> None:
    engine, clock = world
    idle = engine.submit({"note": "idle"}, CLERK).number  # warning +5, first +10
    clock.set(START + timedelta(minutes=2))
    since = engine.now()
    busy = engine.submit({"note": "busy"}, CLERK).number
    clock.set(START + timedelta(minutes=30))  # no scheduler ran
    everything = kinds(engine, idle)
    assert (1, "missed_warning") in everything and (1, "missed_breach") in everything
    assert kinds(engine, idle, since=since) == everything  # nothing changed it since
    assert (1, "missed_breach") in kinds(engine, busy, since=since)
    Scheduler(engine).tick()
    assert engine.verify(deep=True, since=since).ok


def test_since_leaves_out_an_idle_complaint_with_nothing_due_since(
    world: tuple[Engine, SimulatedClock],
) -> None:
    """The deep part stays limited: a complaint closed before ``since``, with no clock
    running, is not replayed (a deep-only forgery on it is not seen)."""
    engine, clock = world
    number = engine.submit({"note": "x"}, CLERK).number
    clock.set(START + timedelta(minutes=1))
    engine.fire(number, "close", MANAGER)
    set_row(engine, number, escalated_to="manager")
    clock.set(START + timedelta(hours=3))
    since = engine.now() - timedelta(hours=1)
    assert kinds(engine, number) == [(2, "escalation_mismatch")]
    assert kinds(engine, number, since=since) == []


def test_since_reaches_a_deadline_due_a_minute_before_it(
    world: tuple[Engine, SimulatedClock],
) -> None:
    """A deadline due in the minute before ``since`` was not yet missed at that instant:
    the next run, from there, still checks it."""
    engine, clock = world
    number = engine.submit({"note": "x"}, CLERK).number  # warning due at +5
    clock.set(START + timedelta(minutes=5, seconds=30))
    assert kinds(engine, number) == []  # due half a minute ago: not missed yet
    since = engine.now()
    clock.set(START + timedelta(minutes=8))
    assert (1, "missed_warning") in kinds(engine, number, since=since)


def test_since_checks_a_complaint_whose_breach_event_was_deleted(
    world: tuple[Engine, SimulatedClock],
) -> None:
    """The deadline row says it fired: the missing event is found even with the row's
    ``updated_at`` put back to before ``since``."""
    engine, clock = world
    number, seqs = breached(engine, clock)
    since = START + timedelta(minutes=30)
    clock.set(START + timedelta(hours=2))
    delete_event(engine, number, seqs["whole"])
    set_row(engine, number, updated_at=START)
    assert engine.verify().ok
    assert (1, "missed_breach") in kinds(engine, number, since=since)


def test_since_checks_a_complaint_whose_deadline_rows_were_lost(
    world: tuple[Engine, SimulatedClock],
) -> None:
    """No deadline row left to fire: the clock itself is due and not breached."""
    engine, clock = world
    number = engine.submit({"note": "x"}, CLERK).number
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:
        conn.execute(sa.delete(D).where(D.c.complaint_id == cid))
    clock.set(START + timedelta(minutes=2))
    since = engine.now()
    clock.set(START + timedelta(minutes=30))
    assert Scheduler(engine).tick().fired == 0
    assert (1, "missed_breach") in kinds(engine, number, since=since)


def test_parallel_since_checks_idle_complaints_as_verify_does(
    world: tuple[Engine, SimulatedClock],
) -> None:
    engine, clock = world
    idle = engine.submit({"note": "idle"}, CLERK).number
    clock.set(START + timedelta(minutes=2))
    since = engine.now()
    engine.submit({"note": "busy"}, CLERK)
    clock.set(START + timedelta(minutes=30))
    sequential = engine.verify(deep=True, since=since)
    assert (idle, 1, "missed_breach") in findings(sequential)
    assert verify_parallel(engine, 2, deep=True, since=since).to_json() == \
        sequential.to_json()


# -- the transition a breach fires ----------------------------------------------------------


@pytest.fixture
def escalating(db_url: str, clock: SimulatedClock) -> Iterator[Engine]:
    """test_breach_actions' rules: a breach that fires ``escalate``."""
    with Engine.open(db_url, rules=parse_rules(ESCALATING, "escalating.yaml"),
                     clock=clock) as engine:
        yield engine


def escalated(engine: Engine, clock: SimulatedClock, *, wait: bool = False) -> list[Any]:
    """A complaint whose breach fired ``escalate`` (refused, with ``wait``); its history."""
    number = engine.submit({"note": "x"}, ESCALATING_CLERK).number
    if wait:
        clock.set(local(3, 2, 10))
        engine.fire(number, "wait", ESCALATING_CLERK)
    clock.set(local(3, 2, 11, 30))
    Scheduler(engine).tick()
    history = engine.history(number)
    assert history[-2].type == "timer_breached"
    assert history[-1].type == ("timer_action_refused" if wait else "transition")
    assert engine.verify(deep=True).ok
    return history


def deep_kinds(engine: Engine) -> list[tuple[int | None, str]]:
    return [(seq, kind) for _, seq, kind in findings(engine.verify(deep=True))]


@pytest.mark.parametrize("wait", [False, True], ids=["fired", "refused"])
def test_a_breach_whose_transition_was_deleted(escalating: Engine, clock: SimulatedClock,
                                               wait: bool) -> None:
    history = escalated(escalating, clock, wait=wait)
    number, breach, answer = history[0].number, history[-2], history[-1]
    delete_event(escalating, number, answer.seq)
    assert (breach.seq, "missing_breach_action") in deep_kinds(escalating)


def test_a_scheduler_transition_no_breach_called_for(escalating: Engine,
                                                     clock: SimulatedClock) -> None:
    history = escalated(escalating, clock)
    number, breach, moved = history[0].number, history[-2], history[-1]
    forge(escalating, number, breach.seq, lambda p: p["actions"].pop("fire"))
    found = deep_kinds(escalating)
    assert (moved.seq, "unexpected_breach_action") in found
    assert (breach.seq, "wrong_breach_actions") in found


def test_a_refusal_recorded_for_a_transition_the_rules_allowed(escalating: Engine,
                                                               clock: SimulatedClock) -> None:
    history = escalated(escalating, clock)
    number, moved = history[0].number, history[-1]
    cid = complaint_id(escalating, number)
    with escalating.database.begin() as conn:
        conn.execute(sa.update(E).where(E.c.complaint_id == cid, E.c.seq == moved.seq).values(
            type="timer_action_refused", trigger=None, to_state="received",
            payload=json.dumps({"timer": "answer", "trigger": "escalate",
                                "check": "source_state", "reason": "forged"})))
    rechain(escalating, number)
    set_row(escalating, number, state="received")
    found = [(seq, kind) for seq, kind in deep_kinds(escalating)
             if kind not in ("timers_mismatch", "wrong_timers")]
    assert (moved.seq, "wrong_action_refusal") in found
    (detail,) = details(escalating, "wrong_action_refusal")
    assert "fires 'escalate', which the rules allowed then" in detail
