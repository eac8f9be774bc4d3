"""The scheduler on PostgreSQL at scale: idle ticks, draining due breaches, and a bare baseline.

One run, one fresh schema (``bench_sched_<hex>``, dropped afterwards unless ``--keep``):

1. Bulk load with SQL (``INSERT ... SELECT generate_series``, not through the engine, not
   timed) in steps up to the largest ``--scales`` value (default 10k, 100k, 1M complaints).
   Each complaint is in ``confirmed`` under the shipped default rule file and has the history
   of a real one: 6 events (submitted, a ``first_response`` warning and breach, record,
   confirm, a ``whole_complaint`` warning), 2 timer runs (``first_response`` stopped,
   ``whole_complaint`` running) and 4 deadlines, 3 of them fired and ONE pending, due far in
   the future (2036). Hash chains are synthetic (the scheduler only extends them; nothing
   here verifies them). ``VACUUM ANALYZE`` after each step, as autovacuum would.
2. (i) At each scale: ``Scheduler.tick()`` with nothing due, ``--ticks`` times after 5
   warm-up ticks: median and p95; the same for the claim alone (``fire_batch``). At the
   largest scale also: the first tick of a month whose periodic review has not run yet.
3. EXPLAIN (ANALYZE, BUFFERS) of the exact claim statement the scheduler sends (captured
   from a real ``fire_batch``), with nothing due and with ``--drain`` rows due.
4. (ii) Draining ``--drain`` due breaches (``whole_complaint``: notify two roles and raise
   the severity), with 1 and with 2 scheduler processes (``multiprocessing`` spawn; separate
   runs on separate, fresh due rows), each process with every ``--threads`` count (default:
   1 and the library's ``DEFAULT_THREADS``). Each process runs ``tick()`` until nothing is
   due.
5. (iii) The baseline on the same database: a bare ``FOR UPDATE SKIP LOCKED`` drain through
   plain psycopg 3 (claim ``--batch-size`` rows, one audit row inserted per deadline
   (pipelined executemany), mark them fired, commit), 1 and 2 processes, fresh due rows.
6. The idle tick again at the largest scale right after the drains (dead entries in the
   partial index, before any vacuum), then after ``VACUUM``.
7. ``--profile``: a further ``--profile-deadlines`` due breaches drained in-process under
   cProfile, with the time per SQL statement kind measured by cursor events.

Run: ``python benchmarks/bench_scheduler.py [--scales 10000,100000,1000000] [--drain 100000]
[--profile] [--write]``. ``--write`` replaces the generated sections of
docs/benchmarks-scheduler.md (the interpretation there is written by hand).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import multiprocessing
import pstats
import re
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from benchmarks._common import (  # noqa: E402
    DEFAULT_PG_URL,
    environment,
    environment_markdown,
    load_average,
    today,
    write_section,
)
from complaintflow import Engine, SimulatedClock  # noqa: E402
from complaintflow.scheduler import DEFAULT_BATCH_SIZE, DEFAULT_THREADS, Scheduler  # noqa: E402

DOC = ROOT / "docs" / "benchmarks-scheduler.md"
TICK_TARGET_MS = 5.0
DRAIN_TARGET = 5_000.0

#: The scheduler's "now": after the monthly review of June 2026 (day 4, 09:00 Shanghai).
NOW = datetime(2026, 6, 10, 2, 0, tzinfo=UTC)
T0 = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)  # complaint g is received at T0 + 9 s * g
FAR = datetime(2036, 1, 1, 0, 0, tzinfo=UTC)  # pending deadline of complaint g: FAR + g s

FIELDS = json.dumps(
    {
        "customer_name": "华东机电有限公司",
        "contact_person": "张伟",
        "phone": "13812345678",
        "email": "zhang.wei@example.cn",
        "address": "上海市浦东新区张江路100号",
        "channel": "phone",
        "product_name": "YE3-132M 三相异步电机",
        "batch_no": "B2026-0211",
        "category": "product_quality",
        "description": "电机运行时异响, 温升偏高",
        "claimed_amount": "2000",
        "responsible_department": "quality",
        "handler": "wang.qa",
    },
    ensure_ascii=False,
    sort_keys=True,
    separators=(",", ":"),
)


# -- connections ----------------------------------------------------------------------------


def schema_url(base_url: str, schema: str) -> str:
    joiner = "&" if "?" in base_url else "?"
    return f"{base_url}{joiner}options=-csearch_path%3D{schema}"


def psycopg_connect(
    base_url: str, schema: str, *, fast: bool = False, autocommit: bool = False
) -> psycopg.Connection[Any]:
    parsed = sa.make_url(base_url)
    options = f"-csearch_path={schema}" + (
        " -csynchronous_commit=off -csession_replication_role=replica" if fast else ""
    )
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        options=options,
        autocommit=autocommit,
    )


# -- bulk load --------------------------------------------------------------------------------


def _ledger(unit: str, amount: int, ruleset: str) -> str:
    return (
        '{"amount":'
        + str(amount)
        + ',"calendar":"office","calendar_version":"'
        + ruleset
        + '","extensions":[],"pauses":[],"started_at":"%s","unit":"'
        + unit
        + '"}'
    )


def load(
    conn: psycopg.Connection[Any], first: int, last: int, ruleset: str, chunk: int = 100_000
) -> None:
    """Complaints ``first``..``last`` with their history, timers and deadlines."""
    for a in range(first, last + 1, chunk):
        b = min(a + chunk - 1, last)
        p = {
            "a": a,
            "b": b,
            "rs": ruleset,
            "t0": T0,
            "far": FAR,
            "fields": FIELDS,
            "fr": _ledger("hours", 1, ruleset),
            "wc": _ledger("working_days", 15, ruleset),
        }
        with conn.transaction():
            conn.execute(
                """
                INSERT INTO complaints (id, number, scope, seq, ruleset, state, version,
                    severity, severity_floor, department, handler, received_at, updated_at,
                    fields, head_seq, head_hash, escalated_to)
                SELECT g, 'TS-2026-' || lpad(g::text, greatest(6, length(g::text)), '0'),
                    '2026', g, %(rs)s, 'confirmed', 6, 'general', NULL,
                    (ARRAY['quality','technical','production','after_sales'])[1 + g %% 4],
                    'handler.' || (g %% 300), %(t0)s + g * interval '9 seconds',
                    %(t0)s + g * interval '9 seconds' + interval '10 days', %(fields)s, 6,
                    lpad(to_hex(g * 8 + 6), 64, '0'), NULL
                FROM generate_series(%(a)s::bigint, %(b)s::bigint) g""",
                p,
            )
            conn.execute(
                """
                INSERT INTO events (complaint_id, seq, type, trigger, from_state, to_state,
                    actor_id, actor_roles, actor_department, occurred_at, payload, ruleset,
                    schema_version, prev_hash, hash)
                SELECT g, s.seq, s.type, s.trig, s.f, s.t, s.actor, s.roles, NULL,
                    %(t0)s + g * interval '9 seconds' + s.off,
                    replace(s.payload, '$N',
                            'TS-2026-' || lpad(g::text, greatest(6, length(g::text)), '0')),
                    %(rs)s, 1,
                    lpad(to_hex(g * 8 + s.seq - 1), 64, '0'), lpad(to_hex(g * 8 + s.seq), 64, '0')
                FROM generate_series(%(a)s::bigint, %(b)s::bigint) g CROSS JOIN (VALUES
                  (1, 'submitted', NULL, NULL, 'received', 'li.na', '["customer_service"]',
                   interval '0', '{"fields":' || %(fields)s || ',"number":"$N",'
                   || '"severity":"general","timers":{"started":[{"timer":"first_response"},'
                   || '{"timer":"whole_complaint"}]}}'),
                  (2, 'timer_warning', NULL, 'received', 'received', 'system:scheduler', '[]',
                   interval '46 minutes', '{"actions":{"notify":["customer_service"]},'
                   || '"index":1,"kind":"warning","timer":"first_response"}'),
                  (3, 'timer_breached', NULL, 'received', 'received', 'system:scheduler',
                   '[]', interval '61 minutes', '{"actions":{"notify":["customer_service",'
                   || '"department_manager"]},"index":0,"kind":"breach",'
                   || '"timer":"first_response"}'),
                  (4, 'transition', 'record', 'received', 'recorded', 'li.na',
                   '["customer_service"]', interval '2 hours',
                   '{"set":{"readback_confirmed":true},"severity":"general"}'),
                  (5, 'transition', 'confirm', 'recorded', 'confirmed', 'li.na',
                   '["customer_service"]', interval '3 hours', '{"set":{"handler":"wang.qa",'
                   || '"responsible_department":"quality"},"severity":"general"}'),
                  (6, 'timer_warning', NULL, 'confirmed', 'confirmed', 'system:scheduler',
                   '[]', interval '10 days', '{"actions":{"notify":["department_manager",'
                   || '"customer_service"]},"index":1,"kind":"warning",'
                   || '"timer":"whole_complaint"}')
                ) AS s(seq, type, trig, f, t, actor, roles, off, payload)""",
                p,
            )
            conn.execute(
                """
                INSERT INTO timers (id, complaint_id, timer, run, status, ledger, due_at,
                    provisional, warned, breached_at, stopped_at)
                SELECT 2 * g - 1, g, 'first_response', 1, 'stopped',
                    format(%(fr)s, to_char((%(t0)s + g * interval '9 seconds') AT TIME ZONE 'UTC',
                                           'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
                    %(t0)s + g * interval '9 seconds' + interval '1 hour', false, 1,
                    %(t0)s + g * interval '9 seconds' + interval '61 minutes',
                    %(t0)s + g * interval '9 seconds' + interval '3 hours'
                FROM generate_series(%(a)s::bigint, %(b)s::bigint) g
                UNION ALL
                SELECT 2 * g, g, 'whole_complaint', 1, 'running',
                    format(%(wc)s, to_char((%(t0)s + g * interval '9 seconds') AT TIME ZONE 'UTC',
                                           'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
                    %(far)s + g * interval '1 second', false, 1, NULL, NULL
                FROM generate_series(%(a)s::bigint, %(b)s::bigint) g""",
                p,
            )
            conn.execute(
                """
                INSERT INTO deadlines (id, timer_id, complaint_id, kind, idx, due_at,
                    fired_at, fired_by)
                SELECT 4 * g - 4 + d.k, 2 * g - 1 + d.t, g, d.kind, d.idx,
                    CASE WHEN d.k = 4 THEN %(far)s + g * interval '1 second'
                         ELSE %(t0)s + g * interval '9 seconds' + d.due END,
                    CASE WHEN d.k = 4 THEN NULL
                         ELSE %(t0)s + g * interval '9 seconds' + d.due
                              + interval '40 seconds' END,
                    CASE WHEN d.k = 4 THEN NULL ELSE 'history:1' END
                FROM generate_series(%(a)s::bigint, %(b)s::bigint) g CROSS JOIN (VALUES
                  (1, 0, 'warning', 1, interval '45 minutes'),
                  (2, 0, 'breach', 0, interval '60 minutes'),
                  (3, 1, 'warning', 1, interval '10 days'),
                  (4, 1, 'breach', 0, NULL::interval)) AS d(k, t, kind, idx, due)""",
                p,
            )
            conn.execute(
                """
                INSERT INTO number_sequences (scope, value) VALUES ('2026', %(b)s)
                ON CONFLICT (scope) DO UPDATE SET value = excluded.value""",
                p,
            )
    with conn.transaction():
        for table in ("complaints", "timers", "deadlines"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )


BULK_TABLES = ("complaints", "events", "timers", "deadlines")


@contextlib.contextmanager
def without_secondary_indexes(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Drop every index but the primary keys of the bulk-loaded tables, and build them again
    (same definitions, same names) afterwards: a bulk load is several times faster."""
    constraints = conn.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
        WHERE c.contype = 'u' AND t.relname = ANY(%s)
          AND t.relnamespace = current_schema()::regnamespace""",
        (list(BULK_TABLES),),
    ).fetchall()
    indexes = conn.execute(
        """
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s)
          AND i.indexname NOT IN (SELECT conname FROM pg_constraint
                                  WHERE contype IN ('p', 'u')
                                    AND connamespace = current_schema()::regnamespace)""",
        (list(BULK_TABLES),),
    ).fetchall()
    with conn.transaction():
        for table, name, _ in constraints:
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
    try:
        yield
    finally:
        conn.execute("SET maintenance_work_mem = '256MB'")
        with conn.transaction():
            for table, name, definition in constraints:
                conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            for _, definition in indexes:
                conn.execute(definition)


def vacuum(conn: psycopg.Connection[Any], *tables: str) -> None:
    """``conn`` is in autocommit mode (VACUUM cannot run in a transaction)."""
    for table in tables or ("complaints", "events", "timers", "deadlines", "outbox"):
        conn.execute(f"VACUUM ANALYZE {table}")


def reset_drained(conn: psycopg.Connection[Any]) -> int:
    """Put every complaint an earlier drain touched back as loaded (its history cut to the
    6 loaded events, the pending breach in 2036 again, the outbox emptied), so that one
    loaded schema serves several runs. Deadlines and timers are reset over the whole table:
    the bare drains fire deadlines without touching their complaints. Returns how many
    rows were reset."""
    p = {"far": FAR}
    with conn.transaction():
        touched = conn.execute(
            "SELECT coalesce(min(id), 0), coalesce(max(id), -1), count(*) FROM complaints "
            "WHERE version <> 6"
        ).fetchone()
        assert touched is not None
        a, b, n = touched
        if n:
            p.update(a=a, b=b)
            conn.execute(
                "DELETE FROM events WHERE complaint_id BETWEEN %(a)s AND %(b)s AND seq > 6", p
            )
            conn.execute(
                """
                UPDATE complaints SET version = 6, head_seq = 6, severity = 'general',
                    severity_floor = NULL, escalated_to = NULL, state = 'confirmed',
                    head_hash = lpad(to_hex(id * 8 + 6), 64, '0'),
                    updated_at = received_at + interval '10 days'
                WHERE id BETWEEN %(a)s AND %(b)s AND version <> 6""",
                p,
            )
        n += conn.execute(
            """
            UPDATE timers SET warned = 1, breached_at = NULL, status = 'running',
                stopped_at = NULL, due_at = %(far)s + complaint_id * interval '1 second'
            WHERE timer = 'whole_complaint'
              AND (breached_at IS NOT NULL OR warned <> 1 OR status <> 'running'
                   OR due_at < %(far)s)""",
            p,
        ).rowcount
        n += conn.execute(
            """
            UPDATE deadlines SET fired_at = NULL, fired_by = NULL,
                due_at = %(far)s + complaint_id * interval '1 second'
            WHERE id %% 4 = 0 AND (fired_at IS NOT NULL OR due_at < %(far)s)""",
            p,
        ).rowcount
        conn.execute("DELETE FROM outbox")
        conn.execute("TRUNCATE bench_audit")
    if n:
        vacuum(conn)
    return int(n)


def make_due(conn: psycopg.Connection[Any], first: int, last: int) -> int:
    """The pending breach of complaints ``first``..``last`` falls due (distinct instants in
    the two days before NOW)."""
    with conn.transaction():
        cur = conn.execute(
            """
            UPDATE deadlines SET due_at = %(now)s - interval '2 days'
                + (complaint_id - %(a)s) * interval '1 second' / 2
            WHERE id BETWEEN 4 * %(a)s AND 4 * %(b)s AND kind = 'breach'
              AND fired_at IS NULL""",
            {"now": NOW, "a": first, "b": last},
        )
        changed = cur.rowcount
        conn.execute(
            """
            UPDATE timers SET due_at = %(now)s - interval '2 days'
                + (complaint_id - %(a)s) * interval '1 second' / 2
            WHERE id BETWEEN 2 * %(a)s AND 2 * %(b)s AND timer = 'whole_complaint'""",
            {"now": NOW, "a": first, "b": last},
        )
    vacuum(conn, "deadlines", "timers")
    return changed


# -- measurements -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class TickStats:
    label: str
    complaints: int
    pending: int
    tick_ms: list[float]
    claim_ms: list[float]

    def row(self) -> list[str]:
        return [
            self.label,
            f"{self.complaints:,}",
            f"{self.pending:,}",
            f"{statistics.median(self.tick_ms):.2f}",
            f"{percentile(self.tick_ms, 0.95):.2f}",
            f"{statistics.median(self.claim_ms):.2f}",
            f"{percentile(self.claim_ms, 0.95):.2f}",
        ]


def idle_ticks(engine: Engine, ticks: int, label: str, complaints: int, pending: int) -> TickStats:
    scheduler = Scheduler(engine, worker="bench:idle")
    for _ in range(5):
        report = scheduler.tick()
        assert report.fired == 0, "something was due during the idle-tick measurement"
    tick_ms = []
    for _ in range(ticks):
        start = time.perf_counter()
        scheduler.tick()
        tick_ms.append((time.perf_counter() - start) * 1000)
    claim_ms = []
    now = engine.now()
    for _ in range(ticks):
        start = time.perf_counter()
        scheduler.fire_batch(now)
        claim_ms.append((time.perf_counter() - start) * 1000)
    return TickStats(label, complaints, pending, tick_ms, claim_ms)


def capture_claim(engine: Engine) -> tuple[str, Any]:
    """The claim statement and parameters exactly as ``fire_batch`` sends them."""
    seen: list[tuple[str, Any]] = []

    def listener(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "SKIP LOCKED" in statement:
            seen.append((statement, parameters))

    sa.event.listen(engine.database, "before_cursor_execute", listener)
    try:
        Scheduler(engine).fire_batch(datetime(2000, 1, 1, tzinfo=UTC))  # nothing is due then
    finally:
        sa.event.remove(engine.database, "before_cursor_execute", listener)
    assert seen, "no claim statement seen"
    return seen[0]


def explain_claim(engine: Engine, claim: tuple[str, Any], now: datetime, batch_size: int) -> str:
    statement, parameters = claim
    params = dict(parameters)
    for key, value in params.items():
        if isinstance(value, datetime):
            params[key] = now
        elif isinstance(value, int) and not isinstance(value, bool):
            params[key] = batch_size
    with engine.database.connect() as conn, conn.begin() as tx:
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params).all()
        tx.rollback()
    return "\n".join(r[0] for r in rows)


def round_trip_ms(base_url: str, schema: str, n: int = 200) -> float:
    """Median of ``SELECT 1`` through a bare psycopg connection: what one round trip costs."""
    conn = psycopg_connect(base_url, schema, autocommit=True)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        times.append((time.perf_counter() - start) * 1000)
    conn.close()
    return statistics.median(times)


def tick_anatomy(engine: Engine) -> dict[str, int]:
    """What one idle tick sends: statements, transactions (``begin`` events; an autocommit
    statement counts one, without a BEGIN/COMMIT round trip), pool checkouts."""
    counts: dict[str, int] = defaultdict(int)

    def on(name: str) -> Callable[..., None]:
        def listener(*_args: Any) -> None:
            counts[name] += 1

        return listener

    hooks = [
        (engine.database, "before_cursor_execute", on("statements")),
        (engine.database, "begin", on("transactions")),
        (engine.database.pool, "checkout", on("checkouts")),
    ]
    scheduler = Scheduler(engine)
    scheduler.tick()  # steady state: the process has ticked before (reviews remembered)
    for target, name, fn in hooks:
        sa.event.listen(target, name, fn)
    try:
        scheduler.tick()
    finally:
        for target, name, fn in hooks:
            sa.event.remove(target, name, fn)
    return dict(counts)


# -- drains in separate processes -------------------------------------------------------------


def drain_process(
    url: str, batch_size: int, threads: int, worker: str, barrier: Any, results: Any
) -> None:
    engine = Engine.open(url, clock=SimulatedClock(NOW))
    scheduler = Scheduler(engine, worker=worker, batch_size=batch_size, threads=threads)
    scheduler.fire_batch(datetime(2000, 1, 1, tzinfo=UTC))  # connect and compile: not timed
    scheduler.run_reviews(NOW)
    barrier.wait(timeout=600)
    start, cpu = time.time(), time.process_time()
    fired = ticks = 0
    while True:
        report = scheduler.tick()
        ticks += 1
        fired += report.fired
        if report.fired == 0:
            if report.next_due is None or report.next_due > NOW:
                break
            time.sleep(0.01)
    end = time.time()
    results.put(
        {
            "worker": worker,
            "fired": fired,
            "ticks": ticks,
            "start": start,
            "end": end,
            "cpu": time.process_time() - cpu,
        }
    )
    engine.close()


def baseline_process(
    base_url: str, schema: str, batch_size: int, worker: str, barrier: Any, results: Any
) -> None:
    conn = psycopg_connect(base_url, schema)
    barrier.wait(timeout=600)
    start, cpu = time.time(), time.process_time()
    fired = 0
    while True:
        with conn.transaction():
            rows = conn.execute(
                "SELECT id, complaint_id, kind, idx, due_at FROM deadlines "
                "WHERE fired_at IS NULL AND due_at <= %s ORDER BY due_at, id LIMIT %s "
                "FOR UPDATE SKIP LOCKED",
                (NOW, batch_size),
            ).fetchall()
            if not rows:
                break
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO bench_audit (deadline_id, complaint_id, at, worker, payload) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [
                        (
                            r[0],
                            r[1],
                            NOW,
                            worker,
                            f'{{"kind":"{r[2]}","index":{r[3]},"due_at":"{r[4].isoformat()}"}}',
                        )
                        for r in rows
                    ],
                )
            conn.execute(
                "UPDATE deadlines SET fired_at = %s, fired_by = %s WHERE id = ANY(%s)",
                (NOW, worker, [r[0] for r in rows]),
            )
        fired += len(rows)
    end = time.time()
    results.put(
        {
            "worker": worker,
            "fired": fired,
            "ticks": 0,
            "start": start,
            "end": end,
            "cpu": time.process_time() - cpu,
        }
    )
    conn.close()


@dataclass
class Drain:
    label: str
    processes: int
    threads: int
    due: int
    fired: int
    seconds: float
    cpu_seconds: float
    per_worker: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.fired / self.seconds


def run_drain(
    label: str,
    target: Callable[..., None],
    args: tuple[Any, ...],
    processes: int,
    threads: int,
    due: int,
) -> Drain:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(*args, f"{label}:{n}", barrier, results))
        for n in range(processes)
    ]
    for p in procs:
        p.start()
    reports = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"{p.name} exited with {p.exitcode}")
    start = min(r["start"] for r in reports)
    end = max(r["end"] for r in reports)
    fired = sum(r["fired"] for r in reports)
    return Drain(
        label,
        processes,
        threads,
        due,
        fired,
        end - start,
        sum(r["cpu"] for r in reports),
        {r["worker"]: r["fired"] for r in reports},
    )


# -- profile ------------------------------------------------------------------------------------


def statement_kind(statement: str) -> str:
    words = statement.split()
    verb = words[0].upper() if words else "?"
    if verb == "SELECT":
        found = re.search(r"\bFROM\s+(\w+)", statement)
        lock = " FOR UPDATE" if "FOR UPDATE" in statement else ""
        return f"SELECT {found.group(1) if found else '?'}{lock}"
    if verb == "INSERT":
        return f"INSERT {words[2]}"
    if verb == "UPDATE":
        return f"UPDATE {words[1]}"
    return verb


@dataclass
class Profile:
    fired: int
    seconds: float
    cpu_seconds: float
    batches: int
    statements: dict[str, list[float]]
    top: str

    def rows(self) -> list[list[str]]:
        out = []
        per_batch = max(self.batches, 1)
        for kind, times in sorted(self.statements.items(), key=lambda kv: -sum(kv[1])):
            out.append(
                [
                    kind,
                    f"{len(times) / per_batch:.1f}",
                    f"{sum(times) / per_batch * 1000:.1f}",
                    f"{sum(times) / self.seconds * 100:.0f} %",
                ]
            )
        return out


def profile_drain(engine: Engine, batch_size: int, threads: int) -> Profile:
    statements: dict[str, list[float]] = defaultdict(list)
    started: dict[int, float] = {}

    def before(_conn: Any, cursor: Any, *_args: Any) -> None:
        started[id(cursor)] = time.perf_counter()

    def after(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        statements[statement_kind(statement)].append(
            time.perf_counter() - started.pop(id(cursor), time.perf_counter())
        )

    scheduler = Scheduler(engine, worker="bench:profile", batch_size=batch_size, threads=threads)
    now = engine.now()
    scheduler.fire_batch(datetime(2000, 1, 1, tzinfo=UTC))  # warm caches
    profiler = cProfile.Profile()
    sa.event.listen(engine.database, "before_cursor_execute", before)
    sa.event.listen(engine.database, "after_cursor_execute", after)
    fired = batches = 0
    start, cpu = time.perf_counter(), time.process_time()
    profiler.enable()
    try:
        while True:
            batch = scheduler.fire_batch(now)
            if batch.fired == 0:
                break
            fired += batch.fired
            batches += 1
    finally:
        profiler.disable()
        sa.event.remove(engine.database, "before_cursor_execute", before)
        sa.event.remove(engine.database, "after_cursor_execute", after)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(r"scheduler|engine|hashing|sqlalchemy/engine/base")
    return Profile(fired, seconds, cpu_seconds, batches, dict(statements), out.getvalue())


# -- output -------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


TICK_HEADER = [
    "measured",
    "complaints",
    "pending deadlines",
    "tick median ms",
    "tick p95 ms",
    "claim median ms",
    "claim p95 ms",
]
DRAIN_HEADER = [
    "drain",
    "processes",
    "threads each",
    "due",
    "fired",
    "seconds",
    "deadlines/s",
    "client CPU s",
    "vs target 5,000/s",
    "engine / bare",
]


def drain_rows(drains: list[Drain]) -> list[list[str]]:
    bare = {d.processes: d.rate for d in drains if d.label.startswith("bare")}
    rows = []
    for d in drains:
        ratio = (
            f"{d.rate / bare[d.processes]:.2f}"
            if not d.label.startswith("bare") and d.processes in bare
            else ""
        )
        rows.append(
            [
                d.label,
                str(d.processes),
                str(d.threads),
                f"{d.due:,}",
                f"{d.fired:,}",
                f"{d.seconds:.1f}",
                f"{d.rate:,.0f}",
                f"{d.cpu_seconds:.1f}",
                f"{d.rate / DRAIN_TARGET:.2f}×" if not d.label.startswith("bare") else "",
                ratio,
            ]
        )
    return rows


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load_average()}] {message}", flush=True)


@contextlib.contextmanager
def fresh_schema(base_url: str, keep: bool, reuse: str | None = None) -> Iterator[str]:
    schema = reuse or f"bench_sched_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base_url)
    if not reuse:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        if keep or reuse:
            print(f"kept schema {schema}")
        else:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument(
        "--scales",
        default="10000,100000,1000000",
        help="complaint counts at which idle ticks are measured",
    )
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--drain", type=int, default=100_000, help="due breaches per drain")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="Scheduler batch_size (default: the library's)",
    )
    parser.add_argument(
        "--threads",
        default=f"1,{DEFAULT_THREADS}" if DEFAULT_THREADS != 1 else "1",
        help="Scheduler threads per process; each value gets its own 1- and 2-process drains "
        "(default: 1 and the library's DEFAULT_THREADS)",
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-deadlines", type=int, default=10_000)
    parser.add_argument("--write", action="store_true", help=f"update {DOC.relative_to(ROOT)}")
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    parser.add_argument(
        "--reuse-schema",
        default=None,
        help="measure on a schema loaded by an earlier run with --keep (no load; idle ticks "
        "at its size only); kept afterwards",
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="with --reuse-schema: first put the complaints earlier drains touched back as "
        "loaded, so that the drains can start again at --first 1",
    )
    parser.add_argument(
        "--first", type=int, default=1, help="first complaint of the drain ranges (with reuse)"
    )
    parser.add_argument(
        "--section", default="scheduler-results", help="doc section written by --write"
    )
    args = parser.parse_args(argv)
    scales = sorted(int(s) for s in args.scales.split(","))
    thread_counts = [int(t) for t in args.threads.split(",")]
    drain = args.drain
    profile_n = args.profile_deadlines if args.profile else 0
    if args.reuse_schema:
        probe = psycopg_connect(args.pg_url, args.reuse_schema, autocommit=True)
        found = probe.execute("SELECT count(*) FROM complaints").fetchone()
        probe.close()
        assert found is not None and found[0] > 0, "nothing loaded in that schema"
        scales = [int(found[0])]
    largest = scales[-1]
    drains_planned = 2 * len(thread_counts) + 2
    if args.first - 1 + drains_planned * drain + profile_n > largest:
        parser.error(
            f"the largest scale must hold {drains_planned} drains and the profile: "
            f"{drains_planned * drain + profile_n:,} complaints"
        )

    load_before = load_average()
    reuse = args.reuse_schema
    with fresh_schema(args.pg_url, args.keep, reuse) as schema:
        url = schema_url(args.pg_url, schema)
        engine = Engine.open(url, clock=SimulatedClock(NOW))
        ruleset = engine.rules.version
        loader = psycopg_connect(args.pg_url, schema, fast=True, autocommit=True)
        loader.execute(
            "CREATE TABLE IF NOT EXISTS bench_audit (id BIGSERIAL PRIMARY KEY, deadline_id "
            "BIGINT NOT NULL, complaint_id BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL, "
            "worker TEXT NOT NULL, payload TEXT NOT NULL)"
        )
        ticks: list[TickStats] = []
        loaded = largest if reuse else 0
        load_seconds = 0.0
        if reuse and args.reset:
            say("resetting the complaints earlier drains touched")
            say(f"reset {reset_drained(loader):,} rows")
        elif reuse:
            # whatever an interrupted run left due goes back to the far future
            loader.execute(
                "UPDATE deadlines SET due_at = %s + complaint_id * interval '1 second' "
                "WHERE fired_at IS NULL AND due_at <= %s",
                (FAR, NOW),
            )
            vacuum(loader)
        review_tick: tuple[float, int] | None = None
        for scale in scales:
            if not reuse:
                say(f"loading complaints {loaded + 1:,}..{scale:,}")
                start = time.perf_counter()
                with without_secondary_indexes(loader):
                    load(loader, loaded + 1, scale, ruleset)
                vacuum(loader)
                load_seconds += time.perf_counter() - start
                loaded = scale
                say(f"loaded {scale:,} complaints in {load_seconds:.0f} s so far; idle ticks")
            if scale == largest:
                # the first tick of a month whose review has not run: lists every open one
                loader.execute("DELETE FROM review_runs")
                loader.execute("DELETE FROM outbox WHERE kind = 'review'")
                start = time.perf_counter()
                report = Scheduler(engine, worker="bench:review").tick()
                review_seconds = time.perf_counter() - start
                size = loader.execute(
                    "SELECT coalesce(max(length(payload)), 0) FROM outbox WHERE kind = 'review'"
                ).fetchone()
                assert report.reviews == 1 and size is not None
                review_tick = (review_seconds, int(size[0]))
            waiting = loader.execute(
                "SELECT count(*) FROM deadlines WHERE fired_at IS NULL"
            ).fetchone()
            assert waiting is not None
            ticks.append(idle_ticks(engine, args.ticks, "idle", scale, int(waiting[0])))
            say(f"{scale:,}: tick median {statistics.median(ticks[-1].tick_ms):.2f} ms")
        sizes = {
            name: loader.execute(
                f"SELECT pg_size_pretty(pg_total_relation_size('{name}'))"
            ).fetchone()[0]  # type: ignore[index]
            for name in ("complaints", "events", "timers", "deadlines", "ix_deadlines_pending_due")
        }
        rtt = round_trip_ms(args.pg_url, schema)
        anatomy = tick_anatomy(engine)
        claim = capture_claim(engine)
        explain_idle = explain_claim(engine, claim, NOW, args.batch_size)

        drains: list[Drain] = []
        plan: list[tuple[str, Callable[..., None], tuple[Any, ...], int, int]] = [
            ("engine", drain_process, (url, args.batch_size, threads), processes, threads)
            for threads in thread_counts
            for processes in (1, 2)
        ]
        plan += [
            ("bare SKIP LOCKED", baseline_process, (args.pg_url, schema, args.batch_size), p, 1)
            for p in (1, 2)
        ]
        explain_due = ""
        pending = int(
            loader.execute("SELECT count(*) FROM deadlines WHERE fired_at IS NULL").fetchone()[0]  # type: ignore[index]
        )
        if not drain:
            plan = []
        for n, (label, target, targs, processes, threads) in enumerate(plan):
            first = args.first + n * drain
            due = make_due(loader, first, first + drain - 1)
            if n == 0:
                explain_due = explain_claim(engine, claim, NOW, args.batch_size)
            say(f"drain: {label}, {processes} process(es) x {threads} thread(s), {due:,} due")
            result = run_drain(label, target, targs, processes, threads, due)
            drains.append(result)
            say(f"  {result.fired:,} in {result.seconds:.1f} s = {result.rate:,.0f}/s")
            left = loader.execute(
                "SELECT count(*) FROM deadlines WHERE fired_at IS NULL AND due_at <= %s", (NOW,)
            ).fetchone()
            assert left is not None and left[0] == 0, f"{left} still due after the drain"
            assert result.fired == due, (result.fired, due)
        pending -= sum(d.fired for d in drains)
        if drains:
            ticks.append(
                idle_ticks(engine, args.ticks, "idle after drains, before VACUUM", largest, pending)
            )
            vacuum(loader, "deadlines", "complaints", "timers", "events", "outbox")
            ticks.append(
                idle_ticks(engine, args.ticks, "idle after drains and VACUUM", largest, pending)
            )

        prof: Profile | None = None
        if profile_n:
            first = args.first + len(plan) * drain
            make_due(loader, first, first + profile_n - 1)
            say(f"profiling a drain of {profile_n:,}")
            prof = profile_drain(engine, args.batch_size, 1)
            pending -= profile_n
        loader.close()
        engine.close()
    load_after = load_average()

    # -- report ------------------------------------------------------------------------------
    tick_table = markdown_table(TICK_HEADER, [t.row() for t in ticks])
    drain_table = markdown_table(DRAIN_HEADER, drain_rows(drains))
    print()
    print(tick_table)
    print()
    print(drain_table)
    print()
    if review_tick is not None:
        print(
            f"first tick of a month whose review has not run, at {largest:,} open "
            f"complaints: {review_tick[0]:.2f} s, review notification payload "
            f"{review_tick[1] / 1e6:.1f} MB"
        )
    anatomy_text = (
        f"one idle tick = {anatomy.get('statements', 0)} statements in "
        f"{anatomy.get('transactions', 0)} transactions on "
        f"{anatomy.get('checkouts', 0)} pool checkouts; "
        f"a bare round trip (SELECT 1, psycopg) takes {rtt:.2f} ms (median)"
    )
    print(anatomy_text)
    print(f"load {load_seconds:.0f} s; sizes {sizes}; load average {load_before} → {load_after}")
    print("\nEXPLAIN (ANALYZE, BUFFERS), nothing due:\n" + explain_idle)
    print("\nEXPLAIN (ANALYZE, BUFFERS), " + f"{drain:,} due:\n" + explain_due)
    if prof is not None:
        print(
            f"\nprofile: {prof.fired:,} fired in {prof.batches} batches, {prof.seconds:.1f} s "
            f"({prof.fired / prof.seconds:,.0f}/s), client CPU {prof.cpu_seconds:.1f} s"
        )
        print(
            markdown_table(["statement", "per batch", "ms per batch", "share of wall"], prof.rows())
        )
        print(prof.top)

    if args.write:
        cmd = "python benchmarks/bench_scheduler.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        env = environment(args.pg_url)
        write_section(
            "scheduler-environment",
            environment_markdown(env),
            doc=DOC,
        )
        data = [
            f"Command: `{cmd}`. Measured {today()}; load average {load_before} → "
            f"{load_after}. "
            + (
                f"Schema {schema} reused (loaded by an earlier run); "
                if reuse
                else f"Bulk load: {largest:,} complaints in {load_seconds:.0f} s; "
            )
            + "sizes: "
            + ", ".join(f"{k} {v}" for k, v in sizes.items())
            + ".",
            "",
            "**(i) Ticks with nothing due** (`Scheduler.tick()`: claim, reviews, outbox, "
            f"next due; the claim alone is `fire_batch(now)`), {args.ticks} each, target "
            f"< {TICK_TARGET_MS:g} ms:",
            "",
            tick_table,
            "",
            f"Anatomy: {anatomy_text}.",
            "",
        ]
        if review_tick is not None:
            data += [
                f"The first tick of a month whose periodic review has not run yet, at "
                f"{largest:,} open complaints: **{review_tick[0]:.2f} s**, and a review "
                f"notification payload of {review_tick[1] / 1e6:.1f} MB.",
                "",
            ]
        if drains:
            data += [
                f"**(ii) and (iii) Draining {drain:,} due breaches** (`whole_complaint`: "
                f"notify two roles, raise the severity), batch size {args.batch_size}, fresh "
                "due rows per run; each process fires its batches on the given number of "
                "threads (one connection each); rate = fired / (last process done − first "
                "started):",
                "",
                drain_table,
                "",
            ]
        data += [
            f"EXPLAIN (ANALYZE, BUFFERS) of the claim statement at {largest:,} "
            "complaints, nothing due:",
            "",
            "```",
            explain_idle,
            "```",
        ]
        if explain_due:
            data += ["", f"With {drain:,} due:", "", "```", explain_due, "```"]
        if prof is not None:
            data += [
                "",
                f"**Profile** (in-process, cProfile on): {prof.fired:,} breaches in "
                f"{prof.batches} batches, {prof.seconds:.1f} s "
                f"({prof.fired / prof.seconds:,.0f}/s), client CPU "
                f"{prof.cpu_seconds:.1f} s. Time per SQL statement kind (wall, "
                "client-side, including the round trip):",
                "",
                markdown_table(
                    ["statement", "per batch", "ms per batch", "share of wall"], prof.rows()
                ),
            ]
        write_section(args.section, "\n".join(data), doc=DOC)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
