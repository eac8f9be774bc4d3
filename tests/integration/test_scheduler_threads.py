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
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from complaintflow import Engine, InvalidInput, SimulatedClock, parse_rules
from complaintflow.cli import main
from complaintflow.scheduler import Scheduler
from tests.integration.test_scheduler_exactly_once import (
    CLERK,
    NOTES_PER_COMPLAINT,
    PER_COMPLAINT,
    RULES_YAML,
    SPACING,
    START,
    TIMERS,
    WARNINGS,
    fire_instant,
)

COMPLAINTS = 3  # 50 deadlines each (the exactly-once tests' rule file)


@pytest.fixture
def world(db_url: str) -> Iterator[Engine]:
    clock = SimulatedClock(START)
    engine = Engine.open(db_url, rules=parse_rules(RULES_YAML, "threads.yaml"), clock=clock)
    try:
        for i in range(COMPLAINTS):
            engine.submit({"note": f"complaint {i}"}, CLERK)
            clock.advance(SPACING)
        clock.set(fire_instant(COMPLAINTS))  # everything is due
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
    scheduler = Scheduler(engine, worker="w", batch_size=7, threads=3)
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
    for _ in range(200):
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
    assert warnings == COMPLAINTS * WARNINGS * len(TIMERS)
    assert breaches == COMPLAINTS * len(TIMERS)
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
        (r.complaint_id, p["timer"], p["index"], p["kind"])
        for r in rows
        for p in [json.loads(r.payload)]
    )
    assert len(fired) == total and set(fired.values()) == {1}
    due: dict[int, list[str]] = {}
    for r in rows:
        due.setdefault(r.complaint_id, []).append(json.loads(r.payload)["due_at"])
    assert all(d == sorted(d) for d in due.values()), "fired out of due order"
    assert tuple(notes) == (COMPLAINTS * NOTES_PER_COMPLAINT,) * 2
    assert engine.verify().ok


def test_max_batches_per_tick_counts_the_batches_of_every_thread(world: Engine) -> None:
    engine = world
    scheduler = Scheduler(engine, batch_size=5, threads=2, max_batches_per_tick=3)
    calls = 0
    guard = threading.Lock()
    fire_batch = scheduler.fire_batch

    def counted(now: Any) -> Any:
        nonlocal calls
        with guard:
            calls += 1
        return fire_batch(now)

    scheduler.fire_batch = counted  # type: ignore[method-assign]
    report = scheduler.tick()
    assert calls == 3
    # a batch may come back short (a deadline deferred behind its complaint's earlier one)
    assert 0 < report.fired <= 15 and report.batches <= 3


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
    with pytest.raises(InvalidInput, match="threads"):
        Scheduler(world, threads=0)


def test_cli_scheduler_run_refuses_zero_threads(tmp_path: Any) -> None:
    result = CliRunner().invoke(
        main, ["--db", str(tmp_path / "c.db"), "scheduler", "run", "--threads", "0"]
    )
    assert result.exit_code == 2
    assert "--threads" in result.output


@pytest.mark.parametrize("args", [["--max-interval", "100000"], ["--min-interval", "90000"],
                                  ["--worker", "w" * 201]])
def test_cli_scheduler_run_refuses_what_the_scheduler_would(tmp_path: Any,
                                                            args: list[str]) -> None:
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "c.db"), "scheduler", "run",
                                       *args])
    assert result.exit_code == 2, result.output
    assert args[0] in result.output


def test_cli_scheduler_tick_takes_an_empty_worker_as_the_default(tmp_path: Any) -> None:
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "c.db"), "scheduler", "tick",
                                       "--worker", ""])
    assert result.exit_code == 0, result.output
