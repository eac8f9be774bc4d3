"""Payloads the engine would never write, re-hashed so the chain accepts them.

Deep verification must name each malformed payload (``bad_payload``: complaint, event,
what is malformed) and go on with the other complaints; a replay of such a history raises
``IntegrityError`` naming the event. Neither may end in a Python exception: the fuzz test
below mutates the payloads of a real history (wrong types, dropped keys, non-object
entries, huge numbers, nulls) and checks exactly that.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from complaintflow import Engine, IntegrityError, InvalidInput, SimulatedClock
from complaintflow.scheduler import Scheduler
from complaintflow.storage.tables import events as E
from tests.integration.test_replay_audit import (
    TO_INVESTIGATED,
    complaint_id,
    drive,
    findings,
    forge,
    local,
    rechain,
)
from tests.support import CS, complaint_fields


def bad_payloads(engine: Engine, number: str) -> list[tuple[int | None, str]]:
    return [(f.seq, f.detail) for f in engine.verify(deep=True).findings
            if f.number == number and f.kind == "bad_payload"]


def test_a_set_value_that_does_not_decode_is_a_finding_and_the_others_are_checked(
    engine: Engine,
) -> None:
    bad = engine.submit(complaint_fields(), CS).number
    drive(engine, bad, TO_INVESTIGATED)
    other = engine.submit(complaint_fields(), CS).number
    engine.fire(other, "record", CS, {"readback_confirmed": True})
    assert engine.verify(deep=True).ok
    forge(engine, bad, 2, lambda p: p["set"].update(readback_confirmed="yes please"))
    forge(engine, other, 2, lambda p: p.update(severity="major"))
    report = engine.verify(deep=True)
    assert (bad, 2, "bad_payload") in findings(report)
    [(_, detail)] = bad_payloads(engine, bad)
    assert detail.startswith("the stored transition payload is malformed: "
                             "set.readback_confirmed: 'yes please' does not decode")
    assert (other, 2, "wrong_severity") in findings(report)  # checked after the crash


@pytest.mark.parametrize(("kind", "seq", "entry"), [
    ("started", 3, "contact_customer"),
    ("started", 3, 7),
    ("stopped", 2, "registration"),
    ("stopped", 2, None),
    ("stopped", 2, [1]),
])
def test_a_timer_change_that_is_not_an_object_is_a_finding(
    engine: Engine, kind: str, seq: int, entry: Any
) -> None:
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED)
    at: list[int] = []

    def add(payload: dict[str, Any]) -> None:
        at.append(len(payload["timers"][kind]))
        payload["timers"][kind].append(entry)

    forge(engine, number, seq, add)
    [(found, detail)] = bad_payloads(engine, number)
    assert found == seq
    assert f"timers.{kind}[{at[0]}] is " in detail and "not an object" in detail
    with pytest.raises(IntegrityError) as caught:
        engine.replay(number)
    assert (caught.value.number, caught.value.seq) == (number, seq)
    assert f"timers.{kind}[{at[0]}]" in str(caught.value)


def test_a_warning_without_a_run_number_and_a_breach_without_its_instant(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED)
    clock.set(local(3, 20, 10, 30))
    Scheduler(engine).tick()
    history = engine.history(number)
    warning = next(e.seq for e in history if e.type == "timer_warning")
    breach = next(e.seq for e in history if e.type == "timer_breached")
    assert engine.verify(deep=True).ok
    forge(engine, number, warning, lambda p: p.update(run=None))
    assert bad_payloads(engine, number) == [
        (warning, "the stored timer_warning payload is malformed: run is None, not a run "
                  "number")]
    forge(engine, number, warning, lambda p: p.update(run=1))
    forge(engine, number, breach, lambda p: p.pop("due_at"))
    # deep verification reads the breach without its instant: for no due time
    assert [(s, k) for n, s, k in findings(engine.verify(deep=True))] == [
        (breach, "breach_mismatch")]
    with pytest.raises(IntegrityError) as caught:  # a replay cannot do without it
        engine.replay(number)
    assert caught.value.seq == breach
    assert "timer_breached payload is malformed (due_at is null, not an ISO instant)" \
        in str(caught.value)


# -- fuzzing ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, str]]:
    """One complaint through investigation, with clocks started, stopped, warned,
    breached and extended (on SQLite: the mutations are the same on both backends)."""
    path: Path = tmp_path_factory.mktemp("fuzz") / "complaints.db"
    from datetime import UTC, datetime

    from complaintflow.timers import Consent

    clock = SimulatedClock(datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    engine = Engine.open(f"sqlite:///{path}", clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        drive(engine, number, TO_INVESTIGATED[:2])
        clock.set(local(3, 2, 9, 30))
        engine.extend_timer(number, "whole_complaint", CS, 2, Consent(
            given_by="张伟", given_at=local(3, 2, 9, 20), channel="phone", reason="客户同意"),
            reason="客户同意延期")
        drive(engine, number, TO_INVESTIGATED[2:])
        for day in (5, 20, 31):
            clock.set(local(3, day, 10, 30))
            Scheduler(engine).tick()
        assert engine.verify(deep=True).ok
        assert {e.type for e in engine.history(number)} >= {
            "submitted", "transition", "customer_consent", "timer_extended",
            "timer_warning", "timer_breached"}
        yield engine, number
    finally:
        engine.close()


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


_DROP = object()
_WRONG = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63), 10**30]),
    st.floats(),  # NaN and Infinity are stored as json.dumps writes them
    st.text(max_size=6), st.sampled_from(["2026-13-45T00:00:00Z", "2026-03-02T09:00:00",
                                          "registration", "major"]),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(_DROP),
)


def _mutated(payload: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``payload`` with the value at ``path`` replaced by ``value`` (dropped: ``_DROP``;
    on a list, ``_DROP`` appends a non-object entry instead)."""
    if not path:
        return payload
    *parents, last = path
    node = payload
    for key in parents:
        node = node[key]
    if value is _DROP:
        if isinstance(node, list):
            node.append("not an object")
        else:
            del node[last]
    else:
        node[last] = value
    return payload


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_deep_verification_of_mutated_payloads_gives_findings_never_an_exception(
    real: tuple[Engine, str], data: st.DataObject
) -> None:
    engine, number = real
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:
        stored = {r.seq: r.payload for r in conn.execute(
            sa.select(E.c.seq, E.c.payload).where(E.c.complaint_id == cid))}
    seq = data.draw(st.sampled_from(sorted(stored)), label="seq")
    payload = json.loads(stored[seq])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = [p for p in _paths(payload) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        payload = _mutated(payload, path, data.draw(_WRONG, label="value"))
    try:
        with engine.database.begin() as conn:
            conn.execute(sa.update(E).where(E.c.complaint_id == cid, E.c.seq == seq)
                         .values(payload=json.dumps(payload, ensure_ascii=False)))
        rechain(engine, number)
        report = engine.verify(deep=True)
        assert all(f.number == number for f in report.findings)
        try:
            engine.replay(number)
        except IntegrityError as exc:
            assert exc.number == number and exc.seq is not None
    finally:
        with engine.database.begin() as conn:
            conn.execute(sa.update(E).where(E.c.complaint_id == cid, E.c.seq == seq)
                         .values(payload=stored[seq]))
        rechain(engine, number)


@pytest.mark.parametrize("edit", [
    lambda p: p.update(set="readback_confirmed"),
    lambda p: p.update(set=None),
    lambda p: p.update(dropped_fields=7),
    lambda p: p["set"].update(readback_confirmed=float("inf")),  # stored as Infinity
])
def test_a_set_that_is_not_an_object_or_not_json_is_a_finding(
    engine: Engine, edit: Callable[[dict[str, Any]], None]
) -> None:
    number = engine.submit(complaint_fields(), CS).number
    engine.fire(number, "record", CS, {"readback_confirmed": True})
    forge(engine, number, 2, edit)
    assert (number, 2, "bad_payload") in findings(engine.verify(deep=True))


@pytest.mark.parametrize(("edit", "kind"), [
    (lambda item: item.update(started_at="garbage"), "wrong_due"),
    (lambda item: item.update(started_at="2026-03-01T00:00:00.000000Z"), "wrong_due"),
    (lambda item: item.update(budget={"unit": "working_days", "amount": 99}), "wrong_due"),
    (lambda item: item.pop("budget"), "bad_payload"),
    (lambda item: item.update(due_at="9999-12-31T23:59:59.000000Z"), "bad_payload"),
])
def test_a_started_clock_recorded_otherwise_than_the_rules_start_it_is_a_finding(
    engine: Engine, edit: Callable[[dict[str, Any]], None], kind: str
) -> None:
    """Replay counts a clock from the start instant and budget its entry records; deep
    verification compares them with the rules (before, it re-derived the clock from the
    rules alone and passed a history replay refused), and a due instant near datetime's
    limits is malformed (before: OverflowError in both)."""
    number = engine.submit(complaint_fields(), CS).number
    drive(engine, number, TO_INVESTIGATED)
    forge(engine, number, 3, lambda p: edit(p["timers"]["started"][0]))  # confirm
    assert (number, 3, kind) in findings(engine.verify(deep=True))
    try:  # replay reads a clock's recorded instants only as far as it needs them
        engine.replay(number)
    except IntegrityError as exc:
        assert (exc.number, exc.seq) == (number, 3)


def test_instants_near_the_limits_of_datetime_are_invalid_input(engine: Engine) -> None:
    """Before: OverflowError from the time-zone conversion or the deadline arithmetic."""
    number = engine.submit(complaint_fields(), CS).number
    with pytest.raises(InvalidInput, match="between the years 1000 and 9000"):
        engine.replay(number, at=datetime.max.replace(tzinfo=UTC))
    with pytest.raises(InvalidInput, match="between the years 1000 and 9000"):
        engine.verify(deep=True, since=datetime.min.replace(tzinfo=UTC))
