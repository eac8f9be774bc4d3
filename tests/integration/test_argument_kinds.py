"""Arguments of the wrong kind, across the public API of ``Engine``, ``Outbox`` and
``Scheduler``, on both backends: each call is refused with ``InvalidInput`` naming the
argument (never a ``TypeError``, an ``AttributeError`` or a driver error as
``StorageError``), and nothing is stored."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from complaintflow import Consent, Engine, InvalidInput, Scheduler, SimulatedClock
from complaintflow.audit import stream_events
from complaintflow.storage import db
from tests.support import CS, complaint_fields

NAIVE = datetime(2026, 3, 2, 9, 0)
Call = Callable[[Engine, str, Consent], Any]


def _extend(**wrong: Any) -> Call:
    def call(engine: Engine, number: str, consent: Consent) -> Any:
        given: dict[str, Any] = {"number": number, "timer": "whole_complaint", "actor": CS,
                                 "amount": 1, "consent": consent, "reason": "客户同意延期",
                                 **wrong}
        return engine.extend_timer(given.pop("number"), given.pop("timer"),
                                   given.pop("actor"), given.pop("amount"),
                                   given.pop("consent"), **given)
    return call


def _stream(**wrong: Any) -> Call:
    def call(engine: Engine, number: str, consent: Consent) -> Any:
        with db.read(engine.database) as conn:
            return list(stream_events(engine, conn, **wrong))
    return call


CALLS: list[tuple[str, Call, set[str]]] = [
    ("extend_timer timer list", _extend(timer=["x"]), {"timer"}),
    ("extend_timer number list", _extend(number=["x"]), {"number"}),
    ("extend_timer number int", _extend(number=5), {"number"}),
    ("extend_timer actor text", _extend(actor="li.na"), {"actor"}),
    ("extend_timer all at once", _extend(number=5, timer=None, actor=None, amount=True),
     {"number", "timer", "actor", "amount"}),
    ("claim lease text", lambda e, n, c: e.outbox.claim(lease="5m"), {"lease"}),
    ("claim lease zero", lambda e, n, c: e.outbox.claim(lease=timedelta(0)), {"lease"}),
    ("claim lease negative", lambda e, n, c: e.outbox.claim(lease=timedelta(seconds=-1)),
     {"lease"}),
    ("claim lease past year 9999", lambda e, n, c: e.outbox.claim(lease=timedelta.max),
     {"lease"}),
    ("claim lease seconds", lambda e, n, c: e.outbox.claim(lease=300), {"lease"}),
    ("claim limit bool", lambda e, n, c: e.outbox.claim(limit=True), {"limit"}),
    ("deliver limit text", lambda e, n, c: (e.outbox.add_sink(print),
                                            e.outbox.deliver(limit="5")), {"limit"}),
    ("add_sink not callable", lambda e, n, c: e.outbox.add_sink("print"), {"sink"}),
    ("list_timers breached text", lambda e, n, c: e.list_timers(breached="yes"), {"breached"}),
    ("list_timers breached int", lambda e, n, c: e.list_timers(breached=1), {"breached"}),
    ("list_timers status list", lambda e, n, c: e.list_timers(status=["running"]), {"status"}),
    ("list_timers status misspelt", lambda e, n, c: e.list_timers(status="runing"),
     {"status"}),
    ("list_timers due_before naive", lambda e, n, c: e.list_timers(due_before=NAIVE),
     {"due_before"}),
    ("list_timers due_before text", lambda e, n, c: e.list_timers(due_before="2026-03-02"),
     {"due_before"}),
    ("list_timers offset text", lambda e, n, c: e.list_timers(offset="1"), {"offset"}),
    ("list_timers offset negative", lambda e, n, c: e.list_timers(offset=-1), {"offset"}),
    ("list_timers all at once", lambda e, n, c: e.list_timers(
        status=5, breached="no", due_before=NAIVE, limit=True, offset=None),
     {"status", "breached", "due_before", "limit", "offset"}),
    ("timers number int", lambda e, n, c: e.timers(5), {"number"}),
    ("get number empty", lambda e, n, c: e.get(""), {"number"}),
    ("shown text", lambda e, n, c: e.shown("2026-03-02"), {"moment"}),
    ("shown naive", lambda e, n, c: e.shown(NAIVE), {"moment"}),
    ("replay at naive", lambda e, n, c: e.replay(n, at=NAIVE), {"at"}),
    ("submit key int", lambda e, n, c: e.submit(complaint_fields(), CS, idempotency_key=5),
     {"idempotency_key"}),
    ("fire key empty", lambda e, n, c: e.fire(n, "record", CS, {"readback_confirmed": True},
                                              idempotency_key=""), {"idempotency_key"}),
    ("fire comment int", lambda e, n, c: e.fire(n, "record", CS, {"readback_confirmed": True},
                                                comment=5), {"comment"}),
    ("find offset text", lambda e, n, c: e.find(offset="1"), {"offset"}),
    ("recompute_timers actor text", lambda e, n, c: e.recompute_timers("li.na"), {"actor"}),
    ("stream_events since naive", _stream(since=NAIVE), {"since"}),
    ("stream_events batch bool", _stream(batch=True), {"batch"}),
    ("scheduler worker int", lambda e, n, c: Scheduler(e, worker=5), {"worker"}),
    ("scheduler threads text", lambda e, n, c: Scheduler(e, threads="2"), {"threads"}),
    ("fire_batch now naive", lambda e, n, c: Scheduler(e).fire_batch(NAIVE), {"now"}),
    ("fire_batch now text", lambda e, n, c: Scheduler(e).fire_batch("now"), {"now"}),
    ("run_reviews now text", lambda e, n, c: Scheduler(e).run_reviews("now"), {"now"}),
    ("scheduler stop wait text", lambda e, n, c: Scheduler(e).stop(wait="no"), {"wait"}),
    ("scheduler run stop text", lambda e, n, c: Scheduler(e).run("stop"), {"stop"}),
]


@pytest.mark.parametrize(("call", "fields"), [pytest.param(call, fields, id=label)
                                              for label, call, fields in CALLS])
def test_an_argument_of_the_wrong_kind_is_named(engine: Engine, clock: SimulatedClock,
                                                call: Call, fields: set[str]) -> None:
    c = engine.submit(complaint_fields(), CS)
    consent = Consent("张伟", clock(), "phone", "客户同意")
    before = (engine.get(c.number, CS), engine.outbox.pending(), engine.timers(c.number))
    with pytest.raises(InvalidInput) as info:
        call(engine, c.number, consent)
    assert {p.field for p in info.value.problems} == fields
    assert (engine.get(c.number, CS), engine.outbox.pending(), engine.timers(c.number)) \
        == before
    assert engine.verify().ok


@pytest.mark.parametrize("options", [{"rules": 123}, {"loaded_by": 5}, {"pool_size": True},
                                     {"max_overflow": "10"}], ids=str)
def test_engine_open_names_options_of_the_wrong_kind(tmp_path: Path, clock: SimulatedClock,
                                                     options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        Engine.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock, **options)
    assert {p.field for p in info.value.problems} == set(options)
    assert not (tmp_path / "c.db").exists()


def test_a_lease_of_the_right_kind_is_taken(engine: Engine, clock: SimulatedClock) -> None:
    """The bounds: one microsecond and 30 days are leases; run() takes an Event."""
    assert engine.outbox.claim(lease=timedelta(microseconds=1)) == []
    assert engine.outbox.claim(lease=timedelta(days=30)) == []
    stop = threading.Event()
    stop.set()
    Scheduler(engine).run(stop)
    other = multiprocessing.get_context("spawn").Event()  # any event with wait and is_set
    other.set()
    Scheduler(engine).run(other)
