"""The history facts kept on the complaint row (``complaints.facts``, migration 0003), both
backends: after every write they equal a replay of the whole history, a NULL column (rows
written before 0003) falls back to the replay and is filled by the next transition, and the
guards read the same facts either way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from complaintflow import Actor, Engine, SeparationOfDuties, SimulatedClock
from complaintflow.scheduler import Scheduler
from complaintflow.states.conditions import Facts
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import events as E
from tests.support import AFTER, CS, GM, QA, complaint_fields

APPROVER = Actor("gm.qa", ["quality", "general_manager"])  # may propose AND approve
STEPS: list[tuple[str, Actor, dict[str, Any]]] = [
    ("record", CS, {"readback_confirmed": True}),
    ("confirm", CS, {"responsible_department": "quality", "handler": "wang.qa"}),
    ("submit_report", QA, {"root_cause": "process", "responsibility": "company",
                           "investigation_report": "绕组浸漆不良导致温升偏高"}),
    ("propose_plan", APPROVER, {"disposal_plan": "更换电机", "disposal_measures": ["replace"]}),
    ("approve_plan", GM, {}),
    ("resolve", AFTER, {"disposal_result": "已更换新电机"}),
    ("feed_back", CS, {"customer_feedback": "已电话告知客户处理结果"}),
    ("revisit", CS, {"satisfaction_score": 60, "satisfaction": "dissatisfied",
                     "revisit_note": "客户不满意"}),
    ("reopen", CS, {"dispute_reason": "异响仍在"}),  # back to investigation
]


def stored(engine: Engine, number: str) -> tuple[str | None, Facts]:
    """The facts column and the facts replayed from the history."""
    with engine.database.connect() as conn:
        row = conn.execute(sa.select(C.c.id, C.c.facts).where(C.c.number == number)).one()
        return row.facts, Engine.facts(conn, row.id)


def assert_column_matches_history(engine: Engine, number: str) -> None:
    text, replayed = stored(engine, number)
    assert text is not None
    assert Facts.from_text(text) == replayed


def test_the_column_equals_the_replayed_history_after_every_write(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number
    assert_column_matches_history(engine, number)
    for trigger, actor, data in STEPS:
        clock.advance(timedelta(days=6) if trigger == "revisit" else timedelta(hours=4))
        engine.fire(number, trigger, actor, data)
        assert_column_matches_history(engine, number)
    assert engine.get(number).state == "investigated"
    # non-transition events (breaches, warnings) leave the facts as they are
    clock.advance(timedelta(days=60))
    assert Scheduler(engine).tick().fired > 0
    assert engine.history(number)[-1].trigger is None
    assert_column_matches_history(engine, number)
    text, _ = stored(engine, number)
    facts = Facts.from_text(text or "")
    assert facts.count["revisit"] == 1 and facts.last_actor["propose_plan"] == APPROVER.id
    assert facts.entered_seq == len(STEPS) + 1  # the reopen
    assert engine.verify().ok


def test_a_null_column_is_replayed_and_filled_by_the_next_transition(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number
    for trigger, actor, data in STEPS[:4]:
        clock.advance(timedelta(hours=4))
        engine.fire(number, trigger, actor, data)
    with engine.database.begin() as conn:
        conn.execute(sa.update(C).where(C.c.number == number).values(facts=None))
    # four eyes: the guards still know who proposed the plan
    with pytest.raises(SeparationOfDuties):
        engine.fire(number, "approve_plan", APPROVER)
    assert stored(engine, number)[0] is None  # a refusal writes nothing
    options = {o.trigger: o for o in engine.available_triggers(number, APPROVER)}
    assert not options["approve_plan"].allowed
    engine.fire(number, "approve_plan", GM)
    assert_column_matches_history(engine, number)


def test_text_round_trip() -> None:
    facts = Facts()
    facts.record(1, None, "li.na", None, "received")
    facts.record(2, "record", "li.na", "received", "recorded",
                 datetime(2026, 3, 2, 1, 0, 0, 123456, tzinfo=UTC))
    facts.record(3, "note", "王芳", "recorded", "recorded",
                 datetime(2026, 3, 2, 9, 0, tzinfo=timezone(timedelta(hours=8))))
    again = Facts.from_text(facts.to_text())
    assert again == facts
    assert again.last_time["note"].utcoffset() == timedelta(0)
    assert again.to_text() == facts.to_text()
    assert Facts.from_text(Facts().to_text()) == Facts()


def test_a_column_left_behind_by_another_writer_is_caught_up_from_the_events_after_it(
    engine: Engine, clock: SimulatedClock
) -> None:
    """A writer that does not keep the column (an older release still running while the
    database is upgraded) appends a transition and leaves the column as it was: the next
    fire folds in the events after the column's last one, so the guards still see it."""
    number = engine.submit(complaint_fields(), CS).number
    for trigger, actor, data in STEPS[:4]:  # propose_plan by gm.qa
        clock.advance(timedelta(hours=4))
        engine.fire(number, trigger, actor, data)
    behind, _ = stored(engine, number)
    clock.advance(timedelta(hours=1))
    engine.fire(number, "propose_plan", QA, {"disposal_plan": "维修电机",
                                             "disposal_measures": ["repair"]})  # wang.qa
    with engine.database.begin() as conn:  # what the other writer leaves on the row
        conn.execute(sa.update(C).where(C.c.number == number).values(facts=behind))
    # gm.qa may approve only because wang.qa proposed last, which the column does not say
    engine.fire(number, "approve_plan", APPROVER)
    assert_column_matches_history(engine, number)
    text, _ = stored(engine, number)
    facts = Facts.from_text(text or "")
    assert facts.count["propose_plan"] == 2 and facts.through == engine.get(number).version


def test_a_stale_column_never_lets_the_last_proposer_approve(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number
    for trigger, actor, data in STEPS[:3]:
        clock.advance(timedelta(hours=4))
        engine.fire(number, trigger, actor, data)
    engine.fire(number, "propose_plan", QA, {"disposal_plan": "维修电机",
                                             "disposal_measures": ["repair"]})
    behind, _ = stored(engine, number)
    engine.fire(number, "propose_plan", APPROVER, {"disposal_plan": "更换电机",
                                                  "disposal_measures": ["replace"]})
    with engine.database.begin() as conn:
        conn.execute(sa.update(C).where(C.c.number == number).values(facts=behind))
    with pytest.raises(SeparationOfDuties):
        engine.fire(number, "approve_plan", APPROVER)
    assert stored(engine, number)[0] == behind  # a refusal writes nothing


def _set_facts(engine: Engine, number: str, text: str | None) -> None:
    with engine.database.begin() as conn:
        conn.execute(sa.update(C).where(C.c.number == number).values(facts=text))


def _confirmed(engine: Engine, clock: SimulatedClock) -> str:
    """A complaint recorded and confirmed (three events), an hour apart."""
    number = engine.submit(complaint_fields(), CS).number
    for trigger, actor, data in STEPS[:2]:
        clock.advance(timedelta(hours=1))
        engine.fire(number, trigger, actor, data)
    return number


def _fact_findings(engine: Engine) -> list[tuple[str | None, int | None, str]]:
    return [(f.number, f.seq, f.kind) for f in engine.verify().findings]


def test_verify_reports_a_forged_facts_column(engine: Engine, clock: SimulatedClock) -> None:
    """Separation of duties reads ``last_actor`` from the column: a forged one is found by
    plain verification, at the event the column says it folded in."""
    number = _confirmed(engine, clock)
    text, _ = stored(engine, number)
    assert text is not None and engine.verify().ok
    forged = Facts.from_text(text)
    forged.last_actor["confirm"] = "someone.else"
    _set_facts(engine, number, forged.to_text())
    report = engine.verify()
    assert _fact_findings(engine) == [(number, 3, "facts_mismatch")]
    assert "someone.else" in report.findings[0].detail


def test_verify_facts_column_behind_null_unparseable_or_ahead(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = _confirmed(engine, clock)
    behind = Facts()
    with engine.database.connect() as conn:
        cid = conn.execute(sa.select(C.c.id).where(C.c.number == number)).scalar_one()
        for ev in conn.execute(sa.select(E).where(E.c.complaint_id == cid, E.c.seq <= 2)
                               .order_by(E.c.seq)):
            behind.record(ev.seq, ev.trigger, ev.actor_id, ev.from_state, ev.to_state,
                          ev.occurred_at)
    assert behind.through == 2
    _set_facts(engine, number, behind.to_text())  # legal: the engine catches up
    assert engine.verify().ok
    _set_facts(engine, number, None)  # a row from before migration 0003
    assert engine.verify().ok
    _set_facts(engine, number, "{not json")
    assert _fact_findings(engine) == [(number, 3, "facts_mismatch")]
    _, full = stored(engine, number)
    full.through = 7
    _set_facts(engine, number, full.to_text())
    assert _fact_findings(engine) == [(number, 3, "facts_mismatch")]
