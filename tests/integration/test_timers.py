"""SLA clocks on both backends: extensions with consent, pauses, catch-up after an outage,
recomputation after a calendar change, provisional years, the outbox and the scheduler's
pace."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from complaintflow import (
    Actor,
    CalendarError,
    Engine,
    InvalidInput,
    RuleSet,
    SimulatedClock,
    parse_rules,
)
from complaintflow.errors import TimerRefused
from complaintflow.outbox import Notification
from complaintflow.rules.loader import default_rules_text
from complaintflow.scheduler import Scheduler
from complaintflow.storage.tables import outbox as O
from complaintflow.timers import Consent
from complaintflow.views import TimerView
from tests.support import CS, QA, complaint_fields

SH = ZoneInfo("Asia/Shanghai")
ASSIGN = {"responsible_department": "quality", "handler": "wang.qa"}
DM = Actor("zhao.dm", ["department_manager"])


def local(
    month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, year: int = 2026
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=SH)


def parse_due(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def consent(at: datetime) -> Consent:
    return Consent(
        given_by="张伟", given_at=at, channel="phone", reason="客户同意延期至检测报告出具"
    )


def view(engine: Engine, number: str, timer: str) -> TimerView:
    found = [t for t in engine.timers(number) if t.timer == timer and t.status != "stopped"]
    assert len(found) == 1, found
    return found[0]


def with_calendar_lines(extra: str, text: str | None = None) -> str:
    """The default rule file with ``extra`` added to the office calendar."""
    text = default_rules_text() if text is None else text
    anchor = "    official_through: 2026\n"
    assert text.count(anchor) == 1
    return text.replace(anchor, extra + anchor)


def reopen(engine: Engine, url: str, clock: SimulatedClock, rules: RuleSet) -> Engine:
    engine.close()
    return Engine.open(url, rules=rules, clock=clock)


def outbox_rows(engine: Engine) -> list[Any]:
    with engine.database.connect() as conn:
        return list(conn.execute(sa.select(O).order_by(O.c.id)).all())


# -- extensions ------------------------------------------------------------------------------


def test_an_extension_needs_the_customers_consent(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    before = (engine.history(number), engine.timers(number))
    now = engine.now()
    with pytest.raises(InvalidInput) as info:
        engine.extend_timer(
            number,
            "whole_complaint",
            CS,
            5,
            None,  # type: ignore[arg-type]
            reason="等待检测",
        )
    assert [p.field for p in info.value.problems] == ["consent"]
    bad = Consent(given_by="", given_at=now + timedelta(hours=1), channel=" ", reason="x")
    with pytest.raises(InvalidInput) as info:
        engine.extend_timer(number, "whole_complaint", CS, 0, bad, reason="")
    assert {p.field for p in info.value.problems} == {
        "consent.given_by",
        "consent.channel",
        "consent.given_at",
        "amount",
        "reason",
    }
    assert (engine.history(number), engine.timers(number)) == before


def test_an_extension_writes_consent_then_extension_and_moves_the_deadline(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number  # Monday 09:00
    old = view(engine, number, "whole_complaint")
    assert old.due_at == local(3, 23, 17, 30)  # 15 working days
    clock.set(local(3, 10, 10))
    given = local(3, 10, 9, 30)
    views = engine.extend_timer(
        number, "whole_complaint", DM, 5, consent(given), reason="等待第三方检测报告"
    )
    new = next(t for t in views if t.timer == "whole_complaint")
    assert new.due_at == local(3, 30, 17, 30)  # five working days later
    assert new.budget == 20
    assert new.started_at == old.started_at
    assert [e["amount"] for e in new.extensions] == [5]
    history = engine.history(number, CS)  # a personal-data reader sees who consented
    consent_event, extended = history[-2:]
    masked = engine.history(number)[-2]
    assert masked.payload["consent"]["given_by"] != consent(given).given_by
    assert (consent_event.type, extended.type) == ("customer_consent", "timer_extended")
    assert extended.seq == consent_event.seq + 1
    assert extended.prev_hash == consent_event.hash
    assert consent_event.actor_id == extended.actor_id == DM.id
    assert consent_event.payload["consent"] == consent(given).to_json()
    assert consent_event.payload["timer"] == "whole_complaint"
    assert new.extensions[0]["consent_seq"] == consent_event.seq
    payload = extended.payload
    assert payload["amount"] == 5
    assert payload["unit"] == "working_days"
    assert parse_due(payload["previous_due_at"]) == local(3, 23, 17, 30)
    assert parse_due(payload["due_at"]) == local(3, 30, 17, 30)
    assert engine.verify().ok
    # the old deadline is gone: nothing fires on 03-23, the breach comes on 03-30
    scheduler = Scheduler(engine)
    clock.set(local(3, 24, 9))
    scheduler.tick()
    assert not [
        e
        for e in engine.history(number)
        if e.type == "timer_breached" and e.payload["timer"] == "whole_complaint"
    ]
    clock.set(local(3, 30, 17, 30))
    scheduler.tick()
    breached = [
        e
        for e in engine.history(number)
        if e.type == "timer_breached" and e.payload["timer"] == "whole_complaint"
    ]
    assert len(breached) == 1
    assert parse_due(breached[0].payload["due_at"]) == local(3, 30, 17, 30)


def test_an_extension_is_refused_after_the_breach_and_for_other_roles(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number  # Monday 09:00
    # first_response names no extend_roles: any role may extend it, before the breach
    clock.set(local(3, 2, 9, 30))
    engine.extend_timer(
        number, "first_response", QA, 1, consent(local(3, 2, 9, 25)), reason="客户稍后回电"
    )
    assert view(engine, number, "first_response").due_at == local(3, 2, 11)
    clock.set(local(3, 2, 11))
    Scheduler(engine).tick()
    assert view(engine, number, "first_response").breached
    before = (engine.history(number), engine.timers(number), outbox_rows(engine))
    with pytest.raises(TimerRefused) as info:
        engine.extend_timer(
            number, "first_response", CS, 1, consent(local(3, 2, 10, 50)), reason="太晚了"
        )
    assert info.value.timer == "first_response"
    assert "advance" in info.value.reason
    # whole_complaint: customer service or the department manager only
    with pytest.raises(TimerRefused) as info:
        engine.extend_timer(
            number, "whole_complaint", QA, 3, consent(local(3, 2, 10, 50)), reason="质量部申请"
        )
    assert "customer_service" in info.value.reason
    assert (engine.history(number), engine.timers(number), outbox_rows(engine)) == before


# -- pauses ------------------------------------------------------------------------------------

PAUSING = """\
name: 暂停测试
initial: received
calendar: office
states:
  - {id: received, label: {zh: 接获, en: Received}}
  - {id: waiting, label: {zh: 等待客户补充资料, en: Waiting for the customer}}
  - {id: closed, label: {zh: 结案, en: Closed}, final: true}
roles:
  - {id: clerk, label: {zh: 文员, en: Clerk}}
fields:
  - {id: note, type: string, label: {zh: 备注, en: Note}}
severity:
  levels: [general, major]
  default: general
transitions:
  - {trigger: wait, from: [received], to: waiting, roles: [clerk]}
  - {trigger: resume, from: [waiting], to: received, roles: [clerk]}
  - {trigger: close, from: [received], to: closed, roles: [clerk]}
calendars:
  - id: office
    timezone: Asia/Shanghai
    country: CN
    hours:
      mon: ["08:30-12:00", "13:00-17:30"]
      tue: ["08:30-12:00", "13:00-17:30"]
      wed: ["08:30-12:00", "13:00-17:30"]
      thu: ["08:30-12:00", "13:00-17:30"]
      fri: ["08:30-12:00", "13:00-17:30"]
    official_through: 2026
    beyond: provisional
timers:
  - id: answer
    label: {zh: 答复时限, en: Answer}
    start: {on: receipt}
    stop: [closed]
    pause: [waiting]
    duration: {working_hours: 12}
    warnings: [{fraction: 0.5, notify: [clerk]}]
    on_breach: {notify: [clerk]}
  - id: reply
    label: {zh: 回复时限, en: Reply}
    start: {on: receipt}
    stop: [closed]
    pause: [waiting]
    duration: {hours: 6}
    on_breach: {notify: [clerk]}
"""
HOLIDAY_WEDNESDAY = "      - {date: 2026-03-04, kind: holiday, note: 测试用假日}\n"
CLERK = Actor("wu.clerk", ["clerk"])


def test_pause_and_resume_keep_the_paused_time_also_across_recompute(
    db_url: str, clock: SimulatedClock
) -> None:
    rules = parse_rules(PAUSING, "pausing.yaml")
    engine = Engine.open(db_url, rules=rules, clock=clock)
    try:
        number = engine.submit({"note": "x"}, CLERK).number  # Monday 09:00
        # 12 working hours: Mon 7.5 h + Tue 4.5 h -> Tue 14:00; 6 hours -> Mon 15:00
        assert view(engine, number, "answer").due_at == local(3, 3, 14)
        assert view(engine, number, "reply").due_at == local(3, 2, 15)
        clock.set(local(3, 2, 10))
        engine.fire(number, "wait", CLERK)
        for name in ("answer", "reply"):
            paused = view(engine, number, name)
            assert (paused.status, paused.due_at) == ("paused", None)
        assert engine.next_due() is None  # nothing pending while paused
        clock.set(local(3, 3, 9))  # paused 7 working hours, 23 hours
        engine.fire(number, "resume", CLERK)
        answer = view(engine, number, "answer")
        assert answer.status == "running"
        assert answer.due_at == local(3, 4, 12)  # 11 h left from Tue 09:00
        assert len(answer.pauses) == 1
        assert view(engine, number, "reply").due_at == local(3, 3, 14)  # 5 h left
        # the same calendar: nothing to recompute, nothing written
        events = len(engine.history(number))
        assert engine.recompute_timers() == []
        assert len(engine.history(number)) == events
        # a new holiday on Wednesday: the working-time clock moves one day, the pause stays
        holiday = parse_rules(
            PAUSING.replace(
                "    official_through: 2026\n",
                "    overrides:\n" + HOLIDAY_WEDNESDAY + "    official_through: 2026\n",
            ),
            "pausing.yaml",
        )
        engine = reopen(engine, db_url, clock, holiday)
        report = engine.recompute_timers()
        assert [(r["number"], r["timer"]) for r in report] == [(number, "answer")]
        assert parse_due(report[0]["previous_due_at"]) == local(3, 4, 12)
        assert parse_due(report[0]["due_at"]) == local(3, 5, 12)
        answer = view(engine, number, "answer")
        assert answer.due_at == local(3, 5, 12)
        assert answer.pauses[0][:2] == (
            "2026-03-02T02:00:00.000000Z",
            "2026-03-03T01:00:00.000000Z",
        )
        assert view(engine, number, "reply").due_at == local(3, 3, 14)
        recomputed = [e for e in engine.history(number) if e.type == "deadline_recomputed"]
        assert len(recomputed) == 1
        assert recomputed[0].payload["timer"] == "answer"
        # and it fires there, warning first (half the budget, paused time added)
        scheduler = Scheduler(engine)
        clock.set(local(3, 5, 11, 59, 59))
        scheduler.tick()
        assert not [
            e
            for e in engine.history(number)
            if e.type == "timer_breached" and e.payload["timer"] == "answer"
        ]
        clock.set(local(3, 5, 12))
        scheduler.tick()
        breached = [
            e
            for e in engine.history(number)
            if e.type == "timer_breached" and e.payload["timer"] == "answer"
        ]
        assert len(breached) == 1 and breached[0].payload["lateness_seconds"] == 0
        assert engine.verify().ok
    finally:
        engine.close()


# -- catch-up after an outage -------------------------------------------------------------


def test_catch_up_after_a_three_day_outage_fires_each_deadline_once_flagged_late(
    engine: Engine, clock: SimulatedClock
) -> None:
    numbers = [
        engine.submit(complaint_fields(), CS).number,
        engine.submit(complaint_fields(), CS).number,
        engine.submit(complaint_fields(sla_profile="service_firm"), CS).number,
    ]
    scheduler = Scheduler(engine, batch_size=4)
    assert scheduler.tick().fired == 0  # Monday 09:00: nothing due yet
    due_during_outage = {  # timer, kind -> due (local)
        ("first_response", "warning"): local(3, 2, 9, 45),
        ("first_response", "breach"): local(3, 2, 10),
        ("registration", "warning"): local(3, 2, 10, 30),
        ("registration", "breach"): local(3, 2, 11),
    }
    service_firm_only = {
        ("pass_to_quality", "breach"): local(3, 2, 9, 15),
        ("report_to_service_centre", "breach"): local(3, 2, 10),
    }
    clock.set(local(3, 5, 9))  # the scheduler was down from Monday to Thursday
    report = scheduler.tick()
    assert report.fired == 3 * len(due_during_outage) + len(service_firm_only)
    assert report.batches == 4  # 14 deadlines in batches of 4
    assert report.max_lateness == local(3, 5, 9) - local(3, 2, 9, 15)
    for number in numbers:
        fired = [e for e in engine.history(number) if e.type in ("timer_warning", "timer_breached")]
        expected = dict(due_during_outage)
        if number == numbers[2]:
            expected.update(service_firm_only)
        got = {(e.payload["timer"], e.payload["kind"]): e for e in fired}
        assert len(got) == len(fired) == len(expected)
        assert {k: parse_due(e.payload["due_at"]) for k, e in got.items()} == expected
        for e in fired:
            assert e.occurred_at == local(3, 5, 9)
            late = local(3, 5, 9) - parse_due(e.payload["due_at"])
            assert e.payload["lateness_seconds"] == late.total_seconds() > 0
        # within one complaint in due order
        dues = [parse_due(e.payload["due_at"]) for e in fired]
        assert dues == sorted(dues)
    assert report.reviews == 1  # the review of Wednesday 03-04 09:00 caught up too
    again = scheduler.tick()
    assert (again.fired, again.reviews) == (0, 0)
    keys = [r.key for r in outbox_rows(engine)]
    assert len(keys) == len(set(keys)) == report.fired + report.reviews


# -- recomputation after a calendar change --------------------------------------------------


def test_recompute_after_a_new_holiday_moves_working_time_deadlines(
    engine: Engine, db_url: str, clock: SimulatedClock
) -> None:
    clock.set(local(3, 2, 10))
    confirmed = engine.submit(complaint_fields(), CS).number
    engine.fire(confirmed, "record", CS, {"readback_confirmed": True})
    engine.fire(confirmed, "confirm", CS, ASSIGN)
    received = engine.submit(complaint_fields(), CS).number
    before = {n: {t.timer: t.due_at for t in engine.timers(n)} for n in (confirmed, received)}
    events_before = {n: len(engine.history(n)) for n in (confirmed, received)}
    rules = parse_rules(with_calendar_lines("    overrides:\n" + HOLIDAY_WEDNESDAY), "holiday.yaml")
    engine = reopen(engine, db_url, clock, rules)
    try:
        report = engine.recompute_timers()
        after = {n: {t.timer: t.due_at for t in engine.timers(n)} for n in (confirmed, received)}
        changed = {
            (n, name) for n in after for name in after[n] if after[n][name] != before[n][name]
        }
        # a clock counting working time also moves to the new calendar when its deadline
        # stays (contact_customer ends Monday): reported with previous_due_at == due_at
        moved = {(confirmed, "contact_customer")}
        assert {(r["number"], r["timer"]) for r in report} == changed | moved
        assert len(report) == len(changed | moved)
        assert all(
            r["previous_due_at"] == r["due_at"] for r in report if r["timer"] == "contact_customer"
        )
        assert changed == {
            (confirmed, "whole_complaint"),
            (confirmed, "investigation_organised"),
            (confirmed, "investigation_report"),
            (confirmed, "progress_report"),
            (received, "whole_complaint"),
        }
        # calendar hours and clocks ending before Wednesday stay where they were
        assert after[confirmed]["first_response"] == local(3, 2, 11)
        assert after[confirmed]["contact_customer"] == local(3, 2, 12)
        assert after[confirmed]["investigation_report"] == local(3, 10, 17, 30)
        assert after[received]["whole_complaint"] == local(3, 24, 17, 30)
        for number in (confirmed, received):
            history = engine.history(number)
            new = history[events_before[number] :]
            assert [e.type for e in new] == ["deadline_recomputed"] * len(
                [c for c in changed | moved if c[0] == number]
            )
            for e in new:
                assert parse_due(e.payload["due_at"]) == after[number][e.payload["timer"]]
                assert parse_due(e.payload["previous_due_at"]) == before[number][e.payload["timer"]]
                assert e.payload["calendar_version"] == rules.version
        assert engine.recompute_timers() == []  # idempotent
        assert engine.verify().ok
    finally:
        engine.close()


def test_recompute_moves_a_warning_even_when_the_breach_stays(
    engine: Engine, db_url: str, clock: SimulatedClock
) -> None:
    clock.set(local(3, 2, 10))
    number = engine.submit(complaint_fields(), CS).number
    engine.fire(number, "record", CS, {"readback_confirmed": True})
    engine.fire(number, "confirm", CS, ASSIGN)
    # Wednesday becomes a half day: the 5th working date still ends Monday 03-09 17:30, but
    # 0.8 of the working time (390 + 4 * 480 + 210 = 2520 min -> 2016) now ends Friday 17:06
    # instead of 16:12
    half_day = '      - {date: 2026-03-04, kind: hours, hours: ["08:30-12:00"], note: 半天}\n'
    rules = parse_rules(with_calendar_lines("    overrides:\n" + half_day), "half.yaml")
    engine = reopen(engine, db_url, clock, rules)
    try:
        report = engine.recompute_timers()
        assert view(engine, number, "investigation_report").due_at == local(3, 9, 17, 30)
        assert view(engine, number, "investigation_organised").due_at == local(3, 4, 12)

        def warnings() -> list[Any]:
            return [
                e
                for e in engine.history(number)
                if e.type == "timer_warning" and e.payload["timer"] == "investigation_report"
            ]

        scheduler = Scheduler(engine)
        clock.set(local(3, 6, 17, 5, 59))
        scheduler.tick()
        assert warnings() == [], "the warning fired at the instant of the old calendar"
        clock.set(local(3, 6, 17, 6))
        scheduler.tick()
        [warning] = warnings()
        assert parse_due(warning.payload["due_at"]) == local(3, 6, 17, 6)
        # one deadline_recomputed event per timer whose deadlines moved (investigation_organised,
        # investigation_report and whole_complaint), and per other working-time clock, moved to
        # the new calendar with its deadlines unchanged
        assert {r["timer"] for r in report} == {
            "investigation_organised",
            "investigation_report",
            "whole_complaint",
            "contact_customer",
            "progress_report",
        }
    finally:
        engine.close()


# -- years without official data ------------------------------------------------------------


def test_deadlines_in_2027_are_provisional(engine: Engine, clock: SimulatedClock) -> None:
    clock.set(local(12, 21, 9))
    number = engine.submit(complaint_fields(), CS).number
    whole = view(engine, number, "whole_complaint")
    # weekdays only in 2027: 2027-01-01 counts as a working day
    assert whole.due_at == local(1, 11, 17, 30, year=2027)
    assert whole.provisional
    assert not view(engine, number, "first_response").provisional
    started = engine.history(number)[0].payload["timers"]["started"]
    assert {t["timer"]: t["provisional"] for t in started} == {
        "first_response": False,
        "registration": False,
        "whole_complaint": True,
    }
    clock.set(local(1, 11, 17, 30, year=2027))
    Scheduler(engine).tick()
    breached = [
        e
        for e in engine.history(number)
        if e.type == "timer_breached" and e.payload["timer"] == "whole_complaint"
    ]
    assert len(breached) == 1 and breached[0].payload["provisional"] is True


def test_beyond_error_refuses_a_transition_whose_deadline_lands_in_2027(
    db_url: str, clock: SimulatedClock
) -> None:
    text = default_rules_text()
    assert text.count("beyond: provisional") == 1
    rules = parse_rules(text.replace("beyond: provisional", "beyond: error"), "strict.yaml")
    clock.set(local(12, 1, 9))
    engine = Engine.open(db_url, rules=rules, clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number  # whole_complaint: 12-22
        engine.fire(number, "record", CS, {"readback_confirmed": True})
        clock.set(local(12, 28, 9))  # investigation_report would end in January 2027
        before = (
            engine.get(number),
            engine.history(number),
            engine.timers(number),
            outbox_rows(engine),
        )
        with pytest.raises(CalendarError) as info:
            engine.fire(number, "confirm", CS, ASSIGN)
        assert type(info.value) is not CalendarError  # a specific subclass
        assert getattr(info.value, "year", 2027) == 2027
        after = (
            engine.get(number),
            engine.history(number),
            engine.timers(number),
            outbox_rows(engine),
        )
        assert after == before
        assert engine.get(number).state == "recorded"
        assert engine.verify().ok
    finally:
        engine.close()


# -- the outbox ------------------------------------------------------------------------------


@pytest.fixture
def two_notifications(engine: Engine, clock: SimulatedClock) -> Iterator[str]:
    number = engine.submit(complaint_fields(), CS).number
    clock.set(local(3, 2, 10))  # first_response: warning 09:45, breach 10:00
    assert Scheduler(engine).tick().fired == 2
    yield number


def test_outbox_claims_are_leased_and_acks_are_idempotent(
    engine: Engine, clock: SimulatedClock, two_notifications: str
) -> None:
    number = two_notifications
    assert engine.outbox.pending() == 2
    claimed = engine.outbox.claim(limit=10, lease=timedelta(minutes=5))
    assert [n.kind for n in claimed] == ["timer_warning", "timer_breached"]
    assert [n.attempts for n in claimed] == [1, 1]
    assert all(n.number == number for n in claimed)
    keys = [n.key for n in claimed]
    assert len(set(keys)) == 2
    assert keys == [f"{number}:{n.event_seq}:{n.kind}" for n in claimed]
    assert claimed[1].recipients == ("customer_service", "department_manager")
    # leased: nobody else gets them until the lease ends
    assert engine.outbox.claim() == []
    clock.advance(timedelta(minutes=4, seconds=59))
    assert engine.outbox.claim() == []
    clock.advance(timedelta(seconds=1))
    again = engine.outbox.claim(limit=1)
    assert [(n.id, n.key, n.attempts) for n in again] == [(claimed[0].id, keys[0], 2)]
    assert engine.outbox.ack([claimed[0].id, claimed[1].id]) == 2
    assert engine.outbox.ack([claimed[0].id, claimed[1].id]) == 0  # idempotent
    assert engine.outbox.ack([]) == 0
    assert engine.outbox.pending() == 0
    clock.advance(timedelta(hours=1))
    assert engine.outbox.claim() == []
    with pytest.raises(InvalidInput):
        engine.outbox.claim(limit=0)


def test_a_sink_that_raises_gets_the_notification_again(
    engine: Engine, clock: SimulatedClock, two_notifications: str
) -> None:
    calls: list[str] = []
    failed: set[str] = set()

    def flaky(note: Notification) -> None:
        calls.append(note.key)
        if note.kind == "timer_breached" and note.key not in failed:
            failed.add(note.key)
            raise RuntimeError("mail server down")

    engine.outbox.add_sink(flaky)
    scheduler = Scheduler(engine)
    assert scheduler.tick().delivered == 1  # the warning went through
    assert engine.outbox.pending() == 1
    assert scheduler.tick().delivered == 0  # still leased
    clock.advance(timedelta(minutes=5))
    assert scheduler.tick().delivered == 1
    assert engine.outbox.pending() == 0
    warning, breach = sorted({k for k in calls}, key=calls.index)
    assert calls == [warning, breach, breach]
    attempts = {r.key: r.attempts for r in outbox_rows(engine)}
    assert attempts == {warning: 1, breach: 2}


def test_notification_keys_are_unique_in_the_database(
    engine: Engine, two_notifications: str
) -> None:
    row = outbox_rows(engine)[0]
    with pytest.raises(sa.exc.IntegrityError), engine.database.begin() as conn:
        conn.execute(
            sa.insert(O).values(
                key=row.key,
                complaint_id=row.complaint_id,
                number=row.number,
                event_seq=row.event_seq,
                kind=row.kind,
                recipients=row.recipients,
                payload=row.payload,
                created_at=row.created_at,
                attempts=0,
            )
        )


# -- the scheduler's pace ----------------------------------------------------------------------


def test_next_interval_adapts(engine: Engine, clock: SimulatedClock) -> None:
    scheduler = Scheduler(
        engine, batch_size=2, max_batches_per_tick=1, min_interval=0.5, max_interval=30.0
    )
    idle = scheduler.tick()
    assert idle.next_due is None
    assert scheduler.next_interval(idle) == 30.0  # nothing pending
    for _ in range(3):
        engine.submit(complaint_fields(), CS)  # first_response warning at 09:45 each
    clock.set(local(3, 2, 9, 44, 50))
    waiting = scheduler.tick()
    assert waiting.fired == 0
    assert waiting.next_due == local(3, 2, 9, 45)
    assert scheduler.next_interval(waiting) == 10.0  # time to the next deadline
    clock.set(local(3, 2, 9, 44, 59))
    assert scheduler.next_interval(scheduler.tick()) == 1.0
    clock.set(local(3, 2, 9, 45))
    full = scheduler.tick()
    assert (full.fired, full.batches) == (2, 1)  # a full batch: more may be waiting
    assert scheduler.next_interval(full) == 0.5
    rest = scheduler.tick()
    assert rest.fired == 1
    assert rest.next_due == local(3, 2, 10)
    assert scheduler.next_interval(rest) == 30.0  # capped at max_interval
    clock.set(local(3, 2, 9, 59, 59) + timedelta(milliseconds=800))
    assert scheduler.next_interval(rest) == 0.5  # never faster than min_interval
