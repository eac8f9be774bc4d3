"""Deep verification against forgeries a writer with database access can re-chain.

The hash chain is plain SHA-256 without a secret, so an edited history can be re-hashed
(``rechain``) and pass the plain check; each test here forges one thing the engine would
never write and checks that deep verification names it, that the untouched history is
clean, and that a history that cannot even be read is a finding rather than a crash.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from complaintflow import Engine, SimulatedClock
from complaintflow.rules.loader import default_rules_text, parse_rules
from complaintflow.rules.values import to_json
from complaintflow.storage.tables import events as E
from complaintflow.timers import Consent
from tests.integration.test_replay_audit import (
    TO_INVESTIGATED,
    complaint_id,
    drive,
    findings,
    forge,
    local,
    rechain,
)
from tests.support import ASSIGN, CS, QA, complaint_fields


def edit_event(engine: Engine, number: str, seq: int, **values: Any) -> None:
    """Set columns of event ``seq`` and re-chain."""
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:
        assert conn.execute(sa.update(E).where(E.c.complaint_id == cid, E.c.seq == seq)
                            .values(**values)).rowcount == 1
    rechain(engine, number)


def kinds(engine: Engine, number: str, *, deep: bool = True) -> list[tuple[int | None, str]]:
    return [(seq, kind) for n, seq, kind in findings(engine.verify(deep=deep)) if n == number]


# -- events that are not transitions -----------------------------------------------------------


def test_a_timer_event_that_moves_the_state_is_illegal(engine: Engine,
                                                       clock: SimulatedClock) -> None:
    number = engine.submit(complaint_fields(), CS).number
    engine.fire(number, "record", CS, {"readback_confirmed": True})
    clock.set(local(3, 2, 10, 30))  # first_response warns and breaches
    from complaintflow.scheduler import Scheduler

    Scheduler(engine).tick()
    warning = next(e.seq for e in engine.history(number) if e.type == "timer_warning")
    assert engine.verify(deep=True).ok
    edit_event(engine, number, warning, to_state="closed")
    # every later event now starts in "closed": the state itself is forged along the chain
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:
        conn.execute(sa.update(E).where(E.c.complaint_id == cid, E.c.seq > warning)
                     .values(from_state="closed", to_state="closed"))
    rechain(engine, number)
    found = kinds(engine, number)
    assert (warning, "illegal_event") in found
    detail = next(f.detail for f in engine.verify(deep=True).findings
                  if f.kind == "illegal_event")
    assert "'timer_warning' event moved the complaint from 'recorded' to 'closed'" in detail


def test_a_timer_event_that_sets_fields_or_lowers_the_severity_is_illegal(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(safety_issue=True), CS).number  # major
    clock.set(local(3, 2, 10, 30))
    from complaintflow.scheduler import Scheduler

    Scheduler(engine).tick()
    fired = [e.seq for e in engine.history(number) if e.type in ("timer_warning",
                                                                 "timer_breached")]
    assert fired and engine.verify(deep=True).ok
    forge(engine, number, fired[0], lambda p: p.update(set={"compensation_amount": "99999"}))
    assert (fired[0], "illegal_event") in kinds(engine, number)
    forge(engine, number, fired[0], lambda p: p.pop("set"))
    assert engine.verify(deep=True).ok
    forge(engine, number, fired[0], lambda p: p.update(severity="general"))
    assert (fired[0], "wrong_severity") in kinds(engine, number)


def test_a_transition_without_a_trigger_and_an_unknown_event_type(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED)
    edit_event(engine, number, 2, trigger=None)
    assert (2, "illegal_transition") in kinds(engine, number)
    edit_event(engine, number, 2, trigger="record", type="note_added")
    assert (2, "illegal_event") in kinds(engine, number)


def test_a_forged_submission_is_illegal(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    engine.fire(number, "record", CS, {"readback_confirmed": True})
    assert engine.verify(deep=True).ok
    edit_event(engine, number, 1, actor_id="nobody", actor_roles='["no_such_role"]')
    assert kinds(engine, number) == [(1, "illegal_event")]
    edit_event(engine, number, 1, actor_id="li.na", actor_roles=json.dumps(list(CS.roles)))
    assert engine.verify(deep=True).ok
    forge(engine, number, 1, lambda p: p.update(severity="major"))  # general fields
    found = kinds(engine, number)
    assert (1, "wrong_severity") in found
    forge(engine, number, 1, lambda p: p.update(severity="general"))
    assert engine.verify(deep=True).ok
    edit_event(engine, number, 1, to_state="revisited")
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:  # the next event starts there, as a forger would
        conn.execute(sa.update(E).where(E.c.complaint_id == cid, E.c.seq == 2)
                     .values(from_state="revisited"))
    rechain(engine, number)
    assert (1, "illegal_event") in kinds(engine, number)


# -- extensions ----------------------------------------------------------------------------


def _extended(engine: Engine, clock: SimulatedClock, timer: str) -> str:
    number = engine.submit(complaint_fields(), CS).number
    clock.set(local(3, 2, 9, 30))
    engine.extend_timer(number, timer, CS, 2, Consent(
        given_by="张伟", given_at=local(3, 2, 9, 20), channel="phone", reason="客户同意"),
        reason="客户同意延期")
    assert [e.type for e in engine.history(number)][1:] == ["customer_consent",
                                                            "timer_extended"]
    assert engine.verify(deep=True).ok
    return number


def test_an_extension_without_the_consent_before_it(engine: Engine,
                                                    clock: SimulatedClock) -> None:
    number = _extended(engine, clock, "first_response")
    edit_event(engine, number, 2, actor_id="someone.else")  # consent by another actor
    assert kinds(engine, number) == [(3, "unconsented_extension")]
    edit_event(engine, number, 2, actor_id=CS.id, type="timer_warning")
    assert (3, "unconsented_extension") in kinds(engine, number)


def test_an_extension_by_a_role_the_timer_does_not_allow(engine: Engine,
                                                         clock: SimulatedClock) -> None:
    number = _extended(engine, clock, "whole_complaint")  # extend_roles: CS, DM
    for seq in (2, 3):
        edit_event(engine, number, seq, actor_id=QA.id, actor_roles=json.dumps(list(QA.roles)))
    assert kinds(engine, number) == [(3, "extension_not_allowed")]
    report = engine.verify(deep=True)
    assert "the rule file allows customer_service, department_manager" in \
        report.findings[0].detail


# -- rule sets and unreadable events -------------------------------------------------------


def test_an_event_stamped_with_another_rule_set_is_found_by_the_plain_check(
    db_url: str, clock: SimulatedClock
) -> None:
    text = default_rules_text()
    old = "    to: recorded\n    roles: [customer_service]\n"
    assert text.count(old) == 1
    permissive = parse_rules(text.replace(old, "    to: recorded\n    roles: [customer_service"
                                                ", quality]\n"), "permissive.yaml")
    Engine.open(db_url, rules=permissive, clock=clock).close()  # its text is stored
    engine = Engine.open(db_url, clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        engine.fire(number, "record", CS, {"readback_confirmed": True})
        edit_event(engine, number, 2, actor_id=QA.id, actor_roles=json.dumps(list(QA.roles)),
                   ruleset=permissive.version)
        assert kinds(engine, number, deep=False) == [(2, "ruleset_mismatch")]
        assert kinds(engine, number) == [(2, "ruleset_mismatch")]
        edit_event(engine, number, 2, ruleset="f" * 64)  # a rule set never stored
        assert kinds(engine, number) == [(2, "ruleset_mismatch"), (2, "unknown_ruleset")]
    finally:
        engine.close()


def test_a_payload_that_is_not_a_json_object_is_a_finding_not_a_crash(engine: Engine) -> None:
    numbers = [engine.submit(complaint_fields(), CS).number for _ in range(2)]
    for number in numbers:
        engine.fire(number, "record", CS, {"readback_confirmed": True})
    cid = complaint_id(engine, numbers[0])
    for text in ("{not json", "[1, 2]"):
        with engine.database.begin() as conn:
            conn.execute(sa.update(E).where(E.c.complaint_id == cid, E.c.seq == 2)
                         .values(payload=text))
        assert kinds(engine, numbers[0]) == [(2, "edited"), (2, "bad_payload")]
        rechain(engine, numbers[0])
        assert kinds(engine, numbers[0], deep=False) == [(2, "bad_payload")]
        assert kinds(engine, numbers[0]) == [(2, "bad_payload")]
        assert kinds(engine, numbers[1]) == []  # the other complaint is still verified


# -- what the engine stores ----------------------------------------------------------------


def test_decimals_are_stored_with_every_digit_the_engine_decided_on(engine: Engine) -> None:
    amount = "9999.999999999999999999999999999"  # 31 digits, below the major threshold
    assert to_json(Decimal(amount)) == amount
    assert to_json(Decimal("1.2300")) == "1.23" and to_json(Decimal("-0.0")) == "0"
    number = engine.submit(complaint_fields(), CS).number
    engine.fire(number, "record", CS, {"readback_confirmed": True, "claimed_amount": amount})
    complaint = engine.fire(number, "confirm", CS, ASSIGN)
    assert complaint.severity == "general"
    assert engine.get(number, CS).fields["claimed_amount"] == Decimal(amount)
    assert engine.verify(deep=True).ok


# -- histories the engine wrote itself verify clean ----------------------------------------


def _count_of_reopen_variant() -> tuple[str, str]:
    """The default rules, with whole_complaint's budget 10 working days once reopened
    (a variant reading the history's facts), and a v2 that differs only in a label."""
    anchor = ("      - when: {all: [{field: sla_profile, eq: lab}, "
              "{field: severity, eq: major}]}\n")
    text = default_rules_text()
    assert text.count(anchor) == 1
    v1 = text.replace(anchor, "      - when: {count_of: reopen, ge: 1}\n"
                              "        duration: {working_days: 10}\n" + anchor)
    v2 = v1.replace("en: Whole complaint}", "en: Whole complaint (v2)}")
    assert v2 != v1
    return v1, v2


def test_a_migration_works_budgets_out_with_the_history_facts(
    db_url: str, clock: SimulatedClock
) -> None:
    """Migration used to re-derive budgets with empty facts: the reopened complaint's
    whole_complaint clock went back to 15 working days, and deep verification (which
    re-derives with the facts, as fire does) reported the engine's own history."""
    from datetime import timedelta

    from complaintflow import migrate
    from tests.support import AFTER, DISSATISFIED, FEEDBACK, PLAN, QM, REPORT, RESULT

    v1, v2 = _count_of_reopen_variant()
    engine = Engine.open(db_url, rules=parse_rules(v1, "v1.yaml"), clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        for trigger, actor, data in [
                ("record", CS, {"readback_confirmed": True}), ("confirm", CS, ASSIGN),
                ("submit_report", QA, REPORT), ("propose_plan", QA, PLAN),
                ("resolve", AFTER, RESULT), ("feed_back", CS, FEEDBACK),
                ("revisit", CS, DISSATISFIED), ("reopen", QM, {"dispute_reason": "赔偿不足"})]:
            clock.advance(timedelta(days=5, minutes=20) if trigger == "revisit"
                          else timedelta(minutes=20))
            engine.fire(number, trigger, actor, data)

        def whole() -> int:
            (found,) = [t for t in engine.timers(number) if t.timer == "whole_complaint"]
            return found.budget

        assert whole() == 10
    finally:
        engine.close()
    clock.advance(timedelta(hours=1))
    engine = Engine.open(db_url, rules=parse_rules(v2, "v2.yaml"), clock=clock)
    try:
        migrate.apply(engine, engine.rules.version[:12], CS)
        assert whole() == 10
        assert engine.verify(deep=True).ok
    finally:
        engine.close()


def test_replay_after_a_recompute_and_a_migration_counts_on_the_migrated_calendar(
    db_url: str, clock: SimulatedClock
) -> None:
    from complaintflow import migrate

    anchor = "    official_through: 2026\n"
    base = default_rules_text()
    assert base.count(anchor) == 1

    def with_holidays(*days: str) -> str:
        listed = "".join(f"      - {{date: {d}, kind: holiday, note: test}}\n" for d in days)
        return base.replace(anchor, "    overrides:\n" + listed + anchor)

    engine = Engine.open(db_url, clock=clock)
    number = engine.submit(complaint_fields(), CS).number
    engine.fire(number, "record", CS, {"readback_confirmed": True})
    engine.close()
    clock.set(local(3, 2, 10))
    engine = Engine.open(db_url, rules=parse_rules(with_holidays("2026-03-04"), "v2.yaml"),
                         clock=clock)
    assert engine.recompute_timers()
    engine.close()
    clock.set(local(3, 2, 11))
    engine = Engine.open(db_url, rules=parse_rules(
        with_holidays("2026-03-05", "2026-03-06"), "v3.yaml"), clock=clock)
    try:
        migrate.apply(engine, engine.rules.version[:12], CS)
        clock.set(local(3, 2, 12))
        live = {t.timer: t for t in engine.timers(number)}
        replayed = engine.replay(number, at=engine.now(), actor=CS)
        running = [t for t in replayed.timers.values() if t.status == "running"]
        assert running
        for t in running:
            assert (t.due_at, t.remaining) == (live[t.timer].due_at, live[t.timer].remaining)
    finally:
        engine.close()


def test_a_raised_severity_re_derives_budgets_with_the_history_facts(
    db_url: str, clock: SimulatedClock
) -> None:
    """The scheduler's re-derivation after a breach raised the severity used empty facts:
    a variant reading ``count_of`` lost to one reading the severity, unlike in ``fire``."""
    from complaintflow.scheduler import Scheduler

    text = default_rules_text()
    progress = "    stop_triggers: [report_progress]\n    duration: {working_days: 3}\n"
    organised = ("        duration: {working_days: 1}\n"
                 "    on_breach: {notify: [department_manager, general_manager]}\n")
    assert text.count(progress) == 1 and text.count(organised) == 1
    text = text.replace(progress, progress + (
        "    variants:\n"
        "      - when: {count_of: receive_sample, ge: 1}\n"
        "        duration: {working_days: 4}\n"
        "      - when: {field: severity, eq: major}\n"
        "        duration: {working_days: 2}\n"))
    text = text.replace(organised, organised.replace("general_manager]}",
                                                     "general_manager], raise_severity: major}"))
    engine = Engine.open(db_url, rules=parse_rules(text, "raise.yaml"), clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        engine.fire(number, "record", CS, {"readback_confirmed": True})
        engine.fire(number, "confirm", CS, ASSIGN)
        engine.fire(number, "receive_sample", QA)

        def progress_budget() -> int:
            (found,) = [t for t in engine.timers(number) if t.timer == "progress_report"]
            return found.budget

        assert progress_budget() == 4
        clock.set(local(3, 4, 18))  # investigation_organised breaches: the severity is major
        Scheduler(engine).tick()
        assert engine.get(number, CS).severity == "major"
        assert progress_budget() == 4  # receive_sample still counts first
        assert engine.verify(deep=True).ok
    finally:
        engine.close()


def test_clocks_the_rules_start_or_stop_are_the_ones_recorded(engine: Engine) -> None:
    """Which clocks a step starts and stops is worked out again from the timer rules (as
    ``sla.plan_event``), not taken from the payload."""
    number = engine.submit(complaint_fields(), CS).number
    engine.fire(number, "record", CS, {"readback_confirmed": True})  # stops registration
    assert engine.verify(deep=True).ok

    def bogus_stop(payload: dict[str, Any]) -> None:
        payload["timers"]["stopped"].append({"run": 1, "timer": "first_response"})

    forge(engine, number, 2, bogus_stop)
    report = engine.verify(deep=True)
    assert kinds(engine, number) == [(2, "wrong_timers")]
    assert "timer first_response run 1 is recorded stopped here, the rules do not" in \
        report.findings[0].detail
    forge(engine, number, 2, lambda p: p["timers"]["stopped"].pop())
    assert engine.verify(deep=True).ok

    def never_started(payload: dict[str, Any]) -> None:
        payload["timers"]["started"] = [t for t in payload["timers"]["started"]
                                        if t["timer"] != "registration"]

    forge(engine, number, 1, never_started)
    found = kinds(engine, number)
    assert (1, "wrong_timers") in found and (2, "wrong_timers") in found
    details = [f.detail for f in engine.verify(deep=True).findings]
    assert "timer registration run 1 is started here by the rules, the history does not " \
        "record it" in details


def test_recorded_clock_changes_are_compared_as_sets(engine: Engine) -> None:
    """``_plan`` first compares the recorded changes with the planned ones in order; in
    another order, or with an entry twice, they are still the same clocks."""
    number = engine.submit(complaint_fields(), CS).number
    assert len(next(iter(engine.history(number))).payload["timers"]["started"]) >= 2
    forge(engine, number, 1, lambda p: p["timers"]["started"].reverse())
    assert engine.verify(deep=True).ok
    forge(engine, number, 1, lambda p: p["timers"]["started"].append(
        dict(p["timers"]["started"][0])))
    assert engine.verify(deep=True).ok
    forge(engine, number, 1, lambda p: p["timers"]["started"].pop(0))
    assert engine.verify(deep=True).ok  # the copy is left
    forge(engine, number, 1, lambda p: p["timers"]["started"].pop(0))
    assert kinds(engine, number) == [(1, "wrong_timers")]
