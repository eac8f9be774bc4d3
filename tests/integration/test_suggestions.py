"""A misspelt name from a caller is refused with the name it was probably meant to be, on
both backends, and nothing is stored; a search filter no stored rule set declares is refused
instead of silently matching nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from complaintflow import (
    Actor,
    ConcurrentUpdate,
    ConditionFailed,
    Engine,
    InvalidInput,
    MissingFields,
    NotFound,
    Scheduler,
    SimulatedClock,
    TimerRefused,
    UnknownTrigger,
    parse_rules,
)
from complaintflow.rules.loader import default_rules_text
from complaintflow.storage.tables import events as E
from complaintflow.timers import Consent
from tests.support import CS, complaint_fields


def event_count(engine: Engine) -> int:
    with engine.database.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(E)).scalar_one())


def messages(exc: InvalidInput | MissingFields) -> dict[str, str]:
    return {p.field: p.message for p in exc.problems}


def test_a_misspelt_trigger_names_the_trigger(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    before = event_count(engine)
    with pytest.raises(UnknownTrigger) as info:
        engine.fire(number, "recrod", CS)
    assert info.value.reason.endswith("; did you mean 'record'?")
    with pytest.raises(UnknownTrigger) as info:
        engine.fire(number, "zzzzzz", CS)
    assert "did you mean" not in str(info.value)
    assert event_count(engine) == before


def test_misspelt_fields_name_the_field(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as info:
        engine.submit(complaint_fields(chanel="phone"), CS)
    assert messages(info.value)["chanel"] == "no such field; did you mean 'channel'?"
    number = engine.submit(complaint_fields(), CS).number
    before = event_count(engine)
    with pytest.raises(MissingFields) as refused:
        engine.fire(number, "record", CS, {"custmer_name": "华东", "readback_confirmed": True})
    # the closest declared field, even one this trigger may not set (that is said next)
    assert messages(refused.value)["custmer_name"] == (
        "no such field; did you mean 'customer_name'?")
    assert event_count(engine) == before


def test_a_misspelt_enum_value_names_the_value(engine: Engine) -> None:
    """An unknown value lists the allowed ones and, when one is close, names it."""
    with pytest.raises(InvalidInput) as info:
        engine.submit(complaint_fields(channel="phon", forwarded_by="nobody"), CS)
    found = messages(info.value)
    assert found["channel"].startswith("'phon' is not one of phone, fax, letter")
    assert found["channel"].endswith("; did you mean 'phone'?")
    assert "did you mean" not in found["forwarded_by"]
    assert event_count(engine) == 0


def test_a_misspelt_role_names_the_role(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    typo = Actor("li.na", ["custmer_service", "quality"])
    for call in (lambda: engine.fire(number, "record", typo),
                 lambda: engine.available_triggers(number, typo),
                 lambda: engine.submit(complaint_fields(), typo)):
        with pytest.raises(InvalidInput) as info:
            call()
        assert [str(p) for p in info.value.problems] == [
            "actor.roles: unknown role 'custmer_service'; did you mean 'customer_service'?"]
    assert engine.find().total == 1


def test_a_misspelt_timer_names_the_timer(engine: Engine, clock: SimulatedClock) -> None:
    number = engine.submit(complaint_fields(), CS).number
    timers = [t.timer for t in engine.timers(number)]
    assert timers
    typo = timers[0][:-1] + "x" + timers[0][-1]  # one letter more
    before = event_count(engine)
    consent = Consent(given_by="张伟", given_at=clock(), channel="phone", reason="客户同意延期")
    with pytest.raises(NotFound) as info:
        engine.extend_timer(number, typo, CS, 1, consent, reason="客户同意延期")
    assert info.value.kind == "timer"
    assert info.value.suggestion == timers[0]
    assert str(info.value).endswith(f"; did you mean {timers[0]!r}?")
    assert event_count(engine) == before


def test_search_filters_nobody_declares_are_refused_with_a_suggestion(engine: Engine) -> None:
    engine.submit(complaint_fields(), CS)
    with pytest.raises(InvalidInput) as info:
        engine.find(state=["received", "recieved"], severity="mayor", department="qualty")
    assert messages(info.value) == {
        "state": "'recieved' is declared by no rule set in use; did you mean 'received'?",
        "severity": "'mayor' is declared by no rule set in use; did you mean 'major'?",
        "department": "'qualty' is declared by no rule set in use; did you mean 'quality'?",
    }
    # declared values that match nothing are a plain empty page
    assert engine.find(state="closed", severity="major", department="logistics").total == 0
    # the handler is free text: no check
    assert engine.find(handler="nobody").total == 0
    assert engine.find(state="received").total == 1


def test_a_state_of_another_stored_rule_set_is_a_valid_filter(db_url: str,
                                                              clock: SimulatedClock) -> None:
    renamed = parse_rules(re.sub(r"\brevisited\b", "followed_up", default_rules_text()),
                          "renamed.yaml")
    with Engine.open(db_url, clock=clock) as old:
        old.submit(complaint_fields(), CS)
        with Engine.open(db_url, rules=renamed, clock=clock) as new:
            assert new.find(state="revisited").total == 0  # only in the default rule set
            assert old.find(state="followed_up").total == 0  # only in the renamed one
            with pytest.raises(InvalidInput, match="did you mean 'followed_up'"):
                old.find(state="folowed_up")


# -- opening an engine, and the clock ----------------------------------------------------------


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "not a database URL"),
    ("postgresql://u@h:port/db", "a malformed database URL"),
    ("mysql://u@h/db", "unsupported database 'mysql'"),
    ("sqlite+nosuch:///x.db", "unknown SQLite driver 'nosuch'"),
    ("postgresql+nosuch://u@h/db", "unknown PostgreSQL driver 'nosuch'"),
])
def test_a_database_url_it_cannot_use_is_invalid_input(url: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Engine.open(url)
    assert info.value.context == "database URL"
    assert message in str(info.value)
    assert "sqlite:///FILE" in str(info.value)


def test_a_url_that_is_not_text_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="text, not bytes"):
        Engine.open(b"sqlite://")  # type: ignore[arg-type]


@pytest.mark.parametrize(("options", "field"), [
    ({"pool_size": 0}, "pool_size"),
    ({"pool_size": True}, "pool_size"),
    ({"pool_size": 1001}, "pool_size"),
    ({"max_overflow": -1}, "max_overflow"),
    ({"max_overflow": "3"}, "max_overflow"),
    ({"clock": "now"}, "clock"),
])
def test_bad_engine_options_are_refused_before_anything_is_created(
        tmp_path: Path, options: dict[str, object], field: str) -> None:
    target = tmp_path / "never.db"
    with pytest.raises(InvalidInput) as info:
        Engine.open(f"sqlite:///{target}", **options)  # type: ignore[arg-type]
    assert [p.field for p in info.value.problems] == [field]
    assert not target.exists()


def test_pool_sizes_apply_to_every_pool(db_url: str, clock: SimulatedClock) -> None:
    with Engine.open(db_url, clock=clock, pool_size=2, max_overflow=1) as engine:
        engine.submit(complaint_fields(), CS)
        pools = [db.pool for db in engine.databases]
        assert len(pools) == (2 if engine.dialect == "postgresql" else 1)
        for pool in pools:
            assert pool.size() == 2  # type: ignore[attr-defined]
            assert pool._max_overflow == 1  # type: ignore[attr-defined]


def test_pool_sizes_are_ignored_for_an_in_memory_database(clock: SimulatedClock) -> None:
    with Engine.open("sqlite://", clock=clock, pool_size=3) as engine:
        assert engine.submit(complaint_fields(), CS).number


START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize("start", [datetime(2026, 3, 2, 9, 0), "2026-03-02T09:00+08:00", None])
def test_a_simulated_clock_needs_an_aware_start(start: object) -> None:
    with pytest.raises(InvalidInput) as info:
        SimulatedClock(start)  # type: ignore[arg-type]
    assert info.value.context == "clock"
    assert "not an aware datetime" in str(info.value)


def test_a_simulated_clock_only_moves_forward() -> None:
    clock = SimulatedClock(START)
    for bad in (timedelta(seconds=-1), 5):
        with pytest.raises(InvalidInput, match="only forward"):
            clock.advance(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="past the year 9999"):
        clock.advance(timedelta(days=3_000_000))
    with pytest.raises(InvalidInput, match="does not run backwards"):
        clock.set(START - timedelta(seconds=1))
    with pytest.raises(InvalidInput, match="not an aware datetime"):
        clock.set(datetime(2026, 3, 3))
    assert clock() == START
    clock.set(START + timedelta(hours=1))
    assert clock() == START + timedelta(hours=1)


def test_times_in_refusals_are_in_the_rules_zone(engine: Engine, clock: SimulatedClock) -> None:
    number = engine.submit(complaint_fields(), CS).number
    view = next(t for t in engine.timers(number) if t.due_at is not None)
    assert view.due_at is not None
    clock.set(view.due_at + timedelta(minutes=1))  # due, the scheduler has not run
    consent = Consent(given_by="张伟", given_at=clock(), channel="phone", reason="客户同意延期")
    with pytest.raises(TimerRefused) as info:
        engine.extend_timer(number, view.timer, CS, 1, consent, reason="客户同意延期")
    local = view.due_at.astimezone(engine.zone)
    assert f"the deadline {local:%Y-%m-%d %H:%M}" in info.value.reason
    assert f"({engine.zone.key})" in info.value.reason
    assert "+00:00" not in info.value.reason and "Z " not in info.value.reason


@pytest.mark.parametrize("version", [0, -1, 2**62])
def test_a_version_no_complaint_can_have_is_invalid_input(engine: Engine, clock: SimulatedClock,
                                                          version: int) -> None:
    number = engine.submit(complaint_fields(), CS).number
    before = event_count(engine)
    with pytest.raises(InvalidInput) as info:
        engine.fire(number, "record", CS, {"readback_confirmed": True},
                    expected_version=version)
    assert [p.field for p in info.value.problems] == ["expected_version"]
    timer = engine.timers(number)[0].timer
    consent = Consent(given_by="张伟", given_at=clock(), channel="phone", reason="客户同意延期")
    with pytest.raises(InvalidInput) as info:
        engine.extend_timer(number, timer, CS, 1, consent, reason="客户同意延期",
                            expected_version=version)
    assert [p.field for p in info.value.problems] == ["expected_version"]
    assert event_count(engine) == before
    with pytest.raises(ConcurrentUpdate):  # a possible version, only not the current one
        engine.fire(number, "record", CS, {"readback_confirmed": True}, expected_version=2)


def test_a_failed_condition_says_which_part_failed_and_why(engine: Engine) -> None:
    number = engine.submit(complaint_fields(person_complained_about="wang.qa"), CS).number
    engine.fire(number, "record", CS, {"readback_confirmed": True})
    with pytest.raises(ConditionFailed) as info:
        engine.fire(number, "confirm", CS, {"responsible_department": "quality",
                                           "handler": "wang.qa"})
    assert info.value.reason == (
        "the condition of 'confirm' -> confirmed is not met: handler ('wang.qa') must not be "
        "person_complained_about ('wang.qa') (The handler may not be the person complained "
        "about (被投诉人应当回避).)")
    option = next(o for o in engine.available_triggers(number, CS) if o.trigger == "confirm")
    assert option.allowed  # the handler is still to be given: not judged yet


# -- arguments of the other entry points -------------------------------------------------------


@pytest.mark.parametrize(("options", "field"), [
    ({"threads": "2"}, "threads"),
    ({"threads": 0}, "threads"),
    ({"batch_size": 0}, "batch_size"),
    ({"max_batches_per_tick": 1.5}, "max_batches_per_tick"),
    ({"min_interval": 0}, "min_interval"),
    ({"max_interval": "30"}, "max_interval"),
    ({"min_interval": 10.0, "max_interval": 5.0}, "min_interval"),
    ({"worker": ""}, "worker"),
])
def test_scheduler_options_are_checked(engine: Engine, options: dict[str, object],
                                       field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Scheduler(engine, **options)  # type: ignore[arg-type]
    assert [p.field for p in info.value.problems] == [field]


def test_outbox_ack_takes_ids_only(engine: Engine) -> None:
    for bad in (5, "12", ["a"], [0], [True], [2**63]):
        with pytest.raises(InvalidInput, match="notification ids"):
            engine.outbox.ack(bad)  # type: ignore[arg-type]
    assert engine.outbox.ack([]) == 0
    assert engine.outbox.ack([12345]) == 0  # no such notification: nothing was pending


def test_verify_and_lookups_check_their_arguments(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    for call, field in (
        (lambda: engine.verify(deep=True, since=datetime(2026, 3, 1)), "since"),
        (lambda: engine.verify(deep=True, since="2026-03-01"), "since"),
        (lambda: engine.verify(since=START), "since"),  # plain verification has no since
        (lambda: engine.verify(progress=5), "progress"),
        (lambda: engine.timers(5), "number"),
        (lambda: engine.available_triggers(b"TS", CS), "number"),
        (lambda: engine.subscribe(5), "observer"),
    ):
        with pytest.raises(InvalidInput) as info:
            call()
        assert [p.field for p in info.value.problems] == [field]
    assert engine.verify(deep=True, since=START).ok
    assert engine.available_triggers(number, CS)


def test_a_reader_with_a_misspelt_role_is_refused_not_shown_masked_data(engine: Engine) -> None:
    """get, history, find and replay took any role and showed personal data masked, so a
    host with a typo in a role never learnt why its readers saw 138****5678."""
    number = engine.submit(complaint_fields(), CS).number
    reader = Actor("li.na", ("customer_servce",))
    reads = [lambda: engine.get(number, reader), lambda: engine.history(number, reader),
             lambda: engine.find(actor=reader), lambda: engine.replay(number, actor=reader)]
    for read in reads:
        with pytest.raises(InvalidInput) as info:
            read()
        assert messages(info.value) == {
            "actor.roles": "unknown role 'customer_servce'; did you mean 'customer_service'?"}
    with pytest.raises(InvalidInput) as info:
        engine.replay(number, actor="li.na")  # type: ignore[arg-type]
    assert messages(info.value) == {"actor": "an Actor or None"}
    assert engine.get(number, CS).fields["phone"] == complaint_fields()["phone"]
