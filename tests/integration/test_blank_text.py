"""Text that is only whitespace is no value: a required field given "   " is missing, at
submission and in a transition's ``requires``, on both backends; the value a caller gives
is stored as given (never stripped); and a history recorded before this rule, with blank
text where a value was required, still verifies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from complaintflow import Engine, InvalidInput, MissingFields, SimulatedClock
from complaintflow.rules.loader import default_rules_text, parse_rules
from complaintflow.states import guards
from tests.support import CS, as_recorded, complaint_fields

#: every whitespace character up to the ideographic space U+3000 (Chinese text has it)
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
#: ... that a one-line ``string`` field takes
ONE_LINE = "".join(c for c in WHITESPACE if c not in "\n\r")
blank = st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=6)
blank_line = st.text(st.sampled_from(ONE_LINE), min_size=1, max_size=6)
REQUIRED_TEXT = {"customer_name": blank_line, "product_name": blank_line, "description": blank}
FIXTURE = settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FIXTURE
@given(st.fixed_dictionaries({}, optional=REQUIRED_TEXT).filter(bool))
def test_submit_names_every_required_field_given_only_whitespace(
        engine: Engine, given_blank: dict[str, str]) -> None:
    total = engine.find(limit=1).total
    with pytest.raises(InvalidInput) as info:
        engine.submit(complaint_fields(**given_blank), CS)
    assert info.value.context == "complaint"
    assert {p.field: p.message for p in info.value.problems} == dict.fromkeys(given_blank,
                                                                              "required")
    assert engine.find(limit=1).total == total


def test_text_around_a_value_is_stored_as_given(engine: Engine) -> None:
    c = engine.submit(complaint_fields(customer_name="  华东机电  ", description="\t异响\n"), CS)
    assert (c.fields["customer_name"], c.fields["description"]) == ("  华东机电  ", "\t异响\n")
    stored = engine.get(c.number, CS).fields
    assert (stored["customer_name"], stored["description"]) == ("  华东机电  ", "\t异响\n")
    assert engine.history(c.number, CS)[0].payload["fields"]["description"] == "\t异响\n"


@FIXTURE
@given(note=blank)
def test_a_transition_requiring_a_field_refuses_only_whitespace(engine: Engine,
                                                                note: str) -> None:
    c = engine.submit(complaint_fields(), CS)
    with pytest.raises(MissingFields) as info:
        engine.fire(c.number, "respond", CS, {"response_note": note})
    assert [(p.field, p.message) for p in info.value.problems] == [
        ("response_note", "required by this transition")]
    assert engine.get(c.number, CS).version == 1
    offered = {o.trigger: o for o in engine.available_triggers(c.number, CS)}
    assert "response_note" in offered["respond"].needs_fields


def test_a_value_given_earlier_that_is_only_whitespace_does_not_count(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    c = engine.fire(c.number, "record", CS, {"readback_confirmed": True})
    with pytest.raises(MissingFields) as info:
        engine.fire(c.number, "confirm", CS,
                    {"responsible_department": "quality", "handler": "\u3000 "})
    assert {p.field for p in info.value.problems} == {"handler"}
    c = engine.fire(c.number, "confirm", CS, {"responsible_department": "quality",
                                              "handler": " wang.qa "})
    assert c.handler == " wang.qa "


@pytest.fixture
def editable_description(db_url: str, clock: SimulatedClock) -> Iterator[Engine]:
    """The default rules, with ``record`` also allowed to set the required description."""
    text = default_rules_text().replace("claimed_amount, readback_confirmed]",
                                        "claimed_amount, readback_confirmed, description]")
    assert "readback_confirmed, description]" in text
    engine = Engine.open(db_url, rules=parse_rules(text, "editable.yaml"), clock=clock)
    try:
        yield engine
    finally:
        engine.close()


@pytest.mark.parametrize("value", ["", "   ", "\t\n", "\u3000"])
def test_a_required_field_cannot_be_cleared_with_blank_text(editable_description: Engine,
                                                            value: str) -> None:
    engine = editable_description
    c = engine.submit(complaint_fields(), CS)
    with pytest.raises(MissingFields) as info:
        engine.fire(c.number, "record", CS, {"readback_confirmed": True, "description": value})
    assert [p.field for p in info.value.problems] == ["description"]
    assert "not cleared" in info.value.problems[0].message
    assert engine.get(c.number, CS).version == 1


def test_a_history_recorded_with_blank_required_text_still_verifies(
        editable_description: Engine) -> None:
    """Releases before this rule counted only empty text as missing; steps they recorded
    are re-checked by deep verification as they were decided, not turned into findings."""
    engine = editable_description
    c = engine.submit(complaint_fields(), CS)
    with as_recorded(guards, "is_blank"):
        engine.fire(c.number, "respond", CS, {"response_note": "   "})
        engine.fire(c.number, "record", CS, {"readback_confirmed": True, "description": " "})
    report = engine.verify(deep=True)
    assert report.ok, report.findings
    with pytest.raises(MissingFields):  # and live, the rule holds
        engine.fire(c.number, "confirm", CS, {"responsible_department": "quality",
                                              "handler": " "})
