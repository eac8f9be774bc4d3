"""Every way a caller can be refused, on both backends: the specific exception, its facts,
and proof that nothing was stored (history, version, state, numbering)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from complaintflow import (
    Actor,
    ApprovalMissing,
    Complaint,
    ConcurrentUpdate,
    ConditionFailed,
    Engine,
    IdempotencyConflict,
    InvalidInput,
    MissingFields,
    NotFound,
    RoleNotAllowed,
    SeparationOfDuties,
    SimulatedClock,
    TransitionRefused,
    TriggerNotAllowed,
    UnknownTrigger,
)
from tests.support import AFTER, CS, GM, QA, complaint_fields

MAJOR = {"claimed_amount": "20000"}
ASSIGN = {"responsible_department": "quality", "handler": "wang.qa"}
REPORT = {
    "root_cause": "process",
    "responsibility": "company",
    "investigation_report": "绕组浸漆不良导致温升偏高",
}
PLAN = {"disposal_plan": "更换电机", "disposal_measures": ["replace"]}


# -- driving complaints -----------------------------------------------------------------------


def recorded(engine: Engine, **overrides: object) -> Complaint:
    c = engine.submit(complaint_fields(**overrides), CS)
    return engine.fire(c.number, "record", CS, {"readback_confirmed": True})


def investigated(engine: Engine, *, major: bool = False) -> Complaint:
    c = recorded(engine, **(MAJOR if major else {}))
    c = engine.fire(c.number, "confirm", CS, ASSIGN)
    if major:
        c = engine.fire(c.number, "name_special_team", GM, {"special_team": "质量部+技术部"})
    return engine.fire(c.number, "submit_report", QA, REPORT)


def revisited(engine: Engine, clock: SimulatedClock, score: int, satisfaction: str) -> Complaint:
    c = investigated(engine)
    c = engine.fire(c.number, "propose_plan", QA, PLAN)
    c = engine.fire(c.number, "resolve", AFTER, {"disposal_result": "已更换"})
    c = engine.fire(c.number, "feed_back", CS, {"customer_feedback": "已告知客户"})
    clock.advance(timedelta(days=5))  # the revisit is due between day 5 and day 7
    return engine.fire(
        c.number,
        "revisit",
        CS,
        {
            "satisfaction_score": score,
            "satisfaction": satisfaction,
            "revisit_note": "电话回访",
        },
    )


@dataclass(frozen=True)
class Snapshot:
    complaint: Complaint
    hashes: tuple[str, ...]
    total: int


def snapshot(engine: Engine, number: str) -> Snapshot:
    return Snapshot(
        engine.get(number, CS),
        tuple(e.hash for e in engine.history(number, CS)),
        engine.find(limit=1).total,
    )


def assert_untouched(engine: Engine, before: Snapshot) -> None:
    after = snapshot(engine, before.complaint.number)
    assert after == before
    assert len(after.hashes) == before.complaint.version
    assert engine.verify().ok


def refused(
    engine: Engine,
    number: str,
    trigger: str,
    actor: Actor,
    data: Mapping[str, object] | None = None,
    expected: type[TransitionRefused] = TransitionRefused,
) -> TransitionRefused:
    """Fire, expect ``expected``, check nothing was stored, and return the exception."""
    before = snapshot(engine, number)
    with pytest.raises(expected) as info:
        engine.fire(number, trigger, actor, data)
    assert type(info.value) is expected
    assert info.value.number == number
    assert info.value.trigger == trigger
    assert info.value.state == before.complaint.state
    assert_untouched(engine, before)
    return info.value


def problem_fields(exc: InvalidInput | MissingFields) -> set[str]:
    return {p.field for p in exc.problems}


# -- the complaint and the trigger --------------------------------------------------------------


def test_unknown_complaint_number(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    before = snapshot(engine, c.number)
    calls: list[Callable[[], object]] = [
        lambda: engine.fire("TS-2026-999999", "record", CS, {"readback_confirmed": True}),
        lambda: engine.get("TS-2026-999999", CS),
        lambda: engine.history("TS-2026-999999", CS),
        lambda: engine.available_triggers("TS-2026-999999", CS),
    ]
    for call in calls:
        with pytest.raises(NotFound) as info:
            call()
        assert info.value.kind == "complaint"
        assert info.value.key == "TS-2026-999999"
    assert_untouched(engine, before)


@pytest.mark.parametrize("actor", [None, "cs.li", {"id": "cs.li"}])
def test_available_triggers_needs_an_actor_before_anything_is_read(
    engine: Engine, actor: object
) -> None:
    """Checked before the lookup: an unknown number with a bad actor names both."""
    with pytest.raises(InvalidInput) as refused:
        engine.available_triggers(123, actor)  # type: ignore[arg-type]
    assert [p.field for p in refused.value.problems] == ["number", "actor"]
    assert "expected an Actor" in str(refused.value)


def test_unknown_trigger(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    exc = refused(engine, c.number, "teleport", CS, expected=UnknownTrigger)
    assert exc.check == "trigger_exists"
    assert exc.state == "received"
    assert "teleport" in exc.reason


def test_trigger_not_allowed_from_current_state(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    exc = refused(
        engine, c.number, "close", CS, {"archive_location": "A-1"}, expected=TriggerNotAllowed
    )
    assert exc.check == "source_state"
    assert exc.state == "received"
    assert "revisited" in exc.reason


def test_actor_without_an_allowed_role(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    exc = refused(
        engine, c.number, "record", QA, {"readback_confirmed": True}, expected=RoleNotAllowed
    )
    assert exc.check == "role"
    assert "customer_service" in exc.reason
    assert QA.id in exc.reason


# -- separation of duties ---------------------------------------------------------------------


def test_person_complained_about_may_not_record(engine: Engine) -> None:
    c = engine.submit(complaint_fields(person_complained_about=CS.id), CS)
    exc = refused(
        engine, c.number, "record", CS, {"readback_confirmed": True}, expected=SeparationOfDuties
    )
    assert exc.check == "separation_of_duties"
    assert "recusal" in exc.reason
    assert CS.id in exc.reason
    # someone else in customer service may
    other = Actor("zhao.cs", ["customer_service"])
    assert engine.fire(c.number, "record", other, {"readback_confirmed": True}).state == "recorded"


def test_person_complained_about_may_not_confirm(engine: Engine) -> None:
    manager = Actor("qian.mgr", ["department_manager"])
    c = recorded(engine, person_complained_about=manager.id)
    exc = refused(engine, c.number, "confirm", manager, ASSIGN, expected=SeparationOfDuties)
    assert exc.check == "separation_of_duties"
    assert "recusal" in exc.reason
    assert engine.fire(c.number, "confirm", CS, ASSIGN).state == "confirmed"


def test_proposer_may_not_approve_own_plan(engine: Engine) -> None:
    both = Actor("dual.hat", ["department_manager", "general_manager"])
    c = investigated(engine, major=True)
    engine.fire(c.number, "propose_plan", both, PLAN)
    exc = refused(engine, c.number, "approve_plan", both, expected=SeparationOfDuties)
    assert exc.check == "separation_of_duties"
    assert "four_eyes_plan" in exc.reason
    assert both.id in exc.reason
    assert engine.fire(c.number, "approve_plan", GM).version == c.version + 2


# -- approvals --------------------------------------------------------------------------------


def test_major_complaint_cannot_be_resolved_without_approval(engine: Engine) -> None:
    c = investigated(engine, major=True)
    assert c.severity == "major"
    engine.fire(c.number, "propose_plan", QA, PLAN)
    exc = refused(
        engine, c.number, "resolve", AFTER, {"disposal_result": "已更换"}, expected=ApprovalMissing
    )
    assert exc.check == "approval"
    assert "approve_plan" in exc.reason


def test_approval_before_a_later_plan_no_longer_counts(engine: Engine) -> None:
    c = investigated(engine, major=True)
    engine.fire(c.number, "propose_plan", QA, PLAN)
    engine.fire(c.number, "approve_plan", GM)
    engine.fire(
        c.number, "propose_plan", QA, {"disposal_plan": "退货", "disposal_measures": ["return"]}
    )
    exc = refused(
        engine, c.number, "resolve", AFTER, {"disposal_result": "已退货"}, expected=ApprovalMissing
    )
    assert "propose_plan" in exc.reason
    engine.fire(c.number, "approve_plan", GM)
    assert (
        engine.fire(c.number, "resolve", AFTER, {"disposal_result": "已退货"}).state == "resolved"
    )


# -- fire data ----------------------------------------------------------------------------------


def test_missing_required_field_in_fire_data(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    exc = refused(engine, c.number, "record", CS, {}, expected=MissingFields)
    assert exc.check == "fields"
    assert isinstance(exc, MissingFields)
    assert problem_fields(exc) == {"readback_confirmed"}


def test_missing_and_wrongly_typed_fields_are_all_named(engine: Engine) -> None:
    c = recorded(engine)
    c = engine.fire(c.number, "confirm", CS, ASSIGN)
    exc = refused(
        engine,
        c.number,
        "submit_report",
        QA,
        {"root_cause": "gremlins", "investigation_report": 42},
        expected=MissingFields,
    )
    assert isinstance(exc, MissingFields)
    assert problem_fields(exc) == {"root_cause", "responsibility", "investigation_report"}
    for name in ("root_cause", "responsibility", "investigation_report"):
        assert name in exc.reason


def test_wrongly_typed_fire_field(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    exc = refused(
        engine,
        c.number,
        "record",
        CS,
        {"readback_confirmed": "yes", "quantity": "many"},
        expected=MissingFields,
    )
    assert isinstance(exc, MissingFields)
    assert problem_fields(exc) == {"readback_confirmed", "quantity"}


def test_field_the_transition_may_not_set(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    exc = refused(
        engine,
        c.number,
        "record",
        CS,
        {"readback_confirmed": True, "handler": "wang.qa", "colour": "red"},
        expected=MissingFields,
    )
    assert isinstance(exc, MissingFields)
    by_field = {p.field: p.message for p in exc.problems}
    assert set(by_field) == {"handler", "colour"}
    assert "may not set" in by_field["handler"]
    assert "no such field" in by_field["colour"]


# -- submission ---------------------------------------------------------------------------------


def test_submit_names_every_bad_field_at_once(engine: Engine) -> None:
    bad = complaint_fields(
        customer_name=None,
        quantity="many",
        channel="pigeon",
        safety_issue="yes",
        colour="red",
        handler="wang.qa",
    )
    with pytest.raises(InvalidInput) as info:
        engine.submit(bad, CS)
    assert type(info.value) is InvalidInput
    assert info.value.context == "complaint"
    by_field = {p.field: p.message for p in info.value.problems}
    assert set(by_field) == {
        "customer_name",
        "quantity",
        "channel",
        "safety_issue",
        "colour",
        "handler",
    }
    assert by_field["customer_name"] == "required"
    assert by_field["colour"] == "no such field"
    assert "submission" in by_field["handler"]
    assert engine.find().total == 0
    assert engine.submit(complaint_fields(), CS).number == "TS-2026-000001"


def test_submit_with_only_missing_required_fields(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as info:
        engine.submit({"contact_person": "张伟"}, CS)
    assert problem_fields(info.value) == {
        "customer_name",
        "channel",
        "product_name",
        "category",
        "description",
    }
    first = engine.submit(complaint_fields(), CS)
    with pytest.raises(InvalidInput):
        engine.submit({}, CS)
    second = engine.submit(complaint_fields(), CS)
    assert (first.number, second.number) == ("TS-2026-000001", "TS-2026-000002")
    assert engine.find().total == 2
    assert engine.verify().ok


def test_unknown_actor_role(engine: Engine) -> None:
    janitor = Actor("mop.li", ["janitor"])
    with pytest.raises(InvalidInput) as info:
        engine.submit(complaint_fields(), janitor)
    assert info.value.context == "actor"
    assert problem_fields(info.value) == {"actor.roles"}
    assert "janitor" in str(info.value)
    assert engine.find().total == 0

    c = engine.submit(complaint_fields(), CS)
    assert c.number == "TS-2026-000001"
    before = snapshot(engine, c.number)
    with pytest.raises(InvalidInput) as info:
        engine.fire(
            c.number,
            "record",
            Actor("x", ["customer_service", "janitor"]),
            {"readback_confirmed": True},
        )
    assert problem_fields(info.value) == {"actor.roles"}
    with pytest.raises(InvalidInput):
        engine.available_triggers(c.number, janitor)
    assert_untouched(engine, before)


# -- versions and idempotency ---------------------------------------------------------------


def test_stale_expected_version(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    before = snapshot(engine, c.number)
    with pytest.raises(ConcurrentUpdate) as info:
        engine.fire(c.number, "record", CS, {"readback_confirmed": True}, expected_version=2)
    assert info.value.number == c.number
    assert info.value.expected_version == 2
    assert info.value.actual_version == 1
    assert_untouched(engine, before)
    c = engine.fire(c.number, "record", CS, {"readback_confirmed": True}, expected_version=1)
    with pytest.raises(ConcurrentUpdate) as info:
        engine.fire(c.number, "confirm", CS, ASSIGN, expected_version=1)
    assert (info.value.expected_version, info.value.actual_version) == (1, 2)
    assert engine.get(c.number, CS).state == "recorded"


def test_submit_idempotency(engine: Engine) -> None:
    first = engine.submit(complaint_fields(), CS, idempotency_key="mail-4711")
    again = engine.submit(complaint_fields(), CS, idempotency_key="mail-4711")
    assert again == first
    assert engine.find().total == 1
    assert len(engine.history(first.number, CS)) == 1

    with pytest.raises(IdempotencyConflict) as info:
        engine.submit(complaint_fields(description="另一件事"), CS, idempotency_key="mail-4711")
    assert isinstance(info.value, InvalidInput)
    assert info.value.key == "mail-4711"
    assert problem_fields(info.value) == {"idempotency_key"}
    with pytest.raises(IdempotencyConflict):
        engine.submit(
            complaint_fields(), Actor("zhao.cs", ["customer_service"]), idempotency_key="mail-4711"
        )
    assert engine.find().total == 1
    assert engine.submit(complaint_fields(), CS).number == "TS-2026-000002"
    assert engine.verify().ok


def test_fire_idempotency(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    first = engine.fire(
        c.number, "record", CS, {"readback_confirmed": True}, idempotency_key="rec-1"
    )
    again = engine.fire(
        c.number, "record", CS, {"readback_confirmed": True}, idempotency_key="rec-1"
    )
    assert again == first
    before = snapshot(engine, c.number)
    assert before.complaint.version == 2
    assert len(before.hashes) == 2

    with pytest.raises(IdempotencyConflict) as info:
        engine.fire(
            c.number,
            "record",
            CS,
            {"readback_confirmed": True, "quantity": 3},
            idempotency_key="rec-1",
        )
    assert info.value.key == "rec-1"
    with pytest.raises(IdempotencyConflict):
        engine.fire(c.number, "confirm", CS, ASSIGN, idempotency_key="rec-1")
    assert_untouched(engine, before)


def test_fire_idempotency_key_reused_from_a_submit(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS, idempotency_key="k-1")
    before = snapshot(engine, c.number)
    with pytest.raises(IdempotencyConflict):
        engine.fire(c.number, "record", CS, {"readback_confirmed": True}, idempotency_key="k-1")
    assert_untouched(engine, before)


# -- conditions ---------------------------------------------------------------------------------


def test_close_with_a_low_score_fails_the_condition(engine: Engine, clock: SimulatedClock) -> None:
    c = revisited(engine, clock, score=70, satisfaction="basically_satisfied")
    exc = refused(
        engine, c.number, "close", CS, {"archive_location": "档案柜 A-3"}, expected=ConditionFailed
    )
    assert exc.check == "condition"
    assert "close" in exc.reason
    assert engine.fire(c.number, "reopen", CS).state == "investigated"


# -- reading ------------------------------------------------------------------------------------


def test_naive_datetime_in_received_between(engine: Engine) -> None:
    engine.submit(complaint_fields(), CS)
    aware = engine.now()
    naive = datetime(2026, 3, 1, 0, 0)
    with pytest.raises(InvalidInput) as info:
        engine.find(received_between=(naive, None))
    assert problem_fields(info.value) == {"received_between.from"}
    with pytest.raises(InvalidInput) as info:
        engine.find(received_between=(aware, naive))
    assert problem_fields(info.value) == {"received_between.to"}


def test_find_names_every_bad_argument_at_once(engine: Engine) -> None:
    naive = datetime(2026, 3, 1, 0, 0)
    with pytest.raises(InvalidInput) as info:
        engine.find(received_between=(naive, naive), limit=0, offset=-1)
    assert problem_fields(info.value) == {
        "received_between.from",
        "received_between.to",
        "limit",
        "offset",
    }


# -- arguments of the wrong kind ------------------------------------------------------------


def test_fire_names_every_argument_of_the_wrong_kind(engine: Engine) -> None:
    number = recorded(engine).number
    before = snapshot(engine, number)
    for data in ([1, 2], "abc", {5: True, "a": 1}):
        with pytest.raises(InvalidInput) as info:
            engine.fire(number, "confirm", CS, data, idempotency_key="k")  # type: ignore[arg-type]
        assert problem_fields(info.value) == {"data"}
    with pytest.raises(InvalidInput) as info:
        engine.fire(5, None, None, expected_version="1",  # type: ignore[arg-type]
                    idempotency_key="k")
    assert problem_fields(info.value) == {"number", "trigger", "actor", "expected_version"}
    assert_untouched(engine, before)


def test_actors_with_roles_or_a_department_of_the_wrong_kind(engine: Engine) -> None:
    for roles in (None, [5], [1, "a"]):
        with pytest.raises(InvalidInput) as info:
            Actor("x", roles)  # type: ignore[arg-type]
        assert problem_fields(info.value) == {"actor.roles"}
    total = engine.find(limit=1).total
    # a department the hash would cover as a number but the column stores as text
    for department in (5, "", "d" * 201):
        with pytest.raises(InvalidInput) as info:
            engine.submit(complaint_fields(), Actor("li.na", CS.roles, department))  # type: ignore[arg-type]
        assert problem_fields(info.value) == {"actor.department"}
    assert engine.find(limit=1).total == total
    engine.submit(complaint_fields(), Actor("li.na", CS.roles, "客服部"))
    assert engine.verify().ok


def test_lookups_and_searches_with_arguments_of_the_wrong_kind(engine: Engine) -> None:
    number = recorded(engine).number
    for call in (lambda: engine.get(["a"]), lambda: engine.history(5),  # type: ignore[arg-type]
                 lambda: engine.get(number, "x")):  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            call()
    with pytest.raises(InvalidInput) as info:
        engine.find(state=5, severity=1, received_between=(None, None, None),  # type: ignore[arg-type]
                    offset=10**20, actor="x")  # type: ignore[arg-type]
    assert problem_fields(info.value) == {"state", "severity", "received_between", "offset",
                                          "actor"}


def test_field_values_that_could_not_be_stored_or_verified(engine: Engine) -> None:
    total = engine.find(limit=1).total
    with pytest.raises(InvalidInput) as info:
        engine.submit(complaint_fields(description="a\udc80b", quantity=10**400,
                                       claimed_amount=10**5000), CS)
    assert problem_fields(info.value) == {"description", "quantity", "claimed_amount"}
    assert engine.find(limit=1).total == total


def test_an_extension_longer_than_a_hundred_years_is_refused(engine: Engine,
                                                            clock: SimulatedClock) -> None:
    from complaintflow.timers import Consent

    number = engine.submit(complaint_fields(), CS).number
    before = snapshot(engine, number)
    consent = Consent("张伟", clock(), "phone", "客户同意")
    for amount in (10**8, 52_704_000):  # beyond any unit; beyond this clock's minutes budget
        with pytest.raises(InvalidInput) as info:
            engine.extend_timer(number, "first_response", CS, amount, consent, reason="x")
        assert problem_fields(info.value) == {"amount"}
    assert_untouched(engine, before)
