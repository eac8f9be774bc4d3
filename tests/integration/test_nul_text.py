"""A NUL character ("\\x00") in any text a caller gives is refused with ``InvalidInput``
naming the argument (in a transition's data: ``MissingFields``, as any bad value), on both
backends alike, before the database is asked (PostgreSQL cannot store NUL in text and
answered with a ``StorageError``; SQLite stored it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from complaintflow import (
    Actor,
    Consent,
    Engine,
    InvalidInput,
    MissingFields,
    Scheduler,
    SimulatedClock,
)
from complaintflow.rules import values
from tests.support import CS, as_recorded, complaint_fields

#: text with a NUL somewhere in it
with_nul = st.tuples(st.text(max_size=4), st.text(max_size=4)).map(
    lambda parts: parts[0] + "\x00" + parts[1])
Call = Callable[[Engine, str, Consent, str], Any]
RECORD = {"readback_confirmed": True}


def _extend(engine: Engine, number: str, consent: Consent, *, timer: str = "whole_complaint",
            actor: Actor = CS, reason: str = "客户同意延期") -> Any:
    return engine.extend_timer(number, timer, actor, 1, consent, reason=reason)


def _consent(consent: Consent, **wrong: Any) -> Consent:
    given = {"given_by": consent.given_by, "given_at": consent.given_at,
             "channel": consent.channel, "reason": consent.reason, **wrong}
    return Consent(**given)


CALLS: list[tuple[str, Call, set[str]]] = [
    ("submit actor id", lambda e, n, c, t: e.submit(
        complaint_fields(), Actor(t, CS.roles)), {"actor.id"}),
    ("submit actor department", lambda e, n, c, t: e.submit(
        complaint_fields(), Actor(CS.id, CS.roles, t)), {"actor.department"}),
    ("submit idempotency key", lambda e, n, c, t: e.submit(
        complaint_fields(), CS, idempotency_key=t), {"idempotency_key"}),
    ("submit string field", lambda e, n, c, t: e.submit(
        complaint_fields(batch_no=t), CS), {"batch_no"}),
    ("submit text field", lambda e, n, c, t: e.submit(
        complaint_fields(description=t), CS), {"description"}),
    ("fire actor id", lambda e, n, c, t: e.fire(n, "record", Actor(t, CS.roles), RECORD),
     {"actor.id"}),
    ("fire actor department", lambda e, n, c, t: e.fire(
        n, "record", Actor(CS.id, CS.roles, t), RECORD), {"actor.department"}),
    ("fire idempotency key", lambda e, n, c, t: e.fire(n, "record", CS, RECORD,
                                                       idempotency_key=t), {"idempotency_key"}),
    ("fire number", lambda e, n, c, t: e.fire(t, "record", CS, RECORD), {"number"}),
    ("fire trigger", lambda e, n, c, t: e.fire(n, t, CS, RECORD), {"trigger"}),
    ("fire comment", lambda e, n, c, t: e.fire(n, "record", CS, RECORD, comment=t),
     {"comment"}),
    ("fire string field", lambda e, n, c, t: e.fire(n, "record", CS, {**RECORD,
                                                                     "serial_number": t}),
     {"serial_number"}),
    ("fire text field", lambda e, n, c, t: e.fire(n, "respond", CS, {"response_note": t}),
     {"response_note"}),
    ("get number", lambda e, n, c, t: e.get(t, CS), {"number"}),
    ("history number", lambda e, n, c, t: e.history(t, CS), {"number"}),
    ("timers number", lambda e, n, c, t: e.timers(t), {"number"}),
    ("replay number", lambda e, n, c, t: e.replay(t), {"number"}),
    ("available_triggers number", lambda e, n, c, t: e.available_triggers(t, CS),
     {"number"}),
    ("extend_timer number", lambda e, n, c, t: _extend(e, t, c), {"number"}),
    ("extend_timer timer", lambda e, n, c, t: _extend(e, n, c, timer=t), {"timer"}),
    ("extend_timer actor id", lambda e, n, c, t: _extend(e, n, c, actor=Actor(t, CS.roles)),
     {"actor.id"}),
    ("extend_timer reason", lambda e, n, c, t: _extend(e, n, c, reason=t + "x"), {"reason"}),
    ("extend_timer consent", lambda e, n, c, t: _extend(e, n, _consent(c, given_by=t + "x")),
     {"consent.given_by"}),
    ("find handler", lambda e, n, c, t: e.find(handler=t), {"handler"}),
    ("find department", lambda e, n, c, t: e.find(department=t), {"department"}),
    ("find state", lambda e, n, c, t: e.find(state=[t]), {"state"}),
    ("scheduler worker", lambda e, n, c, t: Scheduler(e, worker=t), {"worker"}),
]


@pytest.mark.parametrize(("call", "fields"), [pytest.param(call, fields, id=label)
                                              for label, call, fields in CALLS])
@settings(max_examples=5, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=with_nul)
def test_a_nul_character_is_refused_naming_the_argument(
        engine: Engine, clock: SimulatedClock, call: Call, fields: set[str],
        text: str) -> None:
    c = engine.get("TS-2026-000001", CS) if engine.find(limit=1).total else \
        engine.submit(complaint_fields(), CS)
    consent = Consent("张伟", clock(), "phone", "客户同意")
    total = engine.find(limit=1).total
    # data a transition is given is refused by its fields guard, as any bad value is
    with pytest.raises((InvalidInput, MissingFields)) as info:
        call(engine, c.number, consent, text)
    assert fields <= {p.field for p in info.value.problems}
    assert "NUL" in str(info.value) or "\n" in text or "\r" in text
    assert engine.get(c.number, CS) == c
    assert engine.find(limit=1).total == total


def test_text_around_nul_is_still_text(engine: Engine) -> None:
    """What is refused is the NUL alone: the same values without it are taken."""
    c = engine.submit(complaint_fields(description="a\\x00b"), Actor("li.na", CS.roles, "客服部"),
                      idempotency_key="k-\u3000")
    assert engine.get(c.number, CS).fields["description"] == "a\\x00b"
    assert engine.verify(deep=True).ok


def test_a_history_recorded_with_nul_in_a_field_still_verifies(
        engine: Engine) -> None:
    """Releases before this check stored NUL inside the JSON of fields and payloads (on
    both backends); deep verification re-checks such a step as it was decided, and reads
    show the value."""
    c = engine.submit(complaint_fields(), CS)
    with as_recorded(values, "text_problem"):
        engine.fire(c.number, "respond", CS, {"response_note": "已致电\x00客户"})
    assert engine.get(c.number, CS).fields["response_note"] == "已致电\x00客户"
    report = engine.verify(deep=True)
    assert report.ok, report.findings
