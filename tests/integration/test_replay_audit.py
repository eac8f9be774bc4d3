"""What auditors rely on: replay from history alone, deep verification, exports, the HTML
timeline and rule-set versions, on both backends.

The realistic walk below drives one complaint through warnings and breaches (scheduler
ticks), an extension with the customer's consent, a compensation plan that raises the
severity to major and needs the general manager's approval, top management's signature, a
revisit with a dissatisfied customer and a reopening. Every step happens at its own instant,
so ``replay(at=<instant of a step>)`` must reproduce exactly what the engine showed right
after that step.

Tampering tests that should only be visible to the *deep* check rewrite the hash chain
after the edit (``rechain``), so the plain chain check passes and the finding comes from
re-running the rules.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from complaintflow import (
    Complaint,
    Engine,
    IntegrityError,
    InvalidInput,
    NotFound,
    Replayed,
    SimulatedClock,
    TimerView,
    VerificationReport,
    audit,
    export,
)
from complaintflow.rules.loader import default_rules_text, parse_rules
from complaintflow.scheduler import Scheduler
from complaintflow.storage import db
from complaintflow.storage.hashing import GENESIS, event_hash
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import rulesets as R
from complaintflow.timeline import render_timeline
from complaintflow.timers import Consent
from tests.conftest import new_pg_schema_url
from tests.support import (
    AFTER,
    ASSIGN,
    AUDITOR,
    CS,
    FEEDBACK,
    GM,
    QA,
    QM,
    REPORT,
    RESULT,
    TOP,
    complaint_fields,
)

SH = ZoneInfo("Asia/Shanghai")
COMPENSATION_PLAN = {
    "disposal_plan": "更换电机并赔偿停机损失",
    "disposal_measures": ["replace", "compensation"],
    "compensation_amount": "500",
}
DISSATISFIED = {
    "satisfaction_score": 60,
    "satisfaction": "dissatisfied",
    "revisit_note": "客户认为赔偿不足",
}


def local(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SH)


# -- the realistic walk ----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the engine showed right after one step."""

    moment: datetime
    label: str
    complaint: Complaint
    timers: list[TimerView]


def walk(engine: Engine, clock: SimulatedClock) -> tuple[str, list[Snapshot]]:
    """One complaint through the whole procedure, each step at its own instant."""
    scheduler = Scheduler(engine)
    snaps: list[Snapshot] = []
    number = ""

    def step(moment: datetime, label: str, action: Callable[[], Any]) -> None:
        nonlocal number
        clock.set(moment)
        result = action()
        if isinstance(result, Complaint) and not number:
            number = result.number
        snaps.append(Snapshot(moment, label, engine.get(number, CS), engine.timers(number)))

    def fire(trigger: str, actor: Any, data: dict[str, Any] | None = None) -> Callable[[], Any]:
        return lambda: engine.fire(number, trigger, actor, data)

    consent = Consent("张伟", local(3, 3, 14, 30), "phone", "客户同意等待复检")
    steps: list[tuple[datetime, str, Callable[[], Any]]] = [
        (
            local(3, 2, 9),
            "submit",
            lambda: engine.submit(
                complaint_fields(customer_demand=["replace", "onsite_visit"]), CS
            ),
        ),
        (local(3, 2, 9, 20), "respond", fire("respond", CS, {"response_note": "已致电客户"})),
        (local(3, 2, 10, 40), "tick (registration warning)", scheduler.tick),
        (local(3, 2, 11, 5), "tick (registration breach)", scheduler.tick),
        (local(3, 2, 11, 10), "record", fire("record", CS, {"readback_confirmed": True})),
        (local(3, 2, 11, 30), "confirm", fire("confirm", CS, ASSIGN)),
        (local(3, 2, 16), "tick (contact breach)", scheduler.tick),
        (local(3, 2, 16, 30), "contact", fire("contact_customer", QA, {"contact_note": "已联系"})),
        (local(3, 3, 10), "sample", fire("receive_sample", QA)),
        (
            local(3, 3, 15),
            "extend",
            lambda: engine.extend_timer(
                number, "whole_complaint", CS, 3, consent, reason="等待样品复检"
            ),
        ),
        (local(3, 4, 10), "tick", scheduler.tick),
        (
            local(3, 5, 9),
            "reinspection",
            fire("record_reinspection", QA, {"reinspection_result": "复检不合格"}),
        ),
        (local(3, 5, 11), "report", fire("submit_report", QA, REPORT)),
        (local(3, 6, 10), "plan with compensation", fire("propose_plan", QA, COMPENSATION_PLAN)),
        (local(3, 6, 11), "tick (major)", scheduler.tick),
        (local(3, 6, 14), "approve", fire("approve_plan", GM)),
        (local(3, 9, 9, 30), "resolve", fire("resolve", AFTER, RESULT)),
        (local(3, 9, 10), "sign", fire("sign_reply", TOP)),
        (local(3, 9, 11), "feed back", fire("feed_back", CS, FEEDBACK)),
        (local(3, 15, 12), "tick (revisit warning)", scheduler.tick),
        (local(3, 16, 10), "revisit", fire("revisit", CS, DISSATISFIED)),
        (local(3, 16, 11), "reopen", fire("reopen", QM, {"dispute_reason": "赔偿金额不足"})),
        (local(3, 20, 18), "tick (late)", scheduler.tick),
    ]
    for moment, label, action in steps:
        step(moment, label, action)
    return number, snaps


def timers_of_live(views: list[TimerView]) -> dict[tuple[str, int], dict[str, Any]]:
    return {
        (t.timer, t.run): {
            "status": t.status,
            "due_at": t.due_at,
            "started_at": t.started_at,
            "provisional": t.provisional,
            "warnings": t.warned,
            "breached_at": t.breached_at,
            "stopped_at": t.stopped_at,
            "remaining": t.remaining,
            "extensions": len(t.extensions),
        }
        for t in views
    }


def timers_of_replay(replayed: Replayed) -> dict[tuple[str, int], dict[str, Any]]:
    return {
        key: {
            "status": t.status,
            "due_at": t.due_at,
            "started_at": t.started_at,
            "provisional": t.provisional,
            "warnings": len(t.warnings),
            "breached_at": t.breached_at,
            "stopped_at": t.stopped_at,
            "remaining": t.remaining,
            "extensions": len(t.extensions),
        }
        for key, t in replayed.timers.items()
    }


def assert_same(
    replayed: Replayed, complaint: Complaint, timers: list[TimerView], where: str
) -> None:
    live = complaint.to_json()
    assert (replayed.state, replayed.version, replayed.severity) == (
        complaint.state,
        complaint.version,
        complaint.severity,
    ), where
    assert replayed.fields == live["fields"], where
    assert replayed.ruleset == complaint.ruleset, where
    assert replayed.received_at == complaint.received_at, where
    assert replayed.escalated_to == complaint.escalated_to, where
    assert timers_of_replay(replayed) == timers_of_live(timers), where
    assert len(replayed.events) == replayed.version, where


# -- chain surgery ---------------------------------------------------------------------------


def complaint_id(engine: Engine, number: str) -> int:
    with engine.database.connect() as conn:
        return int(conn.execute(sa.select(C.c.id).where(C.c.number == number)).scalar_one())


def rechain(engine: Engine, number: str) -> None:
    """Recompute every event hash of ``number``, its chain head and its facts column, as a
    forger who knows the hashing scheme would after editing or deleting events (seqs must
    be contiguous)."""
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:
        rows = conn.execute(sa.select(E).where(E.c.complaint_id == cid).order_by(E.c.seq)).all()
        prev = GENESIS
        for ev in rows:
            digest = event_hash(
                number=number,
                seq=ev.seq,
                type=ev.type,
                trigger=ev.trigger,
                from_state=ev.from_state,
                to_state=ev.to_state,
                actor_id=ev.actor_id,
                actor_roles=ev.actor_roles,
                actor_department=ev.actor_department,
                occurred_at=ev.occurred_at,
                payload=ev.payload,
                ruleset=ev.ruleset,
                schema_version=ev.schema_version,
                prev_hash=prev,
            )
            if (ev.prev_hash, ev.hash) != (prev, digest):
                conn.execute(
                    sa.update(E).where(E.c.id == ev.id).values(prev_hash=prev, hash=digest)
                )
            prev = digest
        last = rows[-1].seq
        conn.execute(
            sa.update(C).where(C.c.id == cid).values(head_seq=last, head_hash=prev, version=last,
                                                     facts=Engine.facts(conn, cid).to_text())
        )


def delete_event(engine: Engine, number: str, seq: int) -> None:
    """Delete one event, close the gap by renumbering the later ones, and re-chain."""
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:
        conn.execute(sa.delete(E).where(E.c.complaint_id == cid, E.c.seq == seq))
        later = conn.execute(
            sa.select(E.c.id, E.c.seq)
            .where(E.c.complaint_id == cid, E.c.seq > seq)
            .order_by(E.c.seq)
        ).all()
        for ev in later:
            conn.execute(sa.update(E).where(E.c.id == ev.id).values(seq=ev.seq - 1))
    rechain(engine, number)


def findings(report: VerificationReport) -> list[tuple[str | None, int | None, str]]:
    return [(f.number, f.seq, f.kind) for f in report.findings]


def drive(engine: Engine, number: str, steps: list[tuple[str, Any, dict[str, Any]]]) -> None:
    for trigger, actor, data in steps:
        engine.fire(number, trigger, actor, data)


TO_INVESTIGATED: list[tuple[str, Any, dict[str, Any]]] = [
    ("record", CS, {"readback_confirmed": True}),
    ("confirm", CS, ASSIGN),
    ("submit_report", QA, REPORT),
]


# -- replay ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Walked:
    engine: Engine
    number: str
    snaps: list[Snapshot]
    quiet: str  # a complaint just submitted after the walk: no breach, nothing fired


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def walked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Walked]:
    """The walk, once per backend, for the tests that only read (replay, export, timeline)."""
    drop: Callable[[], None] | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('walk') / 'walk.db'}"
    else:
        url, drop = new_pg_schema_url(request.getfixturevalue("pg_base_url"))
    clock = SimulatedClock(local(3, 2, 9))
    engine = Engine.open(url, clock=clock)
    try:
        number, snaps = walk(engine, clock)
        quiet = engine.submit(complaint_fields(), CS).number
        yield Walked(engine, number, snaps, quiet)
    finally:
        engine.close()
        if drop is not None:
            drop()


def test_replay_at_every_event_boundary_equals_what_the_engine_showed(walked: Walked) -> None:
    engine, number, snaps = walked.engine, walked.number, walked.snaps
    history = engine.history(number, CS)
    kinds = {e.type for e in history}
    assert {"timer_warning", "timer_breached", "customer_consent", "timer_extended"} <= kinds
    assert snaps[-1].complaint.state == "investigated"  # reopened
    assert any(s.complaint.severity == "major" for s in snaps)
    for snap in snaps:
        replayed = engine.replay(number, at=snap.moment, actor=CS)
        assert_same(replayed, snap.complaint, snap.timers, snap.label)
        assert replayed.at == snap.moment
        assert [e.hash for e in replayed.events] == [
            e.hash for e in history[: snap.complaint.version]
        ]
    by_moment = {s.moment: s for s in snaps}
    for ev in history:
        snap = by_moment[ev.occurred_at]  # every event happened at some step's instant
        replayed = engine.replay(number, at=ev.occurred_at, actor=CS)
        assert replayed.version >= ev.seq
        assert_same(replayed, snap.complaint, snap.timers, f"event {ev.seq} {ev.type}")
    # between two steps nothing changes but the remaining time
    mid = snaps[5].moment + (snaps[6].moment - snaps[5].moment) / 2
    between = engine.replay(number, at=mid, actor=CS)
    assert (between.state, between.version) == (
        snaps[5].complaint.state,
        snaps[5].complaint.version,
    )


def test_replay_without_an_instant_equals_the_live_complaint(walked: Walked) -> None:
    engine, number = walked.engine, walked.number
    replayed = engine.replay(number, actor=CS)
    assert replayed.at is None
    # the remaining time is counted at the last event, which is where the clock stands
    assert engine.now() == engine.history(number)[-1].occurred_at
    assert_same(replayed, engine.get(number, CS), engine.timers(number), "live")
    assert replayed.to_json()["events"] == [e.to_json() for e in engine.history(number, CS)]


def test_replay_never_reads_the_current_state_row(engine: Engine, clock: SimulatedClock) -> None:
    number = engine.submit(complaint_fields(), CS).number
    clock.advance(timedelta(minutes=5))
    drive(engine, number, TO_INVESTIGATED)
    before = engine.replay(number, actor=CS).to_json()
    with engine.database.begin() as conn:
        conn.execute(
            sa.update(C)
            .where(C.c.number == number)
            .values(
                state="closed",
                severity="major",
                version=99,
                fields=json.dumps({"customer_name": "someone else"}),
            )
        )
    assert engine.get(number, CS).state == "closed"  # the row really changed
    assert engine.replay(number, actor=CS).to_json() == before
    report = engine.verify()
    assert (number, 4, "state_mismatch") in findings(report)
    deep = engine.verify(deep=True)
    assert (number, 4, "state_mismatch") in findings(deep)


def test_replay_masks_personal_data_unless_the_actor_may_read_it(walked: Walked) -> None:
    engine, number = walked.engine, walked.number
    fields = complaint_fields()
    clear = engine.replay(number, actor=CS)
    for name in ("phone", "email", "contact_person", "address"):
        assert clear.fields[name] == fields[name]
    assert clear.events[0].payload["fields"]["phone"] == fields["phone"]
    for who in (AUDITOR, None):
        masked = engine.replay(number, actor=who)
        assert masked.fields["phone"] == "138****5678"
        assert masked.fields["email"] == "z***@example.cn"
        assert masked.fields["contact_person"] == "张***"
        assert masked.fields["customer_name"] == fields["customer_name"]  # not personal
        assert masked.events[0].payload["fields"]["phone"] == "138****5678"
        shown = json.dumps(masked.to_json(), ensure_ascii=False)
        assert "13812345678" not in shown and "zhang.wei@example.cn" not in shown
        # masking happens on the way out: the hashes are the stored ones
        assert [e.hash for e in masked.events] == [e.hash for e in clear.events]
        # the state and the clocks do not depend on who is looking
        assert (masked.state, masked.version, timers_of_replay(masked)) == (
            clear.state,
            clear.version,
            timers_of_replay(clear),
        )


def test_masked_views_do_not_name_the_customer_in_consent_records(walked: Walked) -> None:
    """The consent behind the walk's extension was given by the contact person 张伟, whose
    name is personal data (contact_person is ``personal: true``). An auditor's replay and
    export must not show it, not even inside the ``customer_consent`` event."""
    engine, number = walked.engine, walked.number
    consent = next(e for e in engine.history(number, CS) if e.type == "customer_consent")
    assert consent.payload["consent"]["given_by"] == "张伟"
    shown = json.dumps(engine.replay(number, actor=AUDITOR).to_json(), ensure_ascii=False)
    assert "张伟" not in shown
    _, text = export_text(engine, number=number, actor=AUDITOR)
    assert "张伟" not in text


def test_replay_refuses_bad_instants_and_unknown_numbers(walked: Walked) -> None:
    engine, number = walked.engine, walked.number
    received = engine.get(number).received_at
    with pytest.raises(InvalidInput) as info:
        engine.replay(number, at=received - timedelta(seconds=1))
    assert str(info.value).endswith(
        f"is before the complaint existed (received {engine.shown(received)})")
    assert f"({engine.zone.key})" in str(info.value) and "+00:00" not in str(info.value)
    assert engine.replay(number, at=received).version == 1  # the instant itself is fine
    with pytest.raises(NotFound):
        engine.replay("TS-2026-999999")
    with pytest.raises(NotFound):
        engine.replay("TS-2026-999999", at=received)
    with pytest.raises(InvalidInput):
        engine.replay(number, at=received.replace(tzinfo=None))
    with pytest.raises(InvalidInput):
        engine.replay(number, at="2026-03-02T09:00:00+08:00")  # type: ignore[arg-type]


HOLIDAY = "    overrides:\n      - {date: 2026-03-04, kind: holiday, note: 测试用假日}\n"


def test_replay_after_recomputed_deadlines_equals_the_live_clocks(
    engine: Engine, db_url: str, clock: SimulatedClock
) -> None:
    """A new holiday in a later rule version moves working-time deadlines of complaints
    still on the old version (``recompute_timers``); the replayed clocks, including the
    remaining working time, must be what the engine shows."""
    clock.set(local(3, 2, 10))
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED[:2])
    text = default_rules_text()
    anchor = "    official_through: 2026\n"
    assert text.count(anchor) == 1
    engine.close()
    clock.set(local(3, 3, 9))
    with Engine.open(
        db_url,
        rules=parse_rules(text.replace(anchor, HOLIDAY + anchor), "holiday.yaml"),
        clock=clock,
    ) as second:
        assert second.recompute_timers()
        assert second.history(number)[-1].type == "deadline_recomputed"
        assert_same(
            second.replay(number, actor=CS),
            second.get(number, CS),
            second.timers(number),
            "after recompute",
        )
        clock.set(local(3, 5, 10))
        later = second.replay(number, at=clock(), actor=CS)
        assert_same(later, second.get(number, CS), second.timers(number), "two days later")
        # deadlines passed meanwhile: until the scheduler has fired them, deep verification
        # rightly reports them as missed
        assert {f.kind for f in second.verify(deep=True).findings} == {"missed_breach"}
        Scheduler(second).tick()
        assert second.verify(deep=True).ok


# -- deep verification -----------------------------------------------------------------------


def test_deep_verification_is_clean_after_the_walk(walked: Walked) -> None:
    engine = walked.engine
    seen: list[int] = []
    deep = engine.verify(deep=True, progress=seen.append)
    assert deep.ok, deep.findings
    assert (deep.complaints, sum(seen)) == (2, 2)
    assert deep.events == sum(len(engine.history(n)) for n in (walked.number, walked.quiet))


def test_deep_verification_is_clean_on_a_database_left_to_its_clocks(
    engine: Engine, clock: SimulatedClock
) -> None:
    numbers = [
        engine.submit(complaint_fields(**extra), CS).number
        for extra in ({}, {"safety_issue": True}, {})
    ]
    drive(engine, numbers[1], TO_INVESTIGATED[:2])
    drive(engine, numbers[2], TO_INVESTIGATED)
    clock.set(local(3, 2, 21))  # after hours: an urgent complaint goes to the GM at once
    numbers.append(engine.submit(complaint_fields(urgent=True), CS).number)
    clock.advance(timedelta(days=40))  # every clock breaches, whole_complaint raises severity
    report = Scheduler(engine).tick()
    assert report.breaches > 0
    assert {engine.get(n).severity for n in numbers} == {"major"}
    assert engine.get(numbers[3]).escalated_to == "general_manager"
    for number in numbers:  # replay follows raised severities, re-derived clocks, reassignment
        assert_same(
            engine.replay(number, actor=CS), engine.get(number, CS), engine.timers(number), number
        )
    deep = engine.verify(deep=True)
    assert deep.ok, deep.findings
    assert deep.complaints == 4
    # since= limits the deep part to recently changed complaints; the chains are all checked
    assert engine.verify(deep=True, since=engine.now()).ok


def test_deep_verification_finds_an_actor_whose_role_was_not_allowed(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED)
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:  # "record" (seq 2) now claims the quality role
        assert (
            conn.execute(
                sa.update(E)
                .where(E.c.complaint_id == cid, E.c.seq == 2)
                .values(actor_roles=json.dumps(["quality"]))
            ).rowcount
            == 1
        )
    assert [f.kind for f in engine.verify().findings] == ["edited"]  # before re-chaining
    rechain(engine, number)
    assert engine.verify().ok  # the plain chain check is fooled
    deep = engine.verify(deep=True)
    assert findings(deep) == [(number, 2, "illegal_transition")]
    assert "[role]" in deep.findings[0].detail
    assert "'record'" in deep.findings[0].detail


def test_deep_verification_finds_a_missing_approval(engine: Engine, clock: SimulatedClock) -> None:
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED)
    engine.fire(number, "propose_plan", QA, COMPENSATION_PLAN)  # compensation: needs the GM
    approve = engine.fire(number, "approve_plan", GM).version
    resolve = engine.fire(number, "resolve", AFTER, RESULT).version
    assert engine.verify(deep=True).ok
    delete_event(engine, number, approve)
    assert engine.verify().ok
    assert [e.trigger for e in engine.history(number)].count("approve_plan") == 0
    deep = engine.verify(deep=True)
    assert findings(deep) == [(number, resolve - 1, "illegal_transition")]
    assert "[approval]" in deep.findings[0].detail


def test_deep_verification_finds_a_breach_that_never_fired(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number  # first response due in 1 hour
    clock.advance(timedelta(minutes=44))  # its warning is due after 45 minutes
    assert engine.verify(deep=True).ok
    clock.advance(timedelta(minutes=15))
    deep = engine.verify(deep=True)
    assert findings(deep) == [(number, 1, "missed_warning")]  # the submission started it
    assert "first_response run 1 was due (warning 1) 2026-03-02T09:45:00+08:00" \
        in deep.findings[0].detail  # in the rules' zone
    clock.advance(timedelta(hours=3))  # no scheduler ran
    deep = engine.verify(deep=True)
    assert (number, 1, "missed_breach") in findings(deep)
    assert any("first_response" in f.detail for f in deep.findings)
    assert engine.verify().ok  # the plain check cannot know


def test_deep_verification_finds_a_deleted_breach_event(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED[:1])  # recorded: registration stopped
    clock.advance(timedelta(hours=3))
    Scheduler(engine).tick()
    history = engine.history(number)
    breaches = [e for e in history if e.type == "timer_breached"]
    assert [e.payload["timer"] for e in breaches] == ["first_response"]
    assert engine.verify(deep=True).ok
    delete_event(engine, number, breaches[0].seq)
    assert engine.verify().ok
    deep = engine.verify(deep=True)
    assert findings(deep) == [(number, 1, "missed_breach")]
    assert "first_response" in deep.findings[0].detail


def forge(engine: Engine, number: str, seq: int,
          payload: Callable[[dict[str, Any]], None] | None = None,
          occurred_at: datetime | None = None) -> None:
    """Edit event ``seq`` (its payload in place, or its instant) and re-chain."""
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:
        row = conn.execute(sa.select(E).where(E.c.complaint_id == cid, E.c.seq == seq)).one()
        values: dict[str, Any] = {}
        if payload is not None:
            edited = json.loads(row.payload)
            payload(edited)
            values["payload"] = json.dumps(edited, ensure_ascii=False)
        if occurred_at is not None:
            values["occurred_at"] = occurred_at
        conn.execute(sa.update(E).where(E.c.id == row.id).values(**values))
    rechain(engine, number)


def fired(engine: Engine, number: str) -> dict[str, int]:
    """The seq of first_response's warning and breach events, by type."""
    return {e.type: e.seq for e in engine.history(number)
            if e.type in ("timer_warning", "timer_breached")
            and e.payload["timer"] == "first_response"}


def test_deep_verification_finds_a_deleted_warning_event(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number  # first response: warning 09:45
    clock.advance(timedelta(hours=3))
    Scheduler(engine).tick()
    seqs = fired(engine, number)
    assert list(seqs) == ["timer_warning", "timer_breached"]
    assert engine.verify(deep=True).ok
    delete_event(engine, number, seqs["timer_warning"])
    assert engine.verify().ok
    deep = engine.verify(deep=True)
    assert findings(deep) == [(number, 1, "missed_warning")]  # the submission started it
    assert "first_response run 1 was due (warning 1) 2026-03-02T09:45:00+08:00" \
        in deep.findings[0].detail


def test_deep_verification_finds_a_moved_due_time(engine: Engine, clock: SimulatedClock) -> None:
    """The recorded due time moved a day later in the submission, its warning and breach
    deleted: nothing the history copies says the clock was late, its ledger does."""
    number = engine.submit(complaint_fields(), CS).number
    clock.advance(timedelta(hours=3))
    Scheduler(engine).tick()
    assert engine.verify(deep=True).ok

    def later(payload: dict[str, Any]) -> None:
        for item in payload["timers"]["started"]:
            if item["timer"] == "first_response":
                moved = datetime.fromisoformat(item["due_at"]) + timedelta(days=1)
                item["due_at"] = moved.isoformat().replace("+00:00", "Z")

    forge(engine, number, 1, later)
    delete_event(engine, number, fired(engine, number)["timer_breached"])
    delete_event(engine, number, fired(engine, number)["timer_warning"])
    assert engine.verify().ok
    deep = engine.verify(deep=True)
    assert findings(deep) == [(number, 1, "wrong_due"), (number, 1, "missed_warning"),
                              (number, 1, "missed_breach")]
    assert "recorded due 2026-03-03T10:00:00+08:00, its ledger gives " \
        "2026-03-02T10:00:00+08:00" in deep.findings[0].detail


def test_deep_verification_finds_a_moved_breach(engine: Engine, clock: SimulatedClock) -> None:
    """The breach event claims a due time a day later (as if the clock had been moved),
    recorded a day later: its ledger says otherwise."""
    number = engine.submit(complaint_fields(), CS).number
    clock.advance(timedelta(hours=3))
    Scheduler(engine).tick()
    breach = fired(engine, number)["timer_breached"]

    def later(payload: dict[str, Any]) -> None:
        moved = datetime.fromisoformat(payload["due_at"]) + timedelta(days=1)
        payload["due_at"] = moved.isoformat().replace("+00:00", "Z")

    clock.advance(timedelta(days=1))
    forge(engine, number, breach, later, occurred_at=local(3, 3, 12))
    assert engine.verify().ok
    assert findings(engine.verify(deep=True)) == [(number, breach, "breach_mismatch")]


def test_deep_verification_finds_a_warning_the_clock_does_not_imply(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number
    clock.advance(timedelta(hours=3))
    Scheduler(engine).tick()
    warning = fired(engine, number)["timer_warning"]
    forge(engine, number, warning, lambda p: p.update(index=7))
    assert engine.verify().ok
    deep = engine.verify(deep=True)
    assert findings(deep) == [(number, warning, "unexpected_warning"),
                              (number, 1, "missed_warning")]
    forge(engine, number, warning, lambda p: p.update(index=1), occurred_at=local(3, 2, 9, 40))
    assert findings(engine.verify(deep=True)) == [(number, warning, "early_warning")]


def test_deep_verification_finds_an_extension_after_the_due_instant(
    engine: Engine, clock: SimulatedClock
) -> None:
    """The engine refuses these live; a forged history can still hold one."""
    number = engine.submit(complaint_fields(), CS).number  # first_response due 10:00
    clock.set(local(3, 2, 9, 30))
    engine.extend_timer(number, "first_response", CS, 1, Consent(
        given_by="张伟", given_at=local(3, 2, 9, 20), channel="phone", reason="客户同意"),
        reason="客户同意延期")
    consent, extended = 2, 3
    assert [e.type for e in engine.history(number)][consent - 1:] == [
        "customer_consent", "timer_extended"]
    assert engine.verify(deep=True).ok

    def given_late(payload: dict[str, Any]) -> None:
        payload["consent"]["given_at"] = "2026-03-02T02:05:00.000000Z"  # 10:05 Shanghai

    forge(engine, number, consent, given_late)
    deep = engine.verify(deep=True)
    assert findings(deep) == [(number, extended, "late_extension")]
    assert "consent given 2026-03-02T10:05:00+08:00" in deep.findings[0].detail
    forge(engine, number, consent, lambda p: p["consent"].update(
        given_at="2026-03-02T01:20:00.000000Z"))
    assert engine.verify(deep=True).ok
    clock.set(local(3, 2, 10, 10))
    forge(engine, number, consent, occurred_at=local(3, 2, 10, 10))
    forge(engine, number, extended, occurred_at=local(3, 2, 10, 10))
    assert engine.verify().ok
    deep = engine.verify(deep=True)
    # what was due before the extension stays owed (sla.replace_deadlines) and never fired
    assert findings(deep) == [(number, extended, "late_extension"),
                              (number, extended, "missed_warning"),
                              (number, extended, "missed_breach")]
    assert "extended at 2026-03-02T10:10:00+08:00, at or after its due instant " \
        "2026-03-02T10:00:00+08:00" in deep.findings[0].detail


def test_deep_verification_finds_a_transition_that_went_elsewhere(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED)
    last = engine.get(number, CS).version  # submit_report: confirmed -> investigated
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:  # history and row now say it went to "resolved"
        conn.execute(
            sa.update(E).where(E.c.complaint_id == cid, E.c.seq == last).values(to_state="resolved")
        )
        conn.execute(sa.update(C).where(C.c.id == cid).values(state="resolved"))
    rechain(engine, number)
    assert engine.verify().ok
    deep = engine.verify(deep=True)
    assert findings(deep) == [(number, last, "wrong_target")]
    assert "'investigated'" in deep.findings[0].detail and "'resolved'" in deep.findings[0].detail


def test_deep_verification_finds_a_forged_severity(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED[:1])
    assert engine.get(number, CS).severity == "general"
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:  # "record" now claims the complaint became major
        payload = json.loads(
            conn.execute(
                sa.select(E.c.payload).where(E.c.complaint_id == cid, E.c.seq == 2)
            ).scalar_one()
        )
        payload["severity"] = "major"
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        conn.execute(sa.update(E).where(E.c.complaint_id == cid, E.c.seq == 2).values(payload=text))
        conn.execute(sa.update(C).where(C.c.id == cid).values(severity="major"))
    rechain(engine, number)
    assert engine.verify().ok
    deep = engine.verify(deep=True)
    assert findings(deep) == [(number, 2, "wrong_severity")]
    assert "'general'" in deep.findings[0].detail and "'major'" in deep.findings[0].detail


def test_deep_verification_finds_a_hand_edited_current_row(engine: Engine) -> None:
    edited_state = engine.submit(complaint_fields(), CS).number
    edited_fields = engine.submit(complaint_fields(), CS).number
    drive(engine, edited_state, TO_INVESTIGATED[:1])
    drive(engine, edited_fields, TO_INVESTIGATED[:1])
    with engine.database.begin() as conn:
        conn.execute(sa.update(C).where(C.c.number == edited_state).values(state="confirmed"))
        stored = json.loads(
            conn.execute(sa.select(C.c.fields).where(C.c.number == edited_fields)).scalar_one()
        )
        stored["claimed_amount"] = "1"
        conn.execute(
            sa.update(C)
            .where(C.c.number == edited_fields)
            .values(
                fields=json.dumps(stored, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            )
        )
    deep = engine.verify(deep=True)
    assert sorted(findings(deep)) == sorted(
        [
            (edited_state, 2, "state_mismatch"),
            (edited_fields, 2, "fields_mismatch"),
        ]
    )


# -- exports ---------------------------------------------------------------------------------


def export_text(engine: Engine, fmt: str = "jsonl", **kwargs: Any) -> tuple[int, str]:
    out = io.StringIO()
    result = export.export_events(engine, out, fmt, **kwargs)
    return result.events, out.getvalue()


def event_rows(text: str) -> list[dict[str, Any]]:
    """The event rows of a JSON Lines export (its last line is the end record)."""
    *rows, end = (json.loads(line) for line in text.splitlines())
    assert set(end) == {export.END_TYPE}
    assert end[export.END_TYPE]["events"] == len(rows)
    return rows


def test_exports_round_trip_through_the_offline_checker(walked: Walked) -> None:
    engine = walked.engine
    total = len(engine.history(walked.number)) + len(engine.history(walked.quiet))
    for fmt in ("jsonl", "csv"):
        count, text = export_text(engine, fmt, actor=CS)
        assert count == total
        check = export.check_export(text.splitlines(keepends=True), fmt)
        assert check.ok, check.findings
        assert (check.rows, check.complaints, check.recomputed) == (total, 2, total)
    _, text = export_text(engine, "csv", actor=CS)
    *rows, end = csv.DictReader(io.StringIO(text))
    assert tuple(rows[0]) == export.COLUMNS
    assert {r["masked"] for r in rows} == {"False"}
    assert end["type"] == export.END_TYPE and end["seq"] == str(total)
    assert json.loads(end["payload"])["events"] == total


def test_a_tampered_export_line_is_caught(walked: Walked) -> None:
    engine, number = walked.engine, walked.number
    _, text = export_text(engine, actor=CS)
    lines = text.splitlines(keepends=True)
    row = json.loads(lines[4])
    payload = json.loads(row["payload"])
    payload["lateness_seconds"] = 0.0
    row["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    edited = [*lines[:4], json.dumps(row, ensure_ascii=False) + "\n", *lines[5:]]
    check = export.check_export(edited)
    assert [(f.number, f.seq, f.kind) for f in check.findings] == [(number, 5, "edited")]
    dropped = lines[:6] + lines[7:]
    assert [(f.number, f.seq, f.kind) for f in export.check_export(dropped).findings] == [
        (number, 8, "reordered"), (None, None, "count_mismatch"), (None, None, "digest_mismatch")
    ]
    reordered_csv = export_text(engine, "csv", actor=CS)[1].splitlines(keepends=True)
    reordered_csv[2], reordered_csv[3] = reordered_csv[3], reordered_csv[2]
    assert not export.check_export(reordered_csv, "csv").ok


def kinds(lines: list[str], fmt: str = "jsonl") -> list[tuple[str | None, int | None, str]]:
    return [(f.number, f.seq, f.kind) for f in export.check_export(lines, fmt).findings]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_missing_rows_at_either_end_is_caught(walked: Walked, fmt: str) -> None:
    """Rows removed where no link can tell (a complaint's first or last event, the end of
    the file) are caught by the end record."""
    engine = walked.engine
    _, text = export_text(engine, fmt, actor=CS)
    lines = text.splitlines(keepends=True)
    head = lines[:1] if fmt == "csv" else []
    body, end = lines[len(head):-1], lines[-1]
    numbers = [str(json.loads(line)["number"]) if fmt == "jsonl" else line.split(",")[0]
               for line in body]
    first_of_second = numbers.index(walked.quiet)
    assert numbers[0] == walked.number and first_of_second > 0
    assert kinds(lines, fmt) == []
    # the very first row: the complaint now starts at event 2
    assert kinds([*head, *body[1:], end], fmt) == [
        (None, None, "count_mismatch"), (None, None, "digest_mismatch"),
        (walked.number, 2, "truncated")]
    # the first complaint's last row: no link breaks
    cut = first_of_second - 1
    assert kinds([*head, *body[:cut], *body[cut + 1:], end], fmt) == [
        (None, None, "count_mismatch"), (None, None, "digest_mismatch")]
    # the file's last event, end record kept
    assert kinds([*head, *body[:-1], end], fmt) == [
        (None, None, "count_mismatch"), (None, None, "digest_mismatch")]
    # the file cut short: no end record
    assert kinds([*head, *body[:-3]], fmt) == [(None, None, "truncated")]
    # rows after the end record
    assert kinds([*head, *body, end, body[0]], fmt) == [(None, None, "after_end")]
    # an end record that does not parse
    broken = end.replace('"digest"', '"digets"') if fmt == "jsonl" else end.replace(
        "digest", "digets")
    assert kinds([*head, *body, broken], fmt) == [(None, None, "bad_end")]


def test_a_date_range_export_may_start_a_complaint_late(engine: Engine,
                                                        clock: SimulatedClock) -> None:
    number = engine.submit(complaint_fields(), CS).number
    clock.advance(timedelta(hours=1))
    since = engine.now()
    drive(engine, number, TO_INVESTIGATED[:2])
    _, text = export_text(engine, since=since, actor=CS)
    rows = event_rows(text)
    assert [r["seq"] for r in rows] == [2, 3]
    check = export.check_export(text.splitlines())
    assert check.ok, check.findings
    assert check.end is not None and check.end["selection"]["since"] == since.isoformat(
        timespec="microseconds")


def test_a_masked_export_for_an_auditor(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    drive(
        engine,
        number,
        [
            ("record", CS, {"readback_confirmed": True, "phone": "13900001111"}),
            *TO_INVESTIGATED[1:],
        ],
    )
    count, text = export_text(engine, actor=AUDITOR)
    rows = event_rows(text)
    assert count == len(rows) == 4
    masked = [r for r in rows if r["masked"]]
    assert [r["seq"] for r in masked] == [1, 2]  # submission and registration carry contacts
    submitted = json.loads(rows[0]["payload"])
    assert submitted["fields"]["phone"] == "138****5678"
    assert json.loads(rows[1]["payload"])["set"]["phone"] == "139****1111"
    assert not {"13812345678", "13900001111", "zhang.wei@example.cn"} & set(
        re.findall(r"[\w.@]+", text)
    )
    check = export.check_export(text.splitlines())
    assert check.ok  # the links still check
    assert check.recomputed == 2  # only the unmasked rows can be recomputed


def test_an_export_of_one_complaint_and_of_a_date_range(
    engine: Engine, clock: SimulatedClock
) -> None:
    first = engine.submit(complaint_fields(), CS).number
    clock.advance(timedelta(days=1))
    second = engine.submit(complaint_fields(), CS).number
    middle = engine.now()
    drive(engine, first, TO_INVESTIGATED[:1])
    clock.advance(timedelta(days=1))
    end = engine.now()
    drive(engine, second, TO_INVESTIGATED)
    count, text = export_text(engine, number=second, actor=CS)
    rows = event_rows(text)
    assert count == 4 and {r["number"] for r in rows} == {second}
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert export.check_export(text.splitlines()).ok
    count, text = export_text(engine, since=middle, until=end, actor=CS)
    rows = event_rows(text)
    assert [(r["number"], r["seq"]) for r in rows] == [(first, 2), (second, 1)]
    assert export.check_export(text.splitlines()).ok
    with pytest.raises(NotFound):
        export_text(engine, number="TS-2026-999999")
    with pytest.raises(InvalidInput):
        export_text(engine, since=middle.replace(tzinfo=None))
    out = io.StringIO()
    with pytest.raises(InvalidInput) as info:  # refused before anything is written
        export.export_events(engine, out, "csv", since=end, until=middle)
    assert info.value.problems[0].field == "until" and out.getvalue() == ""
    assert export_text(engine, since=middle, until=middle)[0] == 0  # empty, not wrong
    with pytest.raises(InvalidInput):
        export_text(engine, "xml")


@pytest.mark.parametrize(("column", "stored"), [("payload", "{bad"), ("payload", "[1]"),
                                               ("actor_roles", "quality")])
def test_a_stored_event_that_is_not_json_is_an_integrity_error_wherever_it_is_read(
    engine: Engine, tmp_path: Path, column: str, stored: str
) -> None:
    """An edited payload or roles column crashed history, replay and export with the JSON
    parser's own exception, and the export deleted the file it was to replace."""
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED)
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:
        conn.execute(sa.update(E).where(E.c.complaint_id == cid, E.c.seq == 3)
                     .values({column: stored}))
    target = tmp_path / "old.jsonl"
    target.write_text("precious\n")
    for read in (lambda: engine.history(number), lambda: engine.replay(number),
                 lambda: engine.replay(number, actor=QM),
                 lambda: export.export_events(engine, io.StringIO())):
        with pytest.raises(IntegrityError) as info:
            read()
        assert (info.value.number, info.value.seq) == (number, 3)
        assert f"event 3 of {number}: its stored " in str(info.value)
    with pytest.raises(IntegrityError), export.open_destination(target) as out:
        export.export_events(engine, out)
    assert target.read_text() == "precious\n"
    assert not engine.verify().ok


def test_an_unwritable_destination_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info, \
            export.open_destination(tmp_path / "no" / "such" / "dir" / "out.jsonl"):
        pass
    assert info.value.problems[0].field == "output"
    with pytest.raises(InvalidInput) as info, export.open_destination(tmp_path):
        pass
    assert "it is a directory" in str(info.value)
    with export.open_destination(tmp_path / "ok.jsonl") as out:
        out.write("")
    assert (tmp_path / "ok.jsonl").read_text() == ""


def test_an_export_replaces_a_file_only_when_it_is_complete(tmp_path: Path) -> None:
    """An error in the middle used to truncate and then delete an existing file."""
    target = tmp_path / "old.jsonl"
    target.write_text("precious\n")
    target.chmod(0o640)
    with pytest.raises(RuntimeError), export.open_destination(target) as out:
        out.write("half an export\n")
        raise RuntimeError("the database went away")
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl"]  # no partial left
    with export.open_destination(target) as out:
        out.write("new\n")
        assert target.read_text() == "precious\n"  # until the block ends
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl"]


# -- timeline --------------------------------------------------------------------------------

REFERENCE = re.compile(
    r"""(?:\bsrc\s*=|\bhref\s*=|<link\b|<script\b|@import|url\(|https?://)""", re.IGNORECASE
)
SVG_NAMESPACE = 'xmlns="http://www.w3.org/2000/svg"'


def test_the_timeline_is_one_self_contained_html_document(walked: Walked) -> None:
    engine, number = walked.engine, walked.number
    page = render_timeline(engine, number, CS)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<html") == 1 and page.rstrip().endswith("</html>")
    # the SVG namespace is a name, not a reference; nothing else may point elsewhere
    assert REFERENCE.findall(page.replace(SVG_NAMESPACE, "")) == []
    assert number in page
    for ev in engine.history(number):
        assert ev.actor_id in page
    assert 'class="breachmark"' in page and 'class="breach"' in page
    quiet = walked.quiet
    calm = render_timeline(engine, quiet, AUDITOR)
    assert quiet in calm and 'class="breachmark"' not in calm
    assert REFERENCE.findall(calm.replace(SVG_NAMESPACE, "")) == []


# -- rule-set versions -----------------------------------------------------------------------

BUDGET_OLD = (
    "extend_roles: [customer_service, department_manager]\n    duration: {working_days: 15}"
)
BUDGET_NEW = (
    "extend_roles: [customer_service, department_manager]\n    duration: {working_days: 20}"
)


def changed_rules(tmp_path: Path) -> Path:
    text = default_rules_text()
    assert text.count(BUDGET_OLD) == 1
    path = tmp_path / "rules-v2.yaml"
    path.write_text(text.replace(BUDGET_OLD, BUDGET_NEW), encoding="utf-8")
    return path


def test_rule_set_versions_are_listed_and_diffed(
    engine: Engine, db_url: str, clock: SimulatedClock, tmp_path: Path
) -> None:
    old = engine.rules.version
    number = engine.submit(complaint_fields(), CS).number
    engine.close()
    clock.advance(timedelta(minutes=30))  # no warning due yet
    with Engine.open(
        db_url, rules=changed_rules(tmp_path), clock=clock, loaded_by="admin"
    ) as second:
        new = second.rules.version
        assert new != old
        listed = audit.rulesets(second)
        assert [r.hash for r in listed] == [old, new]
        assert [r.complaints for r in listed] == [1, 0]
        assert listed[1].loaded_by == "admin"
        assert listed[1].source.endswith("rules-v2.yaml")
        diff = audit.ruleset_diff(second, old[:8], new[:12])
        assert "-    duration: {working_days: 15}" in diff.splitlines()
        assert "+    duration: {working_days: 20}" in diff.splitlines()
        assert diff.startswith(f"--- {old[:12]}")
        assert audit.ruleset_diff(second, old, old) == ""
        # the old complaint stays on its version; a new one starts on the new version
        assert second.get(number).ruleset == old
        assert second.submit(complaint_fields(), CS).ruleset == new
        assert second.replay(number).ruleset == old
        assert second.verify(deep=True).ok


def test_resolve_hash_refuses_short_unknown_and_ambiguous_prefixes(engine: Engine) -> None:
    real = engine.rules.version
    unknown = "abcdef" if not real.startswith("abcdef") else "fedcba"
    twin = real[:10] + ("0" if real[10] != "0" else "1") * 54
    with engine.database.begin() as conn:
        conn.execute(
            sa.insert(R).values(
                hash=twin,
                name="forged",
                source="x",
                text="x",
                loaded_at=engine.now(),
                loaded_by=None,
            )
        )
    with db.read(engine.database) as conn:
        assert audit.resolve_hash(conn, real[:11]) == real
        assert audit.resolve_hash(conn, real.upper()[:12]) == real
        with pytest.raises(InvalidInput, match="at least 6"):
            audit.resolve_hash(conn, real[:5])
        with pytest.raises(InvalidInput, match="matches 2"):
            audit.resolve_hash(conn, real[:8])
        with pytest.raises(NotFound):
            audit.resolve_hash(conn, unknown)
        with pytest.raises(InvalidInput):
            audit.resolve_hash(conn, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        audit.ruleset_diff(engine, real[:8], real)
