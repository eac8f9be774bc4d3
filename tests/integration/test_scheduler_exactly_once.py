"""Every due warning and breach fires exactly once, from several real OS processes.

Each scheduler runs in its own process (``multiprocessing`` with the ``spawn`` context):
it opens its own ``Engine`` on the shared database with a ``SimulatedClock`` fixed at an
instant after every deadline, waits at a barrier so that all start together, and calls
``Scheduler(engine, batch_size=...).tick()`` in a loop. It stops once a tick fires nothing
AND no deadline is pending any more (``report.next_due`` is ``None`` or in the future).
"A tick fired nothing" alone is not enough: rows another process holds locked (SKIP LOCKED)
are invisible to a tick, and if that process is then killed they come back to the pool, so a
survivor must keep looking until nothing is pending.

The deadlines come from the engine itself: a small rule file (two calendar-time timers, each
with 24 warnings at fractions k/25 and a breach: 50 deadlines per complaint) and complaints
submitted through ``Engine.submit`` (received one minute apart, so the due instants of
different complaints interleave). The complaints are submitted ONCE per backend into a
template database (a PostgreSQL schema, a SQLite file); every test starts from an exact
copy of it (``INSERT ... SELECT`` into a fresh schema made by ``Engine.open``; a file copy).

Checked after the run: every deadline has ``fired_at``; one ``timer_warning`` or
``timer_breached`` event per (complaint, timer, kind, index) and none for anything else;
the outbox holds exactly the notifications the rule file asks for, with unique keys, each
pointing at the event it announces; timer rows count their warnings and breach; complaint
versions are 1 + the deadlines fired; ``engine.verify().ok`` (hash chains contiguous).

The kill cases hold the victim's batch open before COMMIT (a SQLAlchemy ``commit`` listener
installed in the child only: the library is not changed), wait until the victim has
committed at least one batch and is holding the next one, then ``SIGKILL`` it. The deadlines
of the lost batch (recorded by the child before it blocks) must have been fired by a
survivor, and the victim must not appear in ``fired_by`` for them.

Sizes: 10,000 deadlines on PostgreSQL and 2,000 on SQLite; ``COMPLAINTFLOW_TORTURE_EXAMPLES``
raises them (PostgreSQL: max(10,000, N); SQLite: max(2,000, N // 5)). The process tests are
marked ``slow``: together they take minutes (process start-up, and a scheduler that fires a
few hundred deadlines a second on a busy two-CPU machine); ``-m "not slow"`` leaves them out.

Also here: the scheduler's documented order within one complaint, checked deterministically
with two workers (a worker that claimed a later deadline waits for the earlier one held by
the other).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from complaintflow import Actor, Engine, SimulatedClock, parse_rules
from complaintflow.scheduler import DEFAULT_THREADS

TORTURE = int(os.environ.get("COMPLAINTFLOW_TORTURE_EXAMPLES") or 0)
PG_DEADLINES = max(10_000, TORTURE)
SQLITE_DEADLINES = max(2_000, TORTURE // 5)

WARNINGS = 24  # per timer; warnings k = 1..24 at fraction k/25; odd k notify
TIMERS = {"a": 60, "b": 97}  # timer id -> budget in minutes (calendar time)
PER_COMPLAINT = len(TIMERS) * (WARNINGS + 1)
NOTES_PER_COMPLAINT = len(TIMERS) * (len(range(1, WARNINGS + 1, 2)) + 1)
START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
SPACING = timedelta(minutes=1)
CLERK = Actor("clerk.li", ["clerk"])
PROCESS_TIMEOUT = 300.0  # a child gives up (and the test fails) after this many seconds


def _timer_yaml(name: str, minutes: int) -> str:
    warnings = ", ".join(
        f"{{fraction: {k / (WARNINGS + 1):.2f}" + (", notify: [clerk]}" if k % 2 else "}")
        for k in range(1, WARNINGS + 1)
    )
    breach = "{notify: [manager], raise_severity: major" + (
        ", reassign: manager}" if name == "b" else "}"
    )
    return (
        f"  - id: {name}\n"
        f"    label: {{zh: 时限{name}, en: Clock {name}}}\n"
        "    start: {on: receipt}\n"
        "    stop: [closed]\n"
        f"    duration: {{minutes: {minutes}}}\n"
        f"    warnings: [{warnings}]\n"
        f"    on_breach: {breach}\n"
    )


RULES_YAML = (
    "name: scheduler exactly-once\n"
    "initial: received\n"
    "states:\n"
    "  - {id: received, label: {zh: 接获, en: Received}}\n"
    "  - {id: closed, label: {zh: 结案, en: Closed}, final: true}\n"
    "roles:\n"
    "  - {id: clerk, label: {zh: 文员, en: Clerk}}\n"
    "  - {id: manager, label: {zh: 经理, en: Manager}}\n"
    "fields:\n"
    "  - {id: note, type: string, label: {zh: 备注, en: Note}}\n"
    "severity:\n"
    "  levels: [general, major]\n"
    "  default: general\n"
    "timers:\n"
    + "".join(_timer_yaml(name, minutes) for name, minutes in TIMERS.items())
    + "transitions:\n"
    "  - {trigger: close, from: [received], to: closed, roles: [manager]}\n"
)


def fire_instant(complaints: int) -> datetime:
    """An instant after every deadline of ``complaints`` complaints."""
    return START + SPACING * complaints + timedelta(minutes=max(TIMERS.values()) + 60)


# -- the child process ------------------------------------------------------------------------


def scheduler_process(
    url: str,
    now: datetime,
    batch_size: int,
    worker: str,
    barrier: Any,
    results: Any,
    go: Any = None,
    hold: float = 0.0,
    holding: Any = None,
    lost_batch_file: str | None = None,
    threads: int = DEFAULT_THREADS,
    committed: Any = None,
) -> None:
    """Run ticks until nothing is pending; put a summary on ``results``.

    ``hold`` > 0 (the kill cases): before each COMMIT of a batch, count it in ``holding``,
    write the ids of the deadlines of every batch this process holds uncommitted to
    ``lost_batch_file``, and sleep: ``hold`` seconds for the first batch, then until killed,
    so that the parent can kill this process with a batch written but not committed. A held
    batch that commits is counted in ``committed``."""
    from complaintflow.scheduler import Scheduler

    engine = Engine.open(
        url, rules=parse_rules(RULES_YAML, "exactly-once.yaml"), clock=SimulatedClock(now)
    )
    if hold > 0:
        pending: dict[int, list[int]] = {}  # thread -> the ids its open batch marks fired
        held: dict[int, list[int]] = {}  # thread -> the ids of its batch held before COMMIT
        guard = threading.Lock()

        def remember(
            _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
        ) -> None:
            if statement.lstrip().upper().startswith("UPDATE DEADLINES SET FIRED_AT"):
                values = parameters.values() if isinstance(parameters, dict) else parameters
                # the ids: one parameter each (SQLite), or one array (PostgreSQL)
                flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
                pending[threading.get_ident()] = [
                    v for v in flat if isinstance(v, int) and not isinstance(v, bool)
                ]

        def before_commit(_conn: Any) -> None:
            ids = pending.pop(threading.get_ident(), None)
            if not ids:
                return  # a read transaction, or a batch that found nothing
            assert lost_batch_file is not None and holding is not None
            with guard:
                held[threading.get_ident()] = ids
                lost = sorted(i for batch in held.values() for i in batch)
                Path(lost_batch_file).write_text(json.dumps(lost), encoding="utf-8")
            with holding.get_lock():
                holding.value += 1
                first = holding.value == 1
            time.sleep(hold if first else PROCESS_TIMEOUT)

        def checkin(_dbapi_conn: Any, _record: Any) -> None:
            with guard:  # back in the pool: this thread's held batch, if any, committed
                if held.pop(threading.get_ident(), None) is not None:
                    assert committed is not None
                    with committed.get_lock():
                        committed.value += 1

        sa.event.listen(engine.database, "before_cursor_execute", remember)
        sa.event.listen(engine.database, "commit", before_commit)
        sa.event.listen(engine.database.pool, "checkin", checkin)
    scheduler = Scheduler(engine, worker=worker, batch_size=batch_size, threads=threads)
    barrier.wait(timeout=120)
    if go is not None:
        go.wait(timeout=120)
    started = time.perf_counter()
    fired = batches = ticks = idle = 0
    status = "done"
    while True:
        report = scheduler.tick()
        ticks += 1
        fired += report.fired
        batches += report.batches
        if report.fired == 0:
            if report.next_due is None or report.next_due > now:
                break
            idle += 1  # the rest is held by another process: look again shortly
            time.sleep(0.02)
        if time.perf_counter() - started > PROCESS_TIMEOUT:
            status = "timeout"
            break
    elapsed = time.perf_counter() - started
    engine.close()
    results.put(
        {
            "worker": worker,
            "status": status,
            "fired": fired,
            "batches": batches,
            "ticks": ticks,
            "idle_ticks": idle,
            "seconds": round(elapsed, 2),
        }
    )


# -- setting up the deadlines -----------------------------------------------------------------


def submit_complaints(url: str, deadlines: int) -> int:
    """Submit enough complaints through the engine for ``deadlines`` deadlines."""
    complaints = math.ceil(deadlines / PER_COMPLAINT)
    clock = SimulatedClock(START)
    engine = Engine.open(url, rules=parse_rules(RULES_YAML, "exactly-once.yaml"), clock=clock)
    try:
        for i in range(complaints):
            engine.submit({"note": f"complaint {i}"}, CLERK)
            clock.advance(SPACING)
        with engine.database.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM deadlines")).scalar_one()
        assert count == complaints * PER_COMPLAINT
    finally:
        engine.close()
    return complaints


@dataclass
class Template:
    url: str
    complaints: int


def _schema_of(url: str) -> str:
    return url.rsplit("search_path%3D", 1)[1].split("&", 1)[0].split("%20", 1)[0]


COPIED = ("number_sequences", "complaints", "events", "timers", "deadlines")


@pytest.fixture(scope="module")
def pg_template(pg_base_url: str) -> Iterator[Template]:
    from tests.conftest import new_pg_schema_url  # here: the child processes skip hypothesis

    url, drop = new_pg_schema_url(pg_base_url)
    try:
        # only the set-up connection skips the WAL flush at commit; the schedulers do not
        complaints = submit_complaints(url + "%20-csynchronous_commit%3Doff", PG_DEADLINES)
        yield Template(url, complaints)
    finally:
        drop()


@pytest.fixture
def pg_copy(pg_base_url: str, pg_template: Template) -> Iterator[tuple[str, int]]:
    """A fresh schema holding an exact copy of the template's complaints."""
    from tests.conftest import new_pg_schema_url

    url, drop = new_pg_schema_url(pg_base_url)
    try:
        Engine.open(
            url, rules=parse_rules(RULES_YAML, "exactly-once.yaml"), clock=SimulatedClock(START)
        ).close()
        source = _schema_of(pg_template.url)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            for table in COPIED:
                conn.execute(sa.text(f'INSERT INTO {table} SELECT * FROM "{source}".{table}'))
                if table != "number_sequences":
                    conn.execute(
                        sa.text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))"
                        )
                    )
        engine.dispose()
        yield url, pg_template.complaints
    finally:
        drop()


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    path = tmp_path_factory.mktemp("exactly-once") / "template.db"
    complaints = submit_complaints(f"sqlite:///{path}", SQLITE_DEADLINES)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return Template(str(path), complaints)


# -- running the processes --------------------------------------------------------------------


@dataclass
class Run:
    reports: list[dict[str, Any]]
    killed: str | None
    lost_batch: list[int]
    seconds: float


def run_schedulers(
    url: str,
    complaints: int,
    processes: int,
    batch_size: int,
    *,
    kill_one: bool = False,
    tmp_path: Path | None = None,
    threads: int = DEFAULT_THREADS,
) -> Run:
    """Start ``processes`` schedulers together, each with ``threads`` threads (one fires on
    SQLite). With ``kill_one``, process 0 (the victim) starts alone and the others are let
    go once it holds a batch open before COMMIT (its first on PostgreSQL, so that they run
    beside it; its second on SQLite, where a writer would otherwise keep the victim waiting
    until nothing is left); the victim is killed with SIGKILL once it has committed its
    first batch and holds another one open (with several threads, the others may hold one
    each, or wait for the complaints the held one locked)."""
    ctx = multiprocessing.get_context("spawn")
    now = fire_instant(complaints)
    barrier = ctx.Barrier(processes + 1)
    go = ctx.Event()
    results = ctx.Queue()
    holding = ctx.Value("i", 0)
    committed = ctx.Value("i", 0)
    lost_file = str(tmp_path / "lost-batch.json") if tmp_path is not None else None
    procs = []
    for n in range(processes):
        victim = kill_one and n == 0
        kwargs: dict[str, Any] = {"go": go if kill_one else None, "threads": threads}
        if victim:
            kwargs = {
                "hold": 3.0,
                "holding": holding,
                "lost_batch_file": lost_file,
                "threads": threads,
                "committed": committed,
            }
        procs.append(
            ctx.Process(
                target=scheduler_process,
                name=f"scheduler-{n}",
                args=(url, now, batch_size, f"proc{n}", barrier, results),
                kwargs=kwargs,
            )
        )
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=180)  # every process has opened its engine
        started = time.perf_counter()
        killed = None
        lost: list[int] = []
        if kill_one:
            victim = procs[0]
            release_at = 1 if url.startswith("postgresql") else 2

            def ready() -> bool:  # a batch committed, and a later one held
                return committed.value >= 1 and holding.value > committed.value

            deadline = time.monotonic() + PROCESS_TIMEOUT
            while not ready() and victim.is_alive() and time.monotonic() < deadline:
                if holding.value >= release_at:
                    go.set()
                time.sleep(0.005)
            go.set()
            assert victim.is_alive() and ready(), "the victim never held a batch"
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(30)
            assert victim.exitcode == -signal.SIGKILL
            killed = "proc0"
            assert lost_file is not None
            lost = json.loads(Path(lost_file).read_text(encoding="utf-8"))
        reports = []
        expected = processes - (1 if kill_one else 0)
        for _ in range(expected):
            reports.append(results.get(timeout=PROCESS_TIMEOUT + 60))
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
        seconds = time.perf_counter() - started
        results.close()
        results.join_thread()
        for p in procs[1 if kill_one else 0 :]:
            assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"
        assert all(r["status"] == "done" for r in reports), reports
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return Run(sorted(reports, key=lambda r: r["worker"]), killed, lost, seconds)


# -- the checks -------------------------------------------------------------------------------


def check_exactly_once(url: str, complaints: int, run: Run) -> dict[str, Any]:
    """Assert every guarantee; return numbers for the test's own assertions and the log."""
    engine = Engine.open(
        url,
        rules=parse_rules(RULES_YAML, "exactly-once.yaml"),
        clock=SimulatedClock(fire_instant(complaints)),
    )
    try:
        with engine.database.connect() as conn:
            deadlines = conn.execute(
                sa.text(
                    "SELECT d.id, d.complaint_id, t.timer, d.kind, d.idx, d.due_at, d.fired_at, "
                    "d.fired_by FROM deadlines d JOIN timers t ON t.id = d.timer_id"
                )
            ).all()
            events = conn.execute(
                sa.text(
                    "SELECT complaint_id, seq, type, payload FROM events "
                    "WHERE type IN ('timer_warning', 'timer_breached') "
                    "ORDER BY complaint_id, seq"
                )
            ).all()
            others = conn.execute(
                sa.text(
                    "SELECT type, count(*) FROM events "
                    "WHERE type NOT IN ('timer_warning', 'timer_breached') GROUP BY type"
                )
            ).all()
            notes = conn.execute(
                sa.text(
                    "SELECT o.key, o.kind, o.event_seq, o.recipients, o.complaint_id, e.type "
                    "FROM outbox o LEFT JOIN events e "
                    "ON e.complaint_id = o.complaint_id AND e.seq = o.event_seq"
                )
            ).all()
            timers = conn.execute(sa.text("SELECT warned, breached_at FROM timers")).all()
            versions = conn.execute(
                sa.text("SELECT version, head_seq, severity, escalated_to FROM complaints")
            ).all()
        total = complaints * PER_COMPLAINT
        # every deadline fired, once, and nothing else
        assert len(deadlines) == total
        unfired = [d.id for d in deadlines if d.fired_at is None]
        assert not unfired, f"{len(unfired)} deadlines never fired"
        expected_keys = {(d.complaint_id, d.timer, d.kind, d.idx) for d in deadlines}
        assert len(expected_keys) == total
        fired_keys: Counter[tuple[int, str, str, int]] = Counter()
        order_violations = 0
        last_due: dict[tuple[int, str], str] = {}
        for ev in events:
            payload = json.loads(ev.payload)
            kind = "warning" if ev.type == "timer_warning" else "breach"
            assert payload["kind"] == kind
            fired_keys[(ev.complaint_id, payload["timer"], kind, payload["index"])] += 1
            key = (ev.complaint_id, payload["timer"])
            if key in last_due and payload["due_at"] < last_due[key]:
                order_violations += 1
            last_due[key] = payload["due_at"]
        duplicates = {k: n for k, n in fired_keys.items() if n != 1}
        assert not duplicates, f"fired more than once: {list(duplicates.items())[:10]}"
        assert set(fired_keys) == expected_keys
        assert dict(others) == {"submitted": complaints}
        # the outbox: exactly the notifications the rule file asks for, each for its event
        assert len(notes) == complaints * NOTES_PER_COMPLAINT
        assert len({n.key for n in notes}) == len(notes)
        for n in notes:
            assert n.type == n.kind, n
            assert json.loads(n.recipients) == (
                ["clerk"] if n.kind == "timer_warning" else ["manager"]
            )
        # the derived rows agree
        assert all(t.warned == WARNINGS and t.breached_at is not None for t in timers)
        assert all(v.version == v.head_seq == 1 + PER_COMPLAINT for v in versions)
        assert all(v.severity == "major" and v.escalated_to == "manager" for v in versions)
        report = engine.verify()
        assert report.ok, report.findings[:10]
        assert report.complaints == complaints
        assert report.events == complaints * (1 + PER_COMPLAINT)
        by_worker = Counter(d.fired_by for d in deadlines)
        if run.killed is not None:
            assert run.lost_batch, "the victim recorded no held batch"
            lost = {d.id: d.fired_by for d in deadlines if d.id in set(run.lost_batch)}
            assert len(lost) == len(run.lost_batch)
            assert run.killed not in set(lost.values()), "the killed batch committed"
            assert by_worker[run.killed] > 0, "the victim never committed a batch"
        fired_by_reports = Counter({r["worker"]: r["fired"] for r in run.reports})
        for worker, fired in fired_by_reports.items():
            assert by_worker[worker] == fired, (worker, by_worker, fired_by_reports)
        return {
            "workers": dict(by_worker),
            "order_violations": order_violations,
            "seconds": round(run.seconds, 1),
            "lost_batch": len(run.lost_batch),
            "reports": run.reports,
        }
    finally:
        engine.close()


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_three_processes_fire_every_deadline_exactly_once(
    pg_copy: tuple[str, int],
) -> None:
    url, complaints = pg_copy
    run = run_schedulers(url, complaints, processes=3, batch_size=100)
    summary = check_exactly_once(url, complaints, run)
    print(summary)
    assert sum(1 for n in summary["workers"].values() if n) >= 2, summary


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("threads", sorted({1, DEFAULT_THREADS}), ids=lambda n: f"{n}-threads")
def test_postgres_a_process_killed_mid_batch_loses_nothing(
    pg_copy: tuple[str, int],
    tmp_path: Path,
    threads: int,
) -> None:
    url, complaints = pg_copy
    run = run_schedulers(
        url,
        complaints,
        processes=3,
        batch_size=250,
        kill_one=True,
        tmp_path=tmp_path,
        threads=threads,
    )
    summary = check_exactly_once(url, complaints, run)
    print(summary)
    assert summary["lost_batch"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("kill_one", [False, True], ids=["two-processes", "one-killed"])
def test_sqlite_two_processes_fire_every_deadline_exactly_once(
    sqlite_template: Template,
    tmp_path: Path,
    kill_one: bool,
) -> None:
    path = tmp_path / "complaints.db"
    shutil.copy(sqlite_template.url, path)
    url = f"sqlite:///{path}"
    run = run_schedulers(
        url,
        sqlite_template.complaints,
        processes=2,
        batch_size=100,
        kill_one=kill_one,
        tmp_path=tmp_path,
    )
    summary = check_exactly_once(url, sqlite_template.complaints, run)
    print(summary)
    if kill_one:
        assert summary["lost_batch"] > 0


@pytest.mark.postgres
def test_postgres_due_order_within_a_complaint_holds_across_workers(pg_base_url: str) -> None:
    """The scheduler's documented order ("within one complaint, deadlines fire in due order")
    with two workers, made deterministic: worker A claims the earliest deadline and is held
    just before it locks the complaint; worker B claims the next one (SKIP LOCKED passes over
    A's row) and fires it; then A goes on. Two engines in one process: the database cannot
    tell them from two processes."""
    import threading

    from complaintflow.scheduler import Scheduler
    from tests.conftest import new_pg_schema_url

    url, drop = new_pg_schema_url(pg_base_url)
    rules = parse_rules(RULES_YAML, "exactly-once.yaml")
    try:
        submit_complaints(url, 1)
        now = fire_instant(1)
        first = Engine.open(url, rules=rules, clock=SimulatedClock(now))
        second = Engine.open(url, rules=rules, clock=SimulatedClock(now))
        claimed, proceed = threading.Event(), threading.Event()

        def hold_before_locking(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
            if statement.startswith("SELECT complaints.") and "FOR UPDATE" in statement:
                claimed.set()
                proceed.wait(30)

        sa.event.listen(first.database, "before_cursor_execute", hold_before_locking)
        worker = threading.Thread(
            target=Scheduler(first, worker="A", batch_size=1).fire_batch, args=(now,)
        )
        worker.start()
        try:
            assert claimed.wait(30)
            # B claims the later deadline but must defer it: A holds the earlier one
            assert Scheduler(second, worker="B", batch_size=1).fire_batch(now).fired == 0
        finally:
            proceed.set()
            worker.join(30)
        assert Scheduler(second, worker="B", batch_size=1).fire_batch(now).fired == 1
        with second.database.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT seq, payload FROM events WHERE type = 'timer_warning' ORDER BY seq")
            ).all()
        first.close()
        second.close()
        due = [json.loads(r.payload)["due_at"] for r in rows]
        assert len(due) == 2
        assert due == sorted(due), f"fired out of due order: {due}"
    finally:
        drop()
