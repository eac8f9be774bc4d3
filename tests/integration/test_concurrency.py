"""Real OS processes on one database: lost races, and numbers given out concurrently.

The children are started with the 'spawn' method and each opens its own ``Engine`` on the
database under test (a SQLite file, or a fresh PostgreSQL schema), as separate application
servers would. Starting a Python process that imports the engine costs far more than a
race, so four workers are started once for the module and fed work through queues.
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from complaintflow import Actor, Engine, SimulatedClock
from tests.support import CS, SALES, complaint_fields

SPAWN = multiprocessing.get_context("spawn")
START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
TIMEOUT = 120  # seconds any one wait may take before the test gives up
RACES = 10
WORKERS, SUBMITS_EACH = 4, 25


# -- the worker (module level, so that 'spawn' can import it) ----------------------------------


def _worker(name: str, pair: Any, everyone: Any, tasks: Any, results: Any) -> None:
    """Run tasks until ``None``: ("fire", url, ...) released together with the other racer
    by ``pair``; ("submit", url, count) released together with every worker by
    ``everyone``; ("close", url). Each outcome goes to ``results`` as (name, outcome,
    detail), an exception by its class name."""
    engines: dict[str, Engine] = {}
    try:
        while (task := tasks.get(timeout=TIMEOUT)) is not None:
            kind, url, *args = task
            if kind == "close":
                if url in engines:
                    engines.pop(url).close()
                results.put((name, "closed", None))
                continue
            if url not in engines:
                engines[url] = Engine.open(url, clock=SimulatedClock(START))
            engine = engines[url]
            if kind == "fire":
                number, trigger, actor_id, roles, data, expected = args
                pair.wait(timeout=TIMEOUT)
                try:
                    c = engine.fire(number, trigger, Actor(actor_id, roles), data, expected)
                    results.put((name, "ok", (c.state, c.version)))
                except Exception as exc:
                    results.put((name, type(exc).__name__, str(exc)))
            else:
                (count,) = args
                everyone.wait(timeout=TIMEOUT)
                numbers = [
                    engine.submit(complaint_fields(customer_name=f"{name}-{i}"), SALES).number
                    for i in range(count)
                ]
                results.put((name, "ok", numbers))
    except BaseException:
        results.put((name, "crashed", traceback.format_exc()))
    finally:
        for engine in engines.values():
            engine.close()


class Workers:
    """The parent's handle on the worker processes."""

    def __init__(self, count: int) -> None:
        self.names = [f"W{i}" for i in range(count)]
        self.results = SPAWN.Queue()
        self.tasks = {name: SPAWN.Queue() for name in self.names}
        # held by the parent for the workers' whole life: a spawned child rebuilds each
        # semaphore by name, which fails once the parent's object is collected
        self.pair, self.everyone = SPAWN.Barrier(2), SPAWN.Barrier(count)
        self.procs = [
            SPAWN.Process(
                target=_worker,
                name=name,
                daemon=True,
                args=(name, self.pair, self.everyone, self.tasks[name], self.results),
            )
            for name in self.names
        ]
        for p in self.procs:
            p.start()

    def send(self, name: str, *task: Any) -> None:
        self.tasks[name].put(task)

    def collect(self, count: int) -> dict[str, tuple[str, Any]]:
        out: dict[str, tuple[str, Any]] = {}
        while len(out) < count:
            try:
                name, outcome, detail = self.results.get(timeout=TIMEOUT)
            except queue.Empty:
                codes = {p.name: p.exitcode for p in self.procs}
                pytest.fail(f"workers silent for {TIMEOUT}s; exit codes {codes}")
            if outcome == "crashed":
                pytest.fail(f"worker {name} crashed:\n{detail}")
            out[name] = (outcome, detail)
        return out

    def release(self, url: str) -> None:
        """Every worker closes its engine on ``url`` (before its schema is dropped)."""
        for name in self.names:
            self.send(name, "close", url)
        self.collect(len(self.names))

    def stop(self) -> None:
        for name in self.names:
            self.tasks[name].put(None)
        for p in self.procs:
            p.join(timeout=TIMEOUT)
        for p in self.procs:
            if p.is_alive():  # only our own children, by handle
                p.terminate()
                p.join(timeout=10)


@pytest.fixture(scope="module")
def workers() -> Iterator[Workers]:
    pool = Workers(WORKERS)
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path, workers: Workers) -> Iterator[str]:
    """A database URL the workers can open too (not ``:memory:``); they let go of it
    before it is removed."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        yield url
        workers.release(url)
        return
    from tests.conftest import new_pg_schema_url

    url, drop = new_pg_schema_url(request.getfixturevalue("pg_base_url"))
    try:
        yield url
        workers.release(url)
    finally:
        drop()


# -- (a) two processes, one complaint, the same expected version -----------------------------


def _history_is_contiguous(engine: Engine, number: str, version: int) -> None:
    events = engine.history(number, CS)
    assert [ev.seq for ev in events] == list(range(1, version + 1))
    for prev, ev in itertools.pairwise(events):
        assert ev.prev_hash == prev.hash


def test_two_processes_race_on_one_version(shared_url: str, workers: Workers) -> None:
    """confirm against reject from ``recorded`` (different targets), then propose_plan
    against propose_plan on one self-loop: each round exactly one process wins, the other
    gets ConcurrentUpdate and stores nothing."""
    a, b = workers.names[:2]
    winners = {a: 0, b: 0}

    def race(first: tuple[Any, ...], second: tuple[Any, ...]) -> str:
        workers.send(a, "fire", shared_url, *first)
        workers.send(b, "fire", shared_url, *second)
        got = workers.collect(2)
        assert sorted(outcome for outcome, _ in got.values()) == ["ConcurrentUpdate", "ok"], got
        winner = next(name for name, (outcome, _) in got.items() if outcome == "ok")
        winners[winner] += 1
        return winner

    with Engine.open(shared_url, clock=SimulatedClock(START)) as engine:
        for _ in range(RACES - 3):  # one complaint per round
            c = engine.submit(complaint_fields(), SALES)
            c = engine.fire(c.number, "record", CS, {"readback_confirmed": True})
            winner = race(
                (
                    c.number,
                    "confirm",
                    "li.na",
                    ["customer_service"],
                    {"responsible_department": "quality", "handler": "wang.qa"},
                    c.version,
                ),
                (
                    c.number,
                    "reject",
                    "wu.cs",
                    ["customer_service"],
                    {"rejection_reason": "不予受理"},
                    c.version,
                ),
            )
            after = engine.get(c.number, CS)
            assert after.version == 3
            assert after.state == ("confirmed" if winner == a else "closed")
            _history_is_contiguous(engine, c.number, 3)

        c = engine.submit(complaint_fields(), SALES)
        c = engine.fire(c.number, "record", CS, {"readback_confirmed": True})
        c = engine.fire(
            c.number, "confirm", CS, {"responsible_department": "quality", "handler": "wang.qa"}
        )
        c = engine.fire(
            c.number,
            "submit_report",
            Actor("wang.qa", ["quality"]),
            {"root_cause": "process", "responsibility": "company", "investigation_report": "x"},
        )
        for _ in range(3):  # the same complaint, round after round
            plans = {
                name: (
                    c.number,
                    "propose_plan",
                    f"{name}.qa",
                    ["quality"],
                    {"disposal_plan": f"plan {name}", "disposal_measures": ["repair"]},
                    c.version,
                )
                for name in (a, b)
            }
            winner = race(plans[a], plans[b])
            before, c = c, engine.get(c.number, CS)
            assert c.version == before.version + 1
            assert c.fields["disposal_plan"] == f"plan {winner}"
            _history_is_contiguous(engine, c.number, c.version)

        assert sum(winners.values()) == RACES
        report = engine.verify()
        assert report.ok, report.findings
        assert report.complaints == RACES - 2


# -- (b) 4 processes x 25 submits -----------------------------------------------------------------


def test_concurrent_submits_get_unique_contiguous_numbers(
    shared_url: str, workers: Workers
) -> None:
    with Engine.open(shared_url, clock=SimulatedClock(START)) as engine:
        for name in workers.names:
            workers.send(name, "submit", shared_url, SUBMITS_EACH)
        got = workers.collect(WORKERS)
        total = WORKERS * SUBMITS_EACH
        for outcome, mine in got.values():  # each process saw its own numbers increase
            assert outcome == "ok"
            assert mine == sorted(mine) and len(mine) == SUBMITS_EACH
        numbers = [n for _, mine in got.values() for n in mine]
        assert sorted(numbers) == [f"TS-2026-{seq:06d}" for seq in range(1, total + 1)]
        page = engine.find(limit=total + 1)
        assert page.total == total
        assert sorted(c.number for c in page.items) == sorted(numbers)
        # every submission stored once, under the number its process was given
        stored = {c.number: c.fields["customer_name"] for c in page.items}
        assert stored == {
            n: f"{name}-{i}" for name, (_, mine) in got.items() for i, n in enumerate(mine)
        }
        report = engine.verify()
        assert report.ok, report.findings
        assert (report.complaints, report.events) == (total, total)
