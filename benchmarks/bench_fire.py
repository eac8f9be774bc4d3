"""Transitions committed per second through ``Engine.fire``, against the database's own limit.

For each backend, in one run and on the SAME database:

* engine: ``--complaints`` complaints are submitted (not timed), then every complaint is taken
  through the whole default procedure, one committed ``engine.fire`` per step
  (record → confirm → submit_report → propose_plan → approve_plan → resolve → feed_back →
  revisit → close: 9 fires per complaint, forward moves and self-loops, four actors);
* raw: one row per transaction into a scratch table of the same database, through the bare
  driver (sqlite3 with the engine's pragmas — WAL, synchronous=FULL — and
  ``BEGIN IMMEDIATE``/``COMMIT`` per row; psycopg 3 in autocommit, one INSERT per
  transaction), measured before and after the engine run; the mean of the two is the limit;
* raw, engine-shaped: transactions of the shape a fire cannot avoid (SELECT the row, SELECT
  its history, INSERT an event, UPDATE the row under a version check) through the same bare
  driver: what the storage allows with no Python logic and no SQLAlchemy;
* server CPU (PostgreSQL on this machine): the CPU the server processes behind the
  engine's connections used over the engine run, per fire, and the raw connection's, per
  commit, read from ``/proc``: a fire's client and server work run one after the other;
* SQLAlchemy floor: the three statements every fire issues (SELECT the row, UPDATE it under
  the version check, INSERT the event) through SQLAlchemy Core on the engine's own pool, with
  no engine logic: what the storage layer the engine is built on allows.

SQLite uses a fresh file in a fresh temporary directory; PostgreSQL a fresh schema
(``bench_<hex>``), dropped afterwards. ``--profile`` adds a cProfile pass (not timed) that
shows where the time of a fire goes.

Run: ``python benchmarks/bench_fire.py [--backends sqlite,postgresql] [--write] [--profile]``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import inspect
import io
import os
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks._common import (  # noqa: E402
    DEFAULT_PG_URL,
    code_identity,
    environment,
    environment_markdown,
    load_average,
    today,
    write_section,
)
from complaintflow import Actor, Engine, SimulatedClock  # noqa: E402
from complaintflow.storage import db  # noqa: E402
from complaintflow.storage.db import SQLITE_BUSY_TIMEOUT_MS  # noqa: E402
from complaintflow.storage.tables import complaints as C  # noqa: E402
from complaintflow.storage.tables import events as E  # noqa: E402
from tests.support import AFTER, CS, GM, QA, complaint_fields  # noqa: E402

TARGET = 0.25

#: (trigger, actor, data, state after) - the default procedure of a general complaint.
PLAN: tuple[tuple[str, Actor, dict[str, Any], str], ...] = (
    (
        "record",
        CS,
        {"readback_confirmed": True, "quantity": 20, "defective_quantity": 3},
        "recorded",
    ),
    ("confirm", CS, {"responsible_department": "quality", "handler": "wang.qa"}, "confirmed"),
    (
        "submit_report",
        QA,
        {
            "root_cause": "process",
            "responsibility": "company",
            "investigation_report": "绕组浸漆不良导致局部放电, 温升偏高",
        },
        "investigated",
    ),
    (
        "propose_plan",
        QA,
        {
            "disposal_plan": "更换同型号电机并复检同批次",
            "disposal_measures": ["replace", "technical_improvement"],
        },
        "investigated",
    ),
    ("approve_plan", GM, {}, "investigated"),
    ("resolve", AFTER, {"disposal_result": "已上门更换, 试运行正常"}, "resolved"),
    ("feed_back", CS, {"customer_feedback": "已电话告知客户处理结果"}, "resolved"),
    (
        "revisit",
        CS,
        {
            "satisfaction_score": 92,
            "satisfaction": "satisfied",
            "revisit_note": "客户对处理结果满意",
        },
        "revisited",
    ),
    ("close", CS, {"archive_location": "QA-2026-档案柜-03"}, "closed"),
)

#: The engine runs on a simulated clock (Monday 2026-03-02 09:00 in Shanghai) moved forward
#: before each round of the plan, so conditions on elapsed time (revisit no earlier than five
#: days after the feed-back) hold as they would in real use.
START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
ROUND_GAP = timedelta(hours=4)
WAIT_BEFORE = {"revisit": timedelta(days=6)}

RAW_PAYLOAD = (
    '{"set":{"disposal_plan":"更换同型号电机并复检同批次","disposal_measures":'
    '["replace","technical_improvement"]},"severity":"general"}'
)
RAW_HASH = "0" * 64


# -- raw driver baselines -------------------------------------------------------------------


@dataclass
class Raw:
    rows: int
    seconds: float
    cpu_seconds: float
    #: CPU of the PostgreSQL backend serving the connection (None: SQLite, or a server
    #: whose processes this machine cannot see)
    server_cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def backend_cpu(pids: list[int]) -> float | None:
    """CPU seconds (user + system) the PostgreSQL backends ``pids`` have used so far, from
    ``/proc`` (the server must run on this machine, readable by this user); None if any
    cannot be read."""
    total = 0
    try:
        for pid in pids:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(stat[11]) + int(stat[12])  # utime, stime (fields 14 and 15)
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def _server_cpu(before: float | None, pids: list[int]) -> float | None:
    after = backend_cpu(pids)
    return None if before is None or after is None else after - before


def _raw_loop(insert: Callable[[int], None], seconds: float, min_rows: int) -> Raw:
    rows = 0
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        insert(rows)
        rows += 1
        if rows >= min_rows and time.perf_counter() >= deadline:
            break
    return Raw(rows, time.perf_counter() - start, time.process_time() - cpu)


SHAPE_COMPLAINTS = 1_000
SHAPE_EVENTS = 5


def _shape_rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    complaints = [
        (i, SHAPE_EVENTS, "received", "{}", RAW_HASH) for i in range(1, 1 + SHAPE_COMPLAINTS)
    ]
    events = [
        (
            i,
            seq,
            datetime.now(UTC),
            "record",
            "li.na",
            "received",
            "recorded",
            RAW_PAYLOAD,
            RAW_HASH,
            RAW_HASH,
        )
        for i in range(1, 1 + SHAPE_COMPLAINTS)
        for seq in range(1, 1 + SHAPE_EVENTS)
    ]
    return complaints, events


def raw_sqlite(path: Path, seconds: float, min_rows: int, shape: bool = False) -> Raw:
    """One row per transaction through sqlite3, with the engine connection's pragmas; with
    ``shape``, transactions of the engine's shape instead (see ``SHAPE_DOC``)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        for pragma in db.sqlite_pragmas():
            conn.execute(pragma)
        execute = conn.execute
        if shape:
            _sqlite_shape_tables(conn)

            def transaction(n: int) -> None:
                cid = n % SHAPE_COMPLAINTS + 1
                execute("BEGIN IMMEDIATE")
                version = execute(
                    "SELECT version FROM bench_shape_c WHERE id = ?", (cid,)
                ).fetchone()[0]
                execute(
                    "SELECT seq, trigger, actor, from_state, to_state FROM bench_shape_e "
                    "WHERE cid = ? ORDER BY seq",
                    (cid,),
                ).fetchall()
                execute(
                    "INSERT INTO bench_shape_e (cid, seq, at, trigger, actor, from_state, "
                    "to_state, payload, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cid,
                        version + 1,
                        datetime.now(UTC).isoformat(),
                        "confirm",
                        "li.na",
                        "recorded",
                        "confirmed",
                        RAW_PAYLOAD,
                        RAW_HASH,
                        RAW_HASH,
                    ),
                )
                execute(
                    "UPDATE bench_shape_c SET version = ?, state = ?, fields = ?, head = ? "
                    "WHERE id = ? AND version = ?",
                    (version + 1, "confirmed", RAW_PAYLOAD, RAW_HASH, cid, version),
                )
                execute("COMMIT")

            return _raw_loop(transaction, seconds, min_rows)

        execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (id INTEGER PRIMARY KEY, "
            "n INTEGER NOT NULL, at TEXT NOT NULL, hash TEXT NOT NULL, "
            "payload TEXT NOT NULL)"
        )

        def insert(n: int) -> None:
            execute("BEGIN IMMEDIATE")
            execute(
                "INSERT INTO bench_raw (n, at, hash, payload) VALUES (?, ?, ?, ?)",
                (n, datetime.now(UTC).isoformat(), RAW_HASH, RAW_PAYLOAD),
            )
            execute("COMMIT")

        return _raw_loop(insert, seconds, min_rows)
    finally:
        conn.close()


def _sqlite_shape_tables(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE bench_shape_c (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, "
        "state TEXT NOT NULL, fields TEXT NOT NULL, head TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE bench_shape_e (id INTEGER PRIMARY KEY, "
        "cid INTEGER NOT NULL REFERENCES bench_shape_c (id), seq INTEGER NOT NULL, "
        "at TEXT NOT NULL, trigger TEXT, actor TEXT NOT NULL, from_state TEXT, "
        "to_state TEXT NOT NULL, payload TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL, "
        "UNIQUE (cid, seq))"
    )
    complaints, events = _shape_rows()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO bench_shape_c VALUES (?, ?, ?, ?, ?)", complaints)
    conn.executemany(
        "INSERT INTO bench_shape_e (cid, seq, at, trigger, actor, from_state, to_state, payload, "
        "prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*e[:2], e[2].isoformat(), *e[3:]) for e in events],
    )
    conn.execute("COMMIT")


def raw_postgresql(url: str, seconds: float, min_rows: int, shape: bool = False) -> Raw:
    """One row per transaction through psycopg 3 (autocommit: each INSERT commits); with
    ``shape``, transactions of the engine's shape instead (see ``SHAPE_DOC``)."""
    parsed = sa.make_url(url)
    conninfo = dict(parsed.query)
    conn = psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        autocommit=True,
        **{k: str(v) for k, v in conninfo.items()},
    )
    try:
        execute = conn.execute
        pids = [conn.info.backend_pid]
        if shape:
            _postgresql_shape_tables(conn)

            def transaction(n: int) -> None:
                cid = n % SHAPE_COMPLAINTS + 1
                with conn.transaction():
                    row = execute(
                        "SELECT version FROM bench_shape_c WHERE id = %s", (cid,)
                    ).fetchone()
                    assert row is not None
                    version = row[0]
                    execute(
                        "SELECT seq, trigger, actor, from_state, to_state FROM bench_shape_e "
                        "WHERE cid = %s ORDER BY seq",
                        (cid,),
                    ).fetchall()
                    execute(
                        "INSERT INTO bench_shape_e (cid, seq, at, trigger, actor, from_state, "
                        "to_state, payload, prev, hash) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            cid,
                            version + 1,
                            datetime.now(UTC),
                            "confirm",
                            "li.na",
                            "recorded",
                            "confirmed",
                            RAW_PAYLOAD,
                            RAW_HASH,
                            RAW_HASH,
                        ),
                    )
                    execute(
                        "UPDATE bench_shape_c SET version = %s, state = %s, fields = %s, "
                        "head = %s WHERE id = %s AND version = %s",
                        (version + 1, "confirmed", RAW_PAYLOAD, RAW_HASH, cid, version),
                    )

            server = backend_cpu(pids)
            measured = _raw_loop(transaction, seconds, min_rows)
            measured.server_cpu_seconds = _server_cpu(server, pids)
            return measured

        execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (id BIGSERIAL PRIMARY KEY, "
            "n INTEGER NOT NULL, at TIMESTAMPTZ NOT NULL, hash VARCHAR(64) NOT NULL, "
            "payload TEXT NOT NULL)"
        )

        def insert(n: int) -> None:
            execute(
                "INSERT INTO bench_raw (n, at, hash, payload) VALUES (%s, %s, %s, %s)",
                (n, datetime.now(UTC), RAW_HASH, RAW_PAYLOAD),
            )

        server = backend_cpu(pids)
        measured = _raw_loop(insert, seconds, min_rows)
        measured.server_cpu_seconds = _server_cpu(server, pids)
        return measured
    finally:
        conn.close()


def _postgresql_shape_tables(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(
            "CREATE TABLE bench_shape_c (id BIGINT PRIMARY KEY, version INTEGER NOT NULL, "
            "state VARCHAR(64) NOT NULL, fields TEXT NOT NULL, head VARCHAR(64) NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE bench_shape_e (id BIGSERIAL PRIMARY KEY, "
            "cid BIGINT NOT NULL REFERENCES bench_shape_c (id), seq INTEGER NOT NULL, "
            "at TIMESTAMPTZ NOT NULL, trigger VARCHAR(64), actor VARCHAR(200) NOT NULL, "
            "from_state VARCHAR(64), to_state VARCHAR(64) NOT NULL, payload TEXT NOT NULL, "
            "prev VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL, UNIQUE (cid, seq))"
        )
        complaints, events = _shape_rows()
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_shape_c VALUES (%s, %s, %s, %s, %s)", complaints)
            cur.executemany(
                "INSERT INTO bench_shape_e (cid, seq, at, trigger, actor, from_state, to_state, "
                "payload, prev, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                events,
            )
    conn.execute("ANALYZE bench_shape_c")
    conn.execute("ANALYZE bench_shape_e")


SHAPE_DOC = (
    "the engine's minimum per fire through the bare driver: in one transaction, SELECT the "
    "complaint row, SELECT its history, INSERT one event, UPDATE the row with a version check "
    f"({SHAPE_COMPLAINTS:,} scratch complaints starting with {SHAPE_EVENTS} events each)"
)

FLOOR_DOC = (
    "the three statements every fire issues, through portable SQLAlchemy Core on the engine's own "
    "connection pool and tables, with no engine logic (values computed beforehand): in one "
    "write transaction (BEGIN IMMEDIATE on SQLite), SELECT the complaint row by number, "
    "UPDATE it with a version check, INSERT one event (copied from its first, a new seq)"
)


def sqlalchemy_floor(engine: Engine, numbers: list[str], seconds: float, min_rows: int) -> Raw:
    """Transactions of a fire's minimal shape through SQLAlchemy Core (``FLOOR_DOC``), on the
    complaints the engine run closed: what the storage layer costs before any engine logic."""
    select = sa.select(C).where(C.c.number == sa.bindparam("b_number"))
    update = sa.update(C).where(
        C.c.id == sa.bindparam("b_id"), C.c.version == sa.bindparam("b_version")
    )
    insert = sa.insert(E)
    with engine.database.connect() as conn:
        first = conn.execute(sa.select(E).where(E.c.seq == 1).limit(1)).mappings().one()
    template = {k: v for k, v in first.items() if k != "id"}

    def transaction(i: int) -> None:
        number = numbers[i % len(numbers)]
        with db.write(engine.database, number) as conn:
            row = conn.execute(select, {"b_number": number}).one()
            seq = row.version + 1
            conn.execute(
                update, {"b_id": row.id, "b_version": row.version, "version": seq, "head_seq": seq}
            )
            conn.execute(insert, {**template, "complaint_id": row.id, "seq": seq})

    return _raw_loop(transaction, seconds, min_rows)


# -- fresh databases ------------------------------------------------------------------------

#: (seconds, minimum rows, shape?) -> the measured rate
RawFn = Callable[..., Raw]


@contextlib.contextmanager
def fresh_sqlite(base_dir: Path | None) -> Iterator[tuple[str, RawFn]]:
    tmp = Path(tempfile.mkdtemp(prefix="complaintflow-bench-", dir=base_dir))
    path = tmp / "bench.db"
    try:
        yield f"sqlite:///{path}", lambda s, m, shape=False: raw_sqlite(path, s, m, shape)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def fresh_postgresql(base_url: str) -> Iterator[tuple[str, RawFn]]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    joiner = "&" if "?" in base_url else "?"
    url = f"{base_url}{joiner}options=-csearch_path%3D{schema}"
    try:
        yield url, lambda s, m, shape=False: raw_postgresql(url, s, m, shape)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


# -- the engine workload --------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    complaints: int
    fires: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    server_cpu_seconds: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    submit_rate: float = 0.0
    raw_before: Raw | None = None
    raw_after: Raw | None = None
    shape: Raw | None = None
    floor: Raw | None = None
    load_before: str = ""
    load_after: str = ""
    profile: list[tuple[str, float]] = field(default_factory=list)
    profile_top: str = ""

    @property
    def rate(self) -> float:
        return self.fires / self.seconds

    @property
    def raw_rate(self) -> float:
        assert self.raw_before is not None and self.raw_after is not None
        return (self.raw_before.rate + self.raw_after.rate) / 2

    @property
    def ratio(self) -> float:
        return self.rate / self.raw_rate

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds / self.fires * 1000

    @property
    def raw_cpu_ms(self) -> float:
        assert self.raw_before is not None and self.raw_after is not None
        rows = self.raw_before.rows + self.raw_after.rows
        return (self.raw_before.cpu_seconds + self.raw_after.cpu_seconds) / rows * 1000

    @property
    def server_ms(self) -> str:
        """PostgreSQL backend CPU per fire and per raw commit, or a dash."""
        raws = [r for r in (self.raw_before, self.raw_after) if r is not None]
        if self.server_cpu_seconds is None or any(r.server_cpu_seconds is None for r in raws):
            return "–"
        raw = sum(r.server_cpu_seconds or 0.0 for r in raws) / sum(r.rows for r in raws)
        return f"{self.server_cpu_seconds / self.fires * 1000:.2f} / {raw * 1000:.3f}"

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def submit_many(engine: Engine, count: int) -> list[str]:
    return [engine.submit(complaint_fields(), CS).number for _ in range(count)]


def fire_plan(
    engine: Engine, clock: SimulatedClock, numbers: list[str], latencies: list[float] | None
) -> int:
    """Take every complaint through the plan, one round (trigger) across all complaints."""
    fired = 0
    fire = engine.fire
    timer = time.perf_counter
    for trigger, actor, data, expected in PLAN:
        clock.advance(WAIT_BEFORE.get(trigger, ROUND_GAP))
        for number in numbers:
            start = timer()
            complaint = fire(number, trigger, actor, data)
            if latencies is not None:
                latencies.append((timer() - start) * 1000)
            if complaint.state != expected:
                raise RuntimeError(f"{number} {trigger}: {complaint.state} != {expected}")
            fired += 1
    return fired


STATEMENTS_LABEL = (
    "SQL statements per fire (a count: issued through SQLAlchemy or straight through the "
    "driver, without BEGIN and COMMIT; SQLite: with BEGIN IMMEDIATE)"
)
ROUND_TRIPS_LABEL = (
    "round trips to the server per fire (BEGIN, statements, COMMIT; a pipeline is one)"
)


def _indented(label: str) -> str:
    """Markdown drops leading spaces: show the nesting of a profile row with dots."""
    depth = (len(label) - len(label.lstrip())) // 2
    return "· " * depth + label.strip()


def _value(label: str, value: float) -> str:
    return f"{value:.1f}" if label in (STATEMENTS_LABEL, ROUND_TRIPS_LABEL) else f"{value:.3f}"


#: (label, "module:Qualified.name" of the function, or "~:<builtin name>"; alternatives for
#: other versions of the engine separated by "|"; rows that match nothing are left out)
PROFILE_ROWS: tuple[tuple[str, str], ...] = (
    ("Engine.fire (total)", "complaintflow.engine:Engine.fire"),
    (
        "  db.write enter+exit: connect, BEGIN, COMMIT, return to pool",
        "complaintflow.storage.db:write",
    ),
    (
        "  db.SqliteWriter.transaction enter+exit (SQLite fire): BEGIN IMMEDIATE and COMMIT "
        "included, connection kept aside",
        "complaintflow.storage.db:SqliteWriter.transaction",
    ),
    (
        "    pool pre-ping (PostgreSQL)",
        "sqlalchemy.dialects.postgresql._psycopg_common:_PGDialect_common_psycopg.do_ping",
    ),
    (
        "  db.autocommit enter+exit (PostgreSQL): connect, return to pool",
        "complaintflow.storage.db:autocommit",
    ),
    (
        "  row read straight through the driver (PostgreSQL; one round trip)",
        "complaintflow.storage.db:fetch_one",
    ),
    (
        "  writes + commit as one pipeline (PostgreSQL; one round trip)",
        "complaintflow.storage.db:execute_pipeline",
    ),
    ("    driver commit (sqlite3)", "~:<method 'commit' of 'sqlite3.Connection' objects>"),
    ("    driver commit (psycopg)", "psycopg.connection:Connection.commit"),
    (
        "  SQLAlchemy execute of all statements",
        "sqlalchemy.engine.base:Connection._execute_clauseelement",
    ),
    ("    compile / cache-key lookup", "sqlalchemy.sql.elements:ClauseElement._compile_w_cache"),
    ("    driver execute (sqlite3)", "~:<method 'execute' of 'sqlite3.Cursor' objects>"),
    ("    driver execute (psycopg)", "psycopg.cursor:Cursor.execute"),
    ("  building INSERT/UPDATE statements (.values())", "sqlalchemy.sql.dml:ValuesBase.values"),
    (
        "  Engine.transition (guards, step, timers, event, UPDATE)",
        "complaintflow.engine:Engine.transition",
    ),
    (
        "  history facts (the facts column; older engine: SELECT + replay of the history)",
        "complaintflow.engine:Engine.facts_of|complaintflow.engine:Engine.facts"
        "|complaintflow.engine:Engine._facts",
    ),
    (
        "  ComplaintMachine.step (guards + transitions)",
        "complaintflow.states.machine:ComplaintMachine.step",
    ),
    (
        "  Engine._prepare (guards, step, timer plan, event; reads only)",
        "complaintflow.engine:Engine._prepare",
    ),
    ("  sla.on_event (timers and deadlines, with their statements)", "complaintflow.sla:on_event"),
    ("  sla.plan_event (the timer rules applied; no SQL)", "complaintflow.sla:plan_event"),
    (
        "  event construction (canonical JSON + hash; older engine: _append incl. INSERT)",
        "complaintflow.engine:build_event|complaintflow.engine:Engine._append",
    ),
    ("    event_hash", "complaintflow.storage.hashing:event_hash"),
    (
        "  _fingerprint (JSON + SHA-256; only with an idempotency key)",
        "complaintflow.engine:_fingerprint",
    ),
    ("  FieldCodec.decode (stored fields to values)", "complaintflow.views:FieldCodec.decode"),
    ("  Engine._masked", "complaintflow.engine:Engine._masked"),
    (
        "  observers (notify)",
        "complaintflow.engine:Engine.notify|complaintflow.engine:Engine._notify",
    ),
)


def _profile_key(target: str) -> tuple[str, int, str] | None:
    """The cProfile key (file, first line, name) of a function named "module:qualname"."""
    module_name, qualname = target.split(":", 1)
    if module_name == "~":
        return ("~", 0, qualname)
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    code = inspect.unwrap(obj).__code__
    return (code.co_filename, code.co_firstlineno, code.co_name)


def profile_engine(
    engine: Engine, clock: SimulatedClock, count: int
) -> tuple[list[tuple[str, float]], str]:
    numbers = submit_many(engine, count)
    statements = round_trips = 0

    def count_statement(*_args: Any) -> None:
        nonlocal statements, round_trips
        statements += 1
        round_trips += 1

    def count_commit(conn: sa.Connection) -> None:
        # psycopg sends BEGIN before a transaction's first statement and COMMIT apart; an
        # autocommit connection sends neither
        nonlocal round_trips
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            round_trips += 2

    # statements sent straight through the driver (PostgreSQL's fire path, if the engine
    # measured has one): a row read is one round trip, a pipeline of writes is one
    originals = {name: getattr(db, name) for name in ("fetch_one", "execute_pipeline")
                 if hasattr(db, name)}

    def fetch_one(*args: Any) -> Any:
        nonlocal statements, round_trips
        statements += 1
        round_trips += 1
        return originals["fetch_one"](*args)

    def execute_pipeline(conn: Any, sent: list[Any]) -> Any:
        nonlocal statements, round_trips
        statements += len(sent)
        round_trips += 1
        return originals["execute_pipeline"](conn, sent)

    def trace(sql: str) -> None:
        # SQLite: every statement through the driver (the fire's own and SQLAlchemy's),
        # BEGIN IMMEDIATE included, COMMIT not
        nonlocal statements
        if sql not in ("COMMIT", "ROLLBACK"):
            statements += 1

    def traced(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(trace)

    sqlite = engine.dialect == "sqlite"
    counters = {"fetch_one": fetch_one, "execute_pipeline": execute_pipeline}
    if sqlite:  # connections (those the fire path keeps aside too) opened anew, traced
        sa.event.listen(engine.database, "connect", traced)
        engine.database.dispose()
    else:
        sa.event.listen(engine.database, "before_cursor_execute", count_statement)
        sa.event.listen(engine.database, "commit", count_commit)
    for name in originals:
        setattr(db, name, counters[name])
    profiler = cProfile.Profile()
    try:
        profiler.enable()
        fired = fire_plan(engine, clock, numbers, None)
        profiler.disable()
    finally:
        for name, original in originals.items():
            setattr(db, name, original)
        if sqlite:
            sa.event.remove(engine.database, "connect", traced)
            engine.database.dispose()
        else:
            sa.event.remove(engine.database, "before_cursor_execute", count_statement)
            sa.event.remove(engine.database, "commit", count_commit)
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    rows: list[tuple[str, float]] = []
    for label, targets in PROFILE_ROWS:
        keys = [_profile_key(target) for target in targets.split("|")]
        total = sum(raw[key][3] for key in keys if key in raw)
        if total:
            rows.append((label, total / fired * 1000))
    rows.insert(0, (STATEMENTS_LABEL, statements / fired))
    if engine.dialect == "postgresql":
        rows.insert(1, (ROUND_TRIPS_LABEL, round_trips / fired))
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
    return rows, text.getvalue()


def _backend_pids(engine: Engine) -> list[int]:
    """The server processes behind the engine's pooled connections: one per pool in this
    single-threaded run (the pools hand the same connection back each time), so their CPU
    over the run is the server's work for the fires."""
    pids = []
    for pool in engine.databases:
        with pool.connect() as conn:
            pids.append(int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()))
        if pool.pool.checkedin() != 1:  # type: ignore[attr-defined]
            raise RuntimeError("expected one pooled connection per pool")
    return pids


def run_backend(backend: str, args: argparse.Namespace, console: Console) -> Result:
    complaints = args.complaints
    fresh = fresh_sqlite(args.dir) if backend == "sqlite" else fresh_postgresql(args.pg_url)
    result = Result(backend, complaints)
    with fresh as (url, raw):
        clock = SimulatedClock(START)
        engine = Engine.open(url, clock=clock)
        try:
            console.print(f"[bold]{backend}[/bold]: submitting {complaints} complaints (not timed)")
            start = time.perf_counter()
            numbers = submit_many(engine, complaints)
            result.submit_rate = complaints / (time.perf_counter() - start)
            fire_plan(engine, clock, submit_many(engine, 1), None)  # warm statement caches
            result.load_before = load_average()
            console.print(f"  raw inserts for {args.raw_seconds:g} s")
            result.raw_before = raw(args.raw_seconds, args.raw_min_rows)
            console.print(f"  firing {complaints * len(PLAN)} transitions")
            pids = _backend_pids(engine) if backend == "postgresql" else []
            server = backend_cpu(pids) if pids else None
            cpu = time.process_time()
            start = time.perf_counter()
            result.fires = fire_plan(engine, clock, numbers, result.latencies_ms)
            result.seconds = time.perf_counter() - start
            result.cpu_seconds = time.process_time() - cpu
            result.server_cpu_seconds = _server_cpu(server, pids)
            console.print(f"  raw inserts for {args.raw_seconds:g} s")
            result.raw_after = raw(args.raw_seconds, args.raw_min_rows)
            console.print(f"  raw engine-shaped transactions for {args.raw_seconds:g} s")
            result.shape = raw(args.raw_seconds, args.raw_min_rows, shape=True)
            console.print(f"  SQLAlchemy floor transactions for {args.raw_seconds:g} s")
            result.floor = sqlalchemy_floor(engine, numbers, args.raw_seconds, args.raw_min_rows)
            result.load_after = load_average()
            closed = engine.find(state="closed", limit=1).total
            if closed != complaints + 1:
                raise RuntimeError(f"{closed} closed complaints, expected {complaints + 1}")
            if args.profile:
                console.print(f"  profiling {args.profile_complaints} more complaints")
                result.profile, result.profile_top = profile_engine(
                    engine, clock, args.profile_complaints
                )
        finally:
            engine.close()
    return result


# -- output ---------------------------------------------------------------------------------


def _row(r: Result) -> list[str]:
    assert r.raw_before is not None and r.raw_after is not None
    return [
        r.backend,
        f"{r.complaints:,}",
        f"{r.fires:,}",
        f"{r.rate:,.0f}",
        f"{r.percentile(0.5):.2f} / {r.percentile(0.99):.2f}",
        f"{r.cpu_ms:.2f}",
        f"{r.raw_rate:,.0f} ({r.raw_before.rate:,.0f} / {r.raw_after.rate:,.0f})",
        f"{r.raw_cpu_ms:.3f}",
        r.server_ms,
        f"{r.ratio:.1%}",
        f"{r.shape.rate:,.0f} ({r.shape.rate / r.raw_rate:.0%} of raw)" if r.shape else "–",
        f"{r.rate / r.shape.rate:.1%}" if r.shape else "–",
        f"{r.floor.rate:,.0f} ({r.floor.rate / r.raw_rate:.1%} of raw)" if r.floor else "–",
        f"{r.floor.cpu_seconds / r.floor.rows * 1000:.2f}" if r.floor else "–",
    ]


HEADERS = (
    "Backend",
    "Complaints",
    "Fires",
    "engine fire/s",
    "p50 / p99 ms",
    "client CPU ms/fire",
    "raw commits/s (before / after)",
    "raw client CPU ms/commit",
    "server CPU ms/fire / ms/raw commit",
    "engine ÷ raw",
    "raw engine-shaped txn/s",
    "engine ÷ shaped",
    "SQLAlchemy floor txn/s",
    "floor client CPU ms/txn",
    f"engine ≥ {TARGET:.0%} of raw",
)


def table(results: list[Result]) -> Table:
    out = Table(title="Committed transitions per second: engine.fire vs one-row transactions")
    for i, name in enumerate(HEADERS):
        out.add_column(name, justify="left" if i == 0 else "right")
    for r in results:
        ok = "[green]yes[/green]" if r.ratio >= TARGET else "[red]no[/red]"
        out.add_row(*_row(r), ok)
    return out


def profile_table(r: Result) -> Table:
    out = Table(
        title=f"{r.backend}: where a fire's time goes (cProfile, inclusive, "
        "overlapping rows; profiler overhead inflates Python-heavy rows)"
    )
    out.add_column("Part")
    out.add_column("ms per fire", justify="right")
    for label, ms in r.profile:
        out.add_row(label, _value(label, ms))
    return out


def markdown(results: list[Result], args: argparse.Namespace) -> str:
    backends = ",".join(r.backend for r in results)
    lines = [
        f"Measured {today()} with `python benchmarks/bench_fire.py --backends {backends} "
        f"--complaints {args.complaints} --write" + (" --profile" if args.profile else "") + "` "
        f"({len(PLAN)} fires per complaint; raw rate = mean of {args.raw_seconds:g} s before "
        f"and {args.raw_seconds:g} s after the engine run, same database; raw engine-shaped "
        f"= {SHAPE_DOC}, {args.raw_seconds:g} s; SQLAlchemy floor = {FLOOR_DOC}, "
        f"{args.raw_seconds:g} s; server CPU = PostgreSQL backend CPU from /proc, per fire "
        f"over the engine run and per raw commit). Code: {code_identity()}.",
        "",
        "| " + " | ".join(HEADERS) + " | submit/s | load avg before → after |",
        "|---|" + "--:|" * (len(HEADERS) - 2) + ":-:|--:|---|",
    ]
    for r in results:
        ok = "yes" if r.ratio >= TARGET else "**no**"
        lines.append(
            "| "
            + " | ".join(
                [*_row(r), ok, f"{r.submit_rate:,.0f}", f"{r.load_before} → {r.load_after}"]
            )
            + " |"
        )
    for r in results:
        if not r.profile:
            continue
        lines += [
            "",
            f"Where a fire's time goes on {r.backend} (cProfile over "
            f"{args.profile_complaints * len(PLAN)} fires, inclusive ms per fire; "
            "rows overlap, and the profiler inflates Python-heavy rows):",
            "",
            "| Part | ms per fire |",
            "|---|--:|",
        ]
        lines += [f"| {_indented(label)} | {_value(label, ms)} |" for label, ms in r.profile]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--complaints",
        type=int,
        default=200,
        help=f"complaints per backend, {len(PLAN)} fires each (default 200)",
    )
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL base URL (env COMPLAINTFLOW_PG_URL)"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the temporary SQLite directory is made (default: $TMPDIR)",
    )
    parser.add_argument(
        "--raw-seconds", type=float, default=2.5, help="duration of each raw-insert measurement"
    )
    parser.add_argument("--raw-min-rows", type=int, default=200)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="add a cProfile pass (not timed) and show where the time goes",
    )
    parser.add_argument("--profile-complaints", type=int, default=40)
    parser.add_argument(
        "--verbose-profile",
        action="store_true",
        help="with --profile, also print the top 30 functions by cumulative time",
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown or not backends:
        parser.error(f"unknown backends: {', '.join(sorted(unknown)) or '(none)'}")
    if args.complaints < 1:
        parser.error("--complaints must be at least 1")

    console = Console(width=max(170, shutil.get_terminal_size().columns))
    results = [run_backend(b, args, console) for b in backends]
    console.print(table(results))
    for r in results:
        console.print(
            f"{r.backend}: submit {r.submit_rate:,.0f}/s; engine run "
            f"{r.seconds:.1f} s; mean {statistics.fmean(r.latencies_ms):.2f} ms/fire;"
            f" load average {r.load_before} → {r.load_after}"
        )
    for r in results:
        if r.profile:
            console.print(profile_table(r))
            if args.verbose_profile:
                console.print(r.profile_top, markup=False, highlight=False)
    if args.write:
        tmp_dir = args.dir or Path(tempfile.gettempdir())
        write_section("environment", environment_markdown(environment(args.pg_url, tmp_dir)))
        write_section("fire", markdown(results, args))
        console.print("[green]docs/benchmarks.md updated (fire, environment)[/green]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
