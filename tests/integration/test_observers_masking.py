"""Observers run after the commit with unmasked data and can neither undo nor block a
transition; personal data is masked for every actor without a reader role."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from complaintflow import (
    Actor,
    CommittedEvent,
    Complaint,
    ConcurrentUpdate,
    Engine,
    InvalidInput,
    RoleNotAllowed,
    SimulatedClock,
    UnknownTrigger,
)
from complaintflow.rules.loader import default_rules_text
from tests.support import AFTER, AUDITOR, CS, GM, QA, SALES, TOP, complaint_fields

PERSONAL = ("address", "contact_person", "email", "phone")
CLEAR = {
    "contact_person": "张伟",
    "phone": "13812345678",
    "email": "zhang.wei@example.cn",
    "address": "上海市浦东新区张江路100号",
}
READERS = [CS, SALES, AFTER, GM, TOP, Actor("mixed", ["quality", "customer_service"])]
NON_READERS = [AUDITOR, QA, Actor("mgr", ["department_manager"])]
ASSIGN = {"responsible_department": "quality", "handler": "wang.qa"}
REPORT = {
    "root_cause": "process",
    "responsibility": "company",
    "investigation_report": "绕组浸漆不良",
}


# -- observers ----------------------------------------------------------------------------------


def complaint_of(item: CommittedEvent) -> Complaint:
    """Every transition's event comes with the complaint as it now is."""
    assert item.complaint is not None
    return item.complaint


def test_observers_run_after_commit(engine: Engine, db_url: str, clock: SimulatedClock) -> None:
    seen: list[tuple[int, str, str, int]] = []
    with Engine.open(db_url, clock=clock) as reader:

        def observer(item: CommittedEvent) -> None:
            fresh = reader.get(item.event.number, CS)
            seen.append((item.event.seq, complaint_of(item).state, fresh.state, fresh.version))

        engine.subscribe(observer)
        c = engine.submit(complaint_fields(), CS)
        engine.fire(c.number, "record", CS, {"readback_confirmed": True})
        engine.fire(c.number, "confirm", CS, ASSIGN)
    assert seen == [
        (1, "received", "received", 1),
        (2, "recorded", "recorded", 2),
        (3, "confirmed", "confirmed", 3),
    ]


def test_observers_receive_what_was_stored_unmasked(engine: Engine) -> None:
    got: list[CommittedEvent] = []
    engine.subscribe(got.append)
    submitted = engine.submit(complaint_fields(), AUDITOR)
    assert submitted.masked == PERSONAL
    fired = engine.fire(
        submitted.number, "record", CS, {"readback_confirmed": True, "phone": "13900001111"}
    )
    assert [item.event.seq for item in got] == [1, 2]

    first, second = got
    for name, value in CLEAR.items():
        assert complaint_of(first).fields[name] == value
        assert first.event.payload["fields"][name] == value
    assert complaint_of(first).masked == ()
    assert complaint_of(second).fields["phone"] == "13900001111"
    assert second.event.payload["set"]["phone"] == "13900001111"
    assert complaint_of(second) == fired
    assert [first.event, second.event] == engine.history(submitted.number, CS)
    assert second.complaint == engine.get(submitted.number, CS)
    assert first.event.actor_id == AUDITOR.id


def test_a_failing_observer_is_logged_and_blocks_nothing(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    after: list[int] = []

    def broken(item: CommittedEvent) -> None:
        raise RuntimeError("mail server down")

    engine.subscribe(broken)
    engine.subscribe(lambda item: after.append(item.event.seq))
    with caplog.at_level(logging.ERROR, logger="complaintflow"):
        c = engine.submit(complaint_fields(), CS)
        fired = engine.fire(c.number, "record", CS, {"readback_confirmed": True})
    assert fired.state == "recorded"
    assert engine.get(c.number, CS).state == "recorded"
    assert after == [1, 2]
    failures = [r for r in caplog.records if r.name == "complaintflow"]
    assert len(failures) == 2
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failures)
    assert all(c.number in r.getMessage() for r in failures)
    assert all(isinstance(r.exc_info[1], RuntimeError) for r in failures if r.exc_info)
    assert engine.verify().ok


def test_unsubscribe(engine: Engine) -> None:
    calls: list[int] = []
    unsubscribe = engine.subscribe(lambda item: calls.append(item.event.seq))
    c = engine.submit(complaint_fields(), CS)
    unsubscribe()
    unsubscribe()  # a second call is harmless
    engine.fire(c.number, "record", CS, {"readback_confirmed": True})
    assert calls == [1]


def test_refused_and_replayed_requests_notify_nothing(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS, idempotency_key="k")
    calls: list[CommittedEvent] = []
    engine.subscribe(calls.append)
    with pytest.raises(RoleNotAllowed):
        engine.fire(c.number, "record", QA, {"readback_confirmed": True})
    with pytest.raises(UnknownTrigger):
        engine.fire(c.number, "teleport", CS)
    with pytest.raises(ConcurrentUpdate):
        engine.fire(c.number, "record", CS, {"readback_confirmed": True}, expected_version=7)
    engine.submit(complaint_fields(), CS, idempotency_key="k")
    assert calls == []


# -- masking ------------------------------------------------------------------------------------


def assert_masked(fields: Mapping[str, Any], names: tuple[str, ...] = PERSONAL) -> None:
    for name in names:
        shown = fields[name]
        assert isinstance(shown, str)
        assert shown != CLEAR[name]
        assert "*" in shown
    assert fields["customer_name"] == "华东机电有限公司"


def assert_clear(fields: Mapping[str, Any]) -> None:
    for name, value in CLEAR.items():
        assert fields[name] == value


def test_masked_values_are_recognisable_but_useless(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    shown = engine.get(c.number, AUDITOR).fields
    assert shown["phone"] == "138****5678"
    assert shown["email"] == "z***@example.cn"
    assert shown["contact_person"] == "张***"
    assert "浦东" not in shown["address"]


@pytest.mark.parametrize("actor", [*NON_READERS, None], ids=lambda a: a.id if a else "nobody")
def test_get_masks_personal_data(engine: Engine, actor: Actor | None) -> None:
    c = engine.submit(complaint_fields(), CS)
    seen = engine.get(c.number, actor)
    assert seen.masked == PERSONAL
    assert_masked(seen.fields)
    assert seen.to_json()["masked"] == list(PERSONAL)


@pytest.mark.parametrize("actor", READERS, ids=lambda a: a.id)
def test_get_shows_personal_data_to_readers(engine: Engine, actor: Actor) -> None:
    c = engine.submit(complaint_fields(), CS)
    seen = engine.get(c.number, actor)
    assert seen.masked == ()
    assert_clear(seen.fields)


def test_only_present_fields_are_listed_as_masked(engine: Engine) -> None:
    c = engine.submit(complaint_fields(email=None, address=None), CS)
    seen = engine.get(c.number, AUDITOR)
    assert seen.masked == ("contact_person", "phone")
    assert "email" not in seen.fields


def test_history_masks_personal_data(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    engine.fire(
        c.number, "record", CS, {"readback_confirmed": True, "phone": "13900001111", "quantity": 4}
    )
    for actor in (AUDITOR, QA, None):
        submitted, recorded = engine.history(c.number, actor)
        assert_masked(submitted.payload["fields"])
        assert recorded.payload["set"]["phone"] == "139****1111"
        assert recorded.payload["set"]["quantity"] == 4
        assert recorded.payload["set"]["readback_confirmed"] is True
    submitted, recorded = engine.history(c.number, CS)
    assert_clear(submitted.payload["fields"])
    assert recorded.payload["set"]["phone"] == "13900001111"
    # masking the view does not change what was hashed
    assert [e.hash for e in engine.history(c.number, AUDITOR)] == [submitted.hash, recorded.hash]


def test_find_masks_personal_data(engine: Engine) -> None:
    for _ in range(3):
        engine.submit(complaint_fields(), CS)
    for actor in (AUDITOR, QA, None):
        page = engine.find(actor=actor)
        assert page.total == 3
        for item in page.items:
            assert item.masked == PERSONAL
            assert_masked(item.fields)
    for item in engine.find(actor=CS).items:
        assert item.masked == ()
        assert_clear(item.fields)


def test_results_of_submit_and_fire_are_masked_per_actor(engine: Engine) -> None:
    by_auditor = engine.submit(complaint_fields(), AUDITOR)
    assert by_auditor.masked == PERSONAL
    assert_masked(by_auditor.fields)
    by_cs = engine.submit(complaint_fields(), CS)
    assert by_cs.masked == ()
    assert_clear(by_cs.fields)

    n = by_cs.number
    recorded = engine.fire(n, "record", CS, {"readback_confirmed": True})
    assert_clear(recorded.fields)
    engine.fire(n, "confirm", CS, ASSIGN)
    by_qa: Complaint = engine.fire(n, "submit_report", QA, REPORT, idempotency_key="rep")
    assert by_qa.state == "investigated"
    assert by_qa.masked == PERSONAL
    assert_masked(by_qa.fields)
    replayed = engine.fire(n, "submit_report", QA, REPORT, idempotency_key="rep")
    assert replayed == by_qa
    # the stored data was not masked
    assert_clear(engine.get(n, CS).fields)
    assert engine.verify().ok


def test_mask_event_copies_only_events_with_personal_data(engine: Engine) -> None:
    """Replay masks every event: one without personal data is handed back as it is."""
    number = engine.submit(complaint_fields(), CS).number
    engine.fire(number, "record", CS, {"readback_confirmed": True})
    submitted, recorded = engine.history(number, CS)
    assert engine.mask_event(recorded, None) is recorded
    masked = engine.mask_event(submitted, None)
    assert masked is not submitted and masked.payload != submitted.payload
    assert engine.mask_event(submitted, CS) is submitted  # CS may read personal data
    replayed = engine.replay(number)
    assert replayed.events[1] == recorded and replayed.events[0] == masked


def test_mask_event_masks_by_the_rule_version_of_the_event(
    db_url: str, clock: SimulatedClock, tmp_path: Path
) -> None:
    """An event of a version this engine has not read yet was masked by the current rules:
    a field personal when it was recorded (phone) was handed out in clear."""
    old = Engine.open(db_url, clock=clock)
    try:
        number = old.submit(complaint_fields(), CS).number
        submitted = old.history(number, CS)[0]
    finally:
        old.close()
    newer = tmp_path / "newer.yaml"
    newer.write_text(default_rules_text().replace(
        "{id: phone, type: string, personal: true,", "{id: phone, type: string,"), "utf-8")
    engine = Engine.open(db_url, clock=clock, rules=str(newer))
    try:
        assert "phone" not in engine.rules.personal_fields
        masked = engine.mask_event(submitted, None).payload["fields"]
        assert masked["phone"] == "138****5678"
        assert_masked(masked)
        assert engine.history(number)[0].payload["fields"]["phone"] == "138****5678"
    finally:
        engine.close()


def test_mask_event_refuses_arguments_of_the_wrong_kind(engine: Engine) -> None:
    """Before: AttributeError."""
    number = engine.submit(complaint_fields(), CS).number
    [event] = engine.history(number, CS)
    with pytest.raises(InvalidInput) as info:
        engine.mask_event({}, "li.na")  # type: ignore[arg-type]
    assert {p.field for p in info.value.problems} == {"event", "actor"}
    with pytest.raises(InvalidInput):
        engine.mask_event(event, "li.na")  # type: ignore[arg-type]
