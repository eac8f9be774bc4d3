"""The engine remembers the rows it wrote (``rowmemo``); a fire that uses what it remembered
must give exactly what parsing the row again gives: the same complaint (values of the same
types and written the same way, fields in the same order), the same stored texts and the same
events. And a row someone else changed must be read again."""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from complaintflow import CommittedEvent, Complaint, Engine, SimulatedClock
from complaintflow.rowmemo import RememberedRow, RowMemo
from complaintflow.states.conditions import Facts
from tests.support import CS, SALES, complaint_fields

START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)

amounts = st.one_of(
    st.integers(min_value=0, max_value=10**6),
    st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False),
    st.sampled_from(["1.50", "0.10", "2000", "2000.00", "9999.999", "0"]),
)
dates = st.dates(min_value=date(2020, 1, 1), max_value=date(2026, 3, 1))
demands = st.lists(st.sampled_from(["repair", "replace", "return", "explanation", "apology"]),
                   unique=True, max_size=3)
notes = st.text(alphabet="电机异响 abc\n", min_size=1, max_size=12).filter(str.strip)


def shape(c: Complaint) -> tuple[Any, ...]:
    """Everything of a complaint, with each field's type and written form, in order."""
    return (c.number, c.state, c.version, c.severity, c.updated_at, c.ruleset, c.department,
            c.handler, [(k, type(v).__name__, repr(v)) for k, v in c.fields.items()])


def stored(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.database.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT number, fields, facts, head_hash, severity FROM complaints ORDER BY id"))
        events = conn.execute(sa.text("SELECT hash, payload FROM events ORDER BY id"))
        return [tuple(r) for r in rows] + [tuple(e) for e in events]


def lockstep(steps: list[tuple[str, Any, dict[str, Any]]], first: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clocks = [SimulatedClock(START), SimulatedClock(START)]
        engines = [Engine.open(f"sqlite:///{Path(tmp) / f'{i}.db'}", clock=clocks[i])
                   for i in range(2)]
        engines[1]._rows = RowMemo(0)  # this one parses every row it reads
        try:
            numbers = [e.submit(complaint_fields(**first), CS).number for e in engines]
            for trigger, actor, data in steps:
                results = []
                for engine, clock, number in zip(engines, clocks, numbers, strict=True):
                    clock.advance(timedelta(minutes=7))
                    results.append(shape(engine.fire(number, trigger, actor, data)))
                assert results[0] == results[1], trigger
            assert stored(engines[0]) == stored(engines[1])
        finally:
            for e in engines:
                e.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first_amount=amounts, amount=amounts, bought=dates, wanted=demands, again=demands,
       note=notes, quantity=st.integers(min_value=0, max_value=10**9))
def test_remembered_rows_give_what_parsing_gives(first_amount: Any, amount: Any, bought: date,
                                                  wanted: list[str], again: list[str],
                                                  note: str, quantity: int) -> None:
    first = {"claimed_amount": str(first_amount), "purchase_date": bought.isoformat(),
             "customer_demand": wanted}
    lockstep([
        ("hand_over", SALES, {}),  # remembered; the next fire sets values on top of it
        ("record", CS, {"readback_confirmed": True, "claimed_amount": amount,
                        "customer_demand": again, "quantity": quantity,
                        "purchase_date": bought}),
        ("respond", CS, {"response_note": note}),  # nothing set: every value remembered
        ("respond", CS, {"response_note": note + "2"}),
        ("confirm", CS, {"responsible_department": "quality", "handler": "wang.qa"}),
        ("contact_customer", CS, {"contact_note": note}),
    ], first)


def test_a_row_another_engine_wrote_is_read_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    clock = SimulatedClock(START)
    with Engine.open(url, clock=clock) as one, Engine.open(url, clock=clock) as other:
        number = one.submit(complaint_fields(), CS).number
        one.fire(number, "record", CS, {"readback_confirmed": True})
        one.fire(number, "respond", CS, {"response_note": "已回复"})
        other.fire(number, "respond", CS, {"response_note": "再次回复"})
        clock.advance(timedelta(minutes=5))
        after = one.fire(number, "confirm", CS, {"responsible_department": "quality",
                                                 "handler": "wang.qa"})
        assert after.version == 5
        assert after.fields["response_note"] == "再次回复"
        with one.database.connect() as conn:
            facts = one.facts(conn, 1)
        assert facts.count["respond"] == 2
        assert one.verify().ok


def test_a_hand_edited_row_is_read_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with Engine.open(url, clock=SimulatedClock(START)) as engine:
        number = engine.submit(complaint_fields(), CS).number
        engine.fire(number, "record", CS, {"readback_confirmed": True,
                                           "claimed_amount": Decimal("1.50")})
        with engine.database.begin() as conn:
            assert conn.execute(sa.text("UPDATE complaints SET fields = replace(fields, :a, :b)"),
                                {"a": '"claimed_amount":"1.5"', "b": '"claimed_amount":"7"'}
                                ).rowcount == 1
        after = engine.fire(number, "respond", CS, {"response_note": "已回复"})
        assert after.fields["claimed_amount"] == Decimal("7")


def test_hand_edited_facts_are_read_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with Engine.open(url, clock=SimulatedClock(START)) as engine:
        number = engine.submit(complaint_fields(), CS).number
        engine.fire(number, "record", CS, {"readback_confirmed": True})
        engine.fire(number, "respond", CS, {"response_note": "已回复"})
        with engine.database.begin() as conn:
            assert conn.execute(sa.text("UPDATE complaints SET facts = replace(facts, :a, :b)"),
                                {"a": '"respond":1', "b": '"respond":7'}).rowcount == 1
        engine.fire(number, "respond", CS, {"response_note": "再次回复"})
        with engine.database.connect() as conn:
            text = conn.execute(sa.text("SELECT facts FROM complaints")).scalar_one()
        assert '"respond":8' in text


class Dept(str, Enum):  # noqa: UP042 - an old-style string enum, as hosts still have
    QUALITY = "quality"


class Handler(str):  # a host's own string type
    pass


def test_values_of_a_str_subclass_are_plain_text(tmp_path: Path) -> None:
    """A host's string subclass is stored and read back as plain text, so a remembered row
    cannot keep it (before: the next fire returned the subclass with the memo and ``str``
    without it, and the department index column read ``Dept.QUALITY``)."""
    lockstep([
        ("record", CS, {"readback_confirmed": True}),
        ("confirm", CS, {"responsible_department": Dept.QUALITY, "handler": Handler("wang.qa")}),
        ("contact_customer", CS, {"contact_note": Handler("已联系")}),
        ("contact_customer", CS, {"contact_note": "再次联系"}),
    ], {})
    with Engine.open(f"sqlite:///{tmp_path / 'c.db'}", clock=SimulatedClock(START)) as engine:
        number = engine.submit(complaint_fields(), CS).number
        engine.fire(number, "record", CS, {"readback_confirmed": True})
        done = engine.fire(number, "confirm", CS, {"responsible_department": Dept.QUALITY,
                                                   "handler": Handler("wang.qa")})
        assert type(done.fields["responsible_department"]) is str
        assert (done.department, type(done.fields["handler"])) == ("quality", str)
        assert engine.verify().ok


def test_an_observer_changing_a_payload_changes_no_row(tmp_path: Path) -> None:
    def tidy(committed: CommittedEvent) -> None:
        for value in committed.event.payload.get("set", {}).values():
            if isinstance(value, list):
                value.sort()  # a display hook tidying lists in place

    clock = SimulatedClock(START)
    with Engine.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock) as engine:
        engine.subscribe(tidy)
        number = engine.submit(complaint_fields(), CS).number
        engine.fire(number, "record", CS, {"readback_confirmed": True,
                                           "customer_demand": ["return", "apology"]})
        clock.advance(timedelta(minutes=5))
        after = engine.fire(number, "respond", CS, {"response_note": "已回复"})
        assert after.fields["customer_demand"] == ("return", "apology")
        assert engine.verify().ok


def test_the_memo_keeps_to_its_budget() -> None:
    memo = RowMemo(size=3, chars=6400)

    def row(n: int, size: int) -> RememberedRow:
        return RememberedRow("v", "x" * size, {}, {}, "", Facts())

    for n in range(5):
        memo.remember(n, row(n, 10))
    assert [n for n in range(5) if memo.fields(n, "v", "x" * 10)] == [2, 3, 4]
    memo.remember(9, row(9, 101))  # above a 64th of the budget: not kept
    assert memo.fields(9, "v", "x" * 101) is None
    memo.clear()
    for n in range(3):
        memo.remember(n, row(n, 100))
    memo.remember(3, row(3, 6200))  # too big: kept out, the others stay
    assert memo.fields(3, "v", "x" * 6200) is None
    by_chars = RowMemo(size=100, chars=640)  # room for 64 rows of 10 characters
    for n in range(70):
        by_chars.remember(n, row(n, 10))
    assert [n for n in range(70) if by_chars.fields(n, "v", "x" * 10)] == list(range(6, 70))
