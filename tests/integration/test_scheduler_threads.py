"""A scheduler process fires its batches on several threads (PostgreSQL), one on SQLite.

Threads are concurrent workers like processes (each batch has its own connection and
transaction; the claim skips what another batch holds), so the exactly-once tests with
several processes run with the default number of threads too. Here, on both backends:
every due deadline fires once and in due order within its complaint with several threads
and small batches; the threads that claimed (several on PostgreSQL, the caller alone on
SQLite); ``max_batches_per_tick`` counts the batches of all threads; sinks never see two
batches at once; the CLI's ``--threads`` is checked.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from complaintflow import Actor, Engine, SimulatedClock, parse_rules
from complaintflow.cli import main
from complaintflow.scheduler import Scheduler

START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
CLERK = Actor("clerk.li", ["clerk"])
COMPLAINTS = 12
PER_COMPLAINT = 5  # 4 warnings and a breach

RULES = parse_rules(
    """
name: threaded scheduler
initial: received
states:
  - {id: received, label: {zh: 接获, en: Received}}
  - {id: closed, label: {zh: 结案, en: Closed}, final: true}
roles:
  - {id: clerk, label: {zh: 文员, en: Clerk}}
  - {id: manager, label: {zh: 经理, en: Manager}}
fields:
  - {id: note, type: string, label: {zh: 备注, en: Note}}
severity:
  levels: [general, major]
  default: general
timers:
  - id: whole
    label: {zh: 全程, en: Whole}
    start: {on: receipt}
    stop: [closed]
    duration: {minutes: 50}
    warnings:
      - {fraction: 0.2, notify: [clerk]}
      - {fraction: 0.4}
      - {fraction: 0.6, notify: [clerk]}
      - {fraction: 0.8}
    on_breach: {notify: [manager], raise_severity: major}
transitions:
  - {trigger: close, from: [received], to: closed, roles: [manager]}
""",
    "threads.yaml",
)


@pytest.fixture
def world(db_url: str) -> Iterator[Engine]:
    clock = SimulatedClock(START)
    engine = Engine.open(db_url, rules=RULES, clock=clock)
    try:
        for i in range(COMPLAINTS):
            engine.submit({"note": f"complaint {i}"}, CLERK)
            clock.advance(timedelta(minutes=1))
        clock.set(START + timedelta(hours=3))  # everything is due
        yield engine
    finally:
        engine.close()


def claiming_threads(engine: Engine) -> tuple[set[int], Any]:
    """The threads that send a claim statement (collected into the returned set)."""
    seen: set[int] = set()

    def listener(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().startswith("SELECT deadlines.id") and "LIMIT" in statement:
            seen.add(threading.get_ident())

    sa.event.listen(engine.database, "before_cursor_execute", listener)
    return seen, listener


def test_several_threads_fire_each_deadline_once_in_due_order(world: Engine) -> None:
    engine = world
    postgres = engine.database.dialect.name == "postgresql"
    scheduler = Scheduler(engine, worker="w", batch_size=4, threads=3)
    seen, listener = claiming_threads(engine)
    try:
        first = scheduler.tick()
    finally:
        sa.event.remove(engine.database, "before_cursor_execute", listener)
    # every thread claimed at least once on PostgreSQL; SQLite fires on the caller's thread
    if postgres:
        assert len(seen) == 3
    else:
        assert seen == {threading.get_ident()}
    # a thread stops at a short batch, e.g. one that deferred a deadline while an earlier
    # one of its complaint was held by another thread: the next ticks fire the rest
    fired, warnings, breaches = first.fired, first.warnings, first.breaches
    for _ in range(20):
        report = scheduler.tick()
        fired, warnings, breaches = (
            fired + report.fired,
            warnings + report.warnings,
            breaches + report.breaches,
        )
        if report.next_due is None:
            break
    total = COMPLAINTS * PER_COMPLAINT
    assert fired == total
    assert warnings == COMPLAINTS * 4 and breaches == COMPLAINTS
    with engine.database.connect() as conn:
        unfired = conn.execute(
            sa.text("SELECT count(*) FROM deadlines WHERE fired_at IS NULL")
        ).scalar_one()
        rows = conn.execute(
            sa.text(
                "SELECT complaint_id, seq, payload FROM events "
                "WHERE type IN ('timer_warning', 'timer_breached') ORDER BY complaint_id, seq"
            )
        ).all()
        notes = conn.execute(sa.text("SELECT count(*), count(DISTINCT key) FROM outbox")).one()
    assert unfired == 0
    fired = Counter(
        (r.complaint_id, json.loads(r.payload)["index"], json.loads(r.payload)["kind"])
        for r in rows
    )
    assert len(fired) == total and set(fired.values()) == {1}
    due: dict[int, list[str]] = {}
    for r in rows:
        due.setdefault(r.complaint_id, []).append(json.loads(r.payload)["due_at"])
    assert all(d == sorted(d) for d in due.values()), "fired out of due order"
    assert tuple(notes) == (COMPLAINTS * 3, COMPLAINTS * 3)
    assert engine.verify().ok


def test_max_batches_per_tick_counts_the_batches_of_every_thread(world: Engine) -> None:
    engine = world
    report = Scheduler(engine, batch_size=5, threads=2, max_batches_per_tick=3).tick()
    assert report.batches == 3
    assert report.fired == 15


def test_sinks_never_see_two_batches_at_once(world: Engine) -> None:
    engine = world
    inside = 0
    overlaps = 0
    calls = 0
    guard = threading.Lock()

    def sink(_item: Any) -> None:
        nonlocal inside, overlaps, calls
        with guard:
            inside += 1
            calls += 1
            overlaps += inside > 1
        time.sleep(0.001)  # long enough for another thread's batch to arrive meanwhile
        with guard:
            inside -= 1

    engine.subscribe(sink)
    report = Scheduler(engine, batch_size=3, threads=3).tick()
    assert report.fired > 3 and calls == report.fired
    assert overlaps == 0


def test_threads_must_be_at_least_one(world: Engine) -> None:
    with pytest.raises(ValueError, match="threads"):
        Scheduler(world, threads=0)


def test_cli_scheduler_run_refuses_zero_threads(tmp_path: Any) -> None:
    result = CliRunner().invoke(
        main, ["--db", str(tmp_path / "c.db"), "scheduler", "run", "--threads", "0"]
    )
    assert result.exit_code == 2
    assert "--threads" in result.output
