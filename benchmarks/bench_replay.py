"""Replay and deep verification at a million events: throughput on one core, and memory.

One run, one temporary directory (removed afterwards unless ``--keep``):

1. Templates, through the real engine (SQLite, ``SimulatedClock``): ``--templates``
   complaints received 47 minutes apart, each following one of six realistic paths
   (closed in time; major with GM approvals, top-management signature, a dissatisfied
   revisit and a reopening; left lying at ``confirmed`` so every clock breaches; rejected;
   two clocks extended with the customer's consent; a disputed result re-investigated).
   A punctual scheduler fires every warning and breach at its due instant while the
   simulated clock moves on, so the history is the one production would write.
2. Clones, in SQL: complaint ``k`` beyond the templates copies template ``k mod T`` under a
   new number with its whole event chain re-hashed (``storage.hashing.event_hash``), so
   every chain verifies. Timer and deadline rows are not cloned (verification and replay
   never read them). Bulk-inserted with ``executemany`` (SQLite) or ``COPY`` (PostgreSQL).
3. At each checkpoint (``--checkpoints``, default 250k, 500k and 1M events), each in a
   fresh subprocess pinned to one CPU (``sched_setaffinity``): ``engine.verify(deep=True)``
   (chains, rows, every transition re-run under its rule version, clocks), the plain
   ``engine.verify()``, and ``engine.replay(number)`` for ``--replay-sample`` complaints
   spread over the table, plus the pure in-memory fold (``replay_events``) of the same
   histories. Reported: wall and CPU seconds, events per second (by wall time), the
   process's peak RSS (``ru_maxrss``) and the RSS before the call, and with
   ``--tracemalloc`` the peak of Python allocations during the call (a separate, slower
   run).
4. ``--profile``: cProfile of ``verify(deep=True)`` on a copy of the database at the
   first checkpoint below ``--profile-events`` (default 50k), top functions by own time.

Run: ``python benchmarks/bench_replay.py [--events 1000000] [--backends sqlite,postgresql]
[--profile] [--tracemalloc] [--write]``. ``--write`` replaces the generated sections of
docs/benchmarks-replay.md (the interpretation there is written by hand).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import (  # noqa: E402
    DEFAULT_PG_URL,
    environment,
    environment_markdown,
    load_average,
    today,
    write_section,
)
from complaintflow import Actor, Consent, Engine, SimulatedClock  # noqa: E402
from complaintflow.scheduler import Scheduler  # noqa: E402
from complaintflow.storage.hashing import GENESIS, event_hash  # noqa: E402
from tests.support import (  # noqa: E402
    AFTER,
    ASSIGN,
    CS,
    DISSATISFIED,
    DM,
    FEEDBACK,
    GM,
    PLAN,
    QA,
    QM,
    REPORT,
    RESULT,
    SALES,
    SATISFIED,
    TOP,
    complaint_fields,
)

DOC = ROOT / "docs" / "benchmarks-replay.md"
TARGET = 50_000.0  # events per second
SH = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 3, 2, 9, 0, tzinfo=SH)

FIELDS: dict[str, Any] = complaint_fields()
COMPENSATION = {
    "disposal_plan": "更换电机并赔偿停机损失",
    "disposal_measures": ["replace", "compensation"],
    "compensation_amount": "3000",
}
ARCHIVE = {"archive_location": "档案柜A-3"}

#: (hours after receipt, trigger or "extend:<timer>", actor, data)
Step = tuple[float, str, Actor, dict[str, Any]]
PATHS: list[tuple[str, dict[str, Any], Actor, list[Step]]] = [
    (
        "closed in time",
        {},
        CS,
        [
            (0.3, "respond", CS, {"response_note": "已致电客户"}),
            (0.8, "record", CS, {"readback_confirmed": True, "customer_demand": ["replace"]}),
            (1.5, "confirm", CS, ASSIGN),
            (2, "contact_customer", QA, {"contact_note": "约定上门"}),
            (5, "organise_investigation", QA, {}),
            (48, "submit_report", QA, REPORT),
            (72, "propose_plan", QA, PLAN),
            (96, "resolve", AFTER, RESULT),
            (102, "feed_back", CS, FEEDBACK),
            (223, "revisit", CS, SATISFIED),
            (224, "close", CS, ARCHIVE),
        ],
    ),
    (
        "major, approvals, reopened",
        {"safety_issue": True},
        SALES,
        [
            (0.1, "hand_over", SALES, {}),
            (0.5, "record", CS, {"readback_confirmed": True}),
            (1, "confirm", DM, ASSIGN),
            (5, "name_special_team", GM, {"special_team": "质量部+技术部专项小组"}),
            (50, "submit_report", QA, REPORT),
            (54, "propose_plan", QA, COMPENSATION),
            (72, "approve_plan", GM, {}),
            (80, "resolve", AFTER, RESULT),
            (96, "sign_reply", TOP, {}),
            (97, "feed_back", CS, FEEDBACK),
            (218, "revisit", CS, DISSATISFIED),
            (219, "reopen", QM, {"dispute_reason": "赔偿金额不足"}),
            (240, "propose_plan", QA, {**COMPENSATION, "compensation_amount": "5000"}),
            (246, "approve_plan", GM, {}),
            (264, "resolve", AFTER, {"disposal_result": "追加赔偿已支付"}),
            (265, "sign_reply", TOP, {}),
            (266, "feed_back", CS, FEEDBACK),
            (387, "revisit", CS, SATISFIED),
            (388, "close", CS, ARCHIVE),
        ],
    ),
    (
        "left lying at confirmed",
        {"customer_demand": ["onsite_visit"]},
        CS,
        [
            (3, "record", CS, {"readback_confirmed": True}),
            (6, "confirm", CS, ASSIGN),
        ],
    ),
    (
        "rejected",
        {},
        CS,
        [
            (1, "record", CS, {"readback_confirmed": True}),
            (2, "reject", CS, {"rejection_reason": "非本公司产品"}),
        ],
    ),
    (
        "extended with consent",
        {},
        CS,
        [
            (0.5, "record", CS, {"readback_confirmed": True}),
            (1, "confirm", CS, ASSIGN),
            (2, "contact_customer", QA, {"contact_note": "客户寄回样品"}),
            (24, "receive_sample", QA, {}),
            (25, "organise_investigation", QA, {}),
            (30, "extend:sample_reinspection", QA, {"amount": 2}),
            (30, "extend:whole_complaint", DM, {"amount": 5}),
            (100, "record_reinspection", QA, {"reinspection_result": "复检不合格"}),
            (120, "submit_report", QA, REPORT),
            (144, "propose_plan", QA, PLAN),
            (168, "resolve", AFTER, RESULT),
            (170, "feed_back", CS, FEEDBACK),
        ],
    ),
    (
        "disputed, re-investigated",
        {"customer_demand": ["repair"]},
        CS,
        [
            (0.2, "respond", CS, {"response_note": "已受理"}),
            (0.6, "record", CS, {"readback_confirmed": True}),
            (1, "confirm", CS, ASSIGN),
            (26, "submit_report", QA, REPORT),
            (30, "propose_plan", QA, PLAN),
            (50, "resolve", AFTER, RESULT),
            (52, "dispute", CS, {"dispute_reason": "客户认为非使用不当"}),
            (75, "reinvestigate", QA, {"investigation_report": "复查: 绕组工艺问题"}),
            (80, "propose_plan", QA, PLAN),
            (100, "resolve", AFTER, RESULT),
            (101, "feed_back", CS, FEEDBACK),
            (222, "revisit", CS, SATISFIED),
            (223, "close", CS, ARCHIVE),
        ],
    ),
]

EVENT_COLUMNS = (
    "id",
    "complaint_id",
    "seq",
    "type",
    "trigger",
    "from_state",
    "to_state",
    "actor_id",
    "actor_roles",
    "actor_department",
    "occurred_at",
    "payload",
    "ruleset",
    "schema_version",
    "prev_hash",
    "hash",
)
COMPLAINT_COLUMNS = (
    "id",
    "number",
    "scope",
    "seq",
    "ruleset",
    "state",
    "version",
    "severity",
    "severity_floor",
    "department",
    "handler",
    "received_at",
    "updated_at",
    "fields",
    "head_seq",
    "head_hash",
    "escalated_to",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sqlite_files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


# -- 1. templates through the engine ----------------------------------------------------------


def build_templates(db: Path, count: int) -> dict[str, Any]:
    """Run ``count`` complaints through the engine; returns facts about the run."""
    clock = SimulatedClock(START)
    engine = Engine.open(f"sqlite:///{db}", clock=clock)
    scheduler = Scheduler(engine, worker="bench")
    plan: list[tuple[datetime, int, int, Step | None]] = []
    for i in range(count):
        received = START + timedelta(minutes=47 * i)
        _, _, _, steps = PATHS[i % len(PATHS)]
        plan.append((received, i, -1, None))
        plan += [(received + timedelta(hours=s[0]), i, j, s) for j, s in enumerate(steps)]
    plan.sort(key=lambda p: (p[0], p[1], p[2]))
    numbers: dict[int, str] = {}
    started = time.perf_counter()
    actions = ticks = 0

    def catch_up(moment: datetime) -> None:
        nonlocal ticks
        while (due := engine.next_due()) is not None and due <= moment:
            clock.set(max(due, clock()))
            scheduler.tick()
            ticks += 1

    for moment, i, _, step in plan:
        catch_up(moment)
        clock.set(moment)
        _, extra, submitter, _ = PATHS[i % len(PATHS)]
        if step is None:
            numbers[i] = engine.submit({**FIELDS, **extra}, submitter).number
        elif step[1].startswith("extend:"):
            engine.extend_timer(
                numbers[i],
                step[1].split(":", 1)[1],
                step[2],
                int(step[3]["amount"]),
                Consent("张伟", moment, "phone", "客户同意延期"),
                reason="等待检测",
            )
        else:
            engine.fire(numbers[i], step[1], step[2], step[3])
        actions += 1
    end = plan[-1][0] + timedelta(minutes=1)
    catch_up(end)
    clock.set(end)
    elapsed = time.perf_counter() - started
    report = engine.verify(deep=True)
    engine.close()
    if not report.ok:
        raise SystemExit(f"template database does not verify: {report.findings[:5]}")
    return {
        "now": end.isoformat(),
        "templates": count,
        "actions": actions,
        "ticks": ticks,
        "events": report.events,
        "seconds": elapsed,
    }


# -- 2. clones --------------------------------------------------------------------------------


@dataclass
class Template:
    complaint: dict[str, Any]
    events: list[dict[str, Any]]
    moments: list[datetime]  # occurred_at of each event, aware


@dataclass
class Store:
    """The growing benchmark database: templates read once, clones appended in chunks."""

    path: Path
    templates: list[Template] = field(default_factory=list)
    complaints: int = 0
    events: int = 0
    next_id: int = 0
    next_event_id: int = 0

    def load_templates(self) -> None:
        conn = sqlite3.connect(self.path)
        conn.row_factory = sqlite3.Row
        for c in conn.execute("SELECT * FROM complaints ORDER BY id"):
            events = [
                dict(r)
                for r in conn.execute(
                    "SELECT * FROM events WHERE complaint_id = ? ORDER BY seq", (c["id"],)
                )
            ]
            moments = [datetime.fromisoformat(e["occurred_at"]).replace(tzinfo=UTC) for e in events]
            self.templates.append(Template(dict(c), events, moments))
        self.complaints = len(self.templates)
        self.events = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        self.next_id = int(conn.execute("SELECT max(id) FROM complaints").fetchone()[0]) + 1
        self.next_event_id = int(conn.execute("SELECT max(id) FROM events").fetchone()[0]) + 1
        conn.close()

    def clones(self, until_events: int) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """New complaints (row, event rows) until the database holds ``until_events``."""
        while self.events < until_events:
            template = self.templates[(self.complaints - len(self.templates)) % len(self.templates)]
            seq = self.complaints + 1
            number = f"TS-2026-{seq:06d}"
            old = template.complaint["number"]
            cid = self.next_id
            prev = GENESIS
            rows = []
            for ev, moment in zip(template.events, template.moments, strict=True):
                payload = ev["payload"]
                if ev["seq"] == 1:
                    payload = payload.replace(f'"number":"{old}"', f'"number":"{number}"')
                digest = event_hash(
                    number=number,
                    seq=ev["seq"],
                    type=ev["type"],
                    trigger=ev["trigger"],
                    from_state=ev["from_state"],
                    to_state=ev["to_state"],
                    actor_id=ev["actor_id"],
                    actor_roles=ev["actor_roles"],
                    actor_department=ev["actor_department"],
                    occurred_at=moment,
                    payload=payload,
                    ruleset=ev["ruleset"],
                    schema_version=ev["schema_version"],
                    prev_hash=prev,
                )
                rows.append(
                    {
                        **ev,
                        "id": self.next_event_id,
                        "complaint_id": cid,
                        "payload": payload,
                        "prev_hash": prev,
                        "hash": digest,
                    }
                )
                self.next_event_id += 1
                prev = digest
            complaint = {
                **template.complaint,
                "id": cid,
                "number": number,
                "seq": seq,
                "head_hash": prev,
            }
            self.next_id += 1
            self.complaints += 1
            self.events += len(rows)
            yield complaint, rows

    def grow(
        self,
        until_events: int,
        sinks: list[Callable[[list[Any], list[Any]], None]],
        chunk: int = 50_000,
    ) -> None:
        complaints: list[Any] = []
        events: list[Any] = []
        for complaint, rows in self.clones(until_events):
            complaints.append(complaint)
            events.extend(rows)
            if len(events) >= chunk:
                for sink in sinks:
                    sink(complaints, events)
                complaints, events = [], []
        if complaints:
            for sink in sinks:
                sink(complaints, events)


def sqlite_sink(path: Path) -> tuple[Callable[[list[Any], list[Any]], None], Callable[[], None]]:
    """Bulk inserts on a connection of their own, opened per chunk and closed again, so no
    writer is left open while the measuring processes read; ``finish`` checkpoints the
    WAL, refreshes the planner statistics and runs ``PRAGMA quick_check``."""
    c_sql = (
        f"INSERT INTO complaints ({', '.join(COMPLAINT_COLUMNS)}) VALUES "
        f"({', '.join(':' + c for c in COMPLAINT_COLUMNS)})"
    )
    e_sql = (
        f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES "
        f"({', '.join(':' + c for c in EVENT_COLUMNS)})"
    )

    def sink(complaints: list[Any], events: list[Any]) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(c_sql, complaints)
            conn.executemany(e_sql, events)
            top = complaints[-1]["seq"]
            conn.execute("UPDATE number_sequences SET value = ? WHERE scope = '2026'", (top,))
            conn.execute("COMMIT")
        finally:
            conn.close()

    def finish() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("ANALYZE")
            check = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
        if check != [("ok",)]:
            raise SystemExit(f"{path} is damaged (quick_check): {check[:5]}")

    return sink, finish


def _pg_time(text: Any) -> Any:
    return f"{text}+00" if isinstance(text, str) else text


def pg_sink(url: str) -> tuple[Callable[[list[Any], list[Any]], None], Callable[[], None]]:
    import psycopg
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    conn = psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        options=str(parsed.query.get("options", "")),
    )
    times_c = {"received_at", "updated_at"}

    def sink(complaints: list[Any], events: list[Any]) -> None:
        with conn.cursor() as cur:
            with cur.copy(f"COPY complaints ({', '.join(COMPLAINT_COLUMNS)}) FROM STDIN") as cp:
                for c in complaints:
                    cp.write_row(
                        [_pg_time(c[k]) if k in times_c else c[k] for k in COMPLAINT_COLUMNS]
                    )
            with cur.copy(f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as cp:
                for e in events:
                    cp.write_row(
                        [_pg_time(e[k]) if k == "occurred_at" else e[k] for k in EVENT_COLUMNS]
                    )
            cur.execute(
                "INSERT INTO number_sequences (scope, value) VALUES ('2026', %s) "
                "ON CONFLICT (scope) DO UPDATE SET value = excluded.value",
                (complaints[-1]["seq"],),
            )
        conn.commit()

    def finish() -> None:
        conn.autocommit = True
        with conn.cursor() as cur:
            for table in ("complaints", "events"):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            cur.execute("VACUUM ANALYZE complaints")
            cur.execute("VACUUM ANALYZE events")
        conn.autocommit = False

    return sink, finish


def copy_rows_to_pg(db: Path, url: str) -> None:
    """Every complaint and event row of the SQLite database (the templates as the engine
    wrote them, and the clones so far) into PostgreSQL."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    complaints = [dict(r) for r in conn.execute("SELECT * FROM complaints ORDER BY id")]
    events = [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY id")]
    conn.close()
    sink, _ = pg_sink(url)
    sink(complaints, events)


# -- 3. measurements (each in its own pinned subprocess) ---------------------------------------


def rss_mib() -> float:
    """The process's peak resident set so far (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """The largest resident set seen while the measured call runs (sampled every 20 ms):
    unlike ``ru_maxrss`` it is not hidden by a larger peak during start-up."""

    def __init__(self) -> None:
        self.peak = current_rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, current_rss_mib())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mib())
        return self.peak


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    kind: str, url: str, now: str, sample: int, trace: bool, profile: Path | None
) -> dict[str, Any]:
    """Runs in the child process."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    engine = Engine.open(url, clock=SimulatedClock(datetime.fromisoformat(now)))
    first = engine.find(limit=1).items  # warm: imports, connection, compiled rule set
    if first:
        engine.replay(first[0].number)
    out: dict[str, Any] = {
        "kind": kind,
        "rss_before_mib": current_rss_mib(),
        "maxrss_before_mib": rss_mib(),
    }
    sampler = RssSampler()
    sampler.start()
    if trace:
        tracemalloc.start()
    profiler = cProfile.Profile() if profile is not None else None
    wall, cpu = time.perf_counter(), cpu_seconds()
    if profiler is not None:
        profiler.enable()
    if kind in ("deep", "plain"):
        report = engine.verify(deep=kind == "deep")
        out.update(
            events=report.events,
            complaints=report.complaints,
            findings=len(report.findings),
            ok=report.ok,
            first_findings=[f.to_json() for f in report.findings[:3]],
        )
    elif kind == "floor":
        # what any verifier reading this storage format pays before checking anything:
        # read every event row, parse its payload, hash it (verify's own reader and hash)
        import sqlalchemy as sa

        from complaintflow.storage import db as storage_db
        from complaintflow.verify import _EventReader, stored_hash

        events = complaints = 0
        with storage_db.read(engine.database) as conn:
            top = conn.execute(sa.text("SELECT max(id) FROM complaints")).scalar_one()
            reader = _EventReader(conn)
            for first in range(1, top + 1, 500):
                for _, evs in reader.events(first, first + 499):
                    complaints += 1
                    events += len(evs)
                    for ev in evs:
                        stored_hash("TS-2026-000001", ev)
        out.update(events=events, complaints=complaints)
    elif kind == "replay":
        import sqlalchemy as sa

        from complaintflow.replay import replay_events

        with engine.database.connect() as conn:
            total = conn.execute(sa.text("SELECT count(*) FROM complaints")).scalar_one()
            step = max(total // sample, 1)
            numbers = [
                r[0] for r in conn.execute(sa.text("SELECT number FROM complaints ORDER BY id"))
            ][::step][:sample]
        wall, cpu = time.perf_counter(), cpu_seconds()
        events = 0
        for number in numbers:
            events += len(engine.replay(number).events)
        out.update(events=events, complaints=len(numbers))
        out["wall_seconds_replay"] = time.perf_counter() - wall
        out["cpu_seconds_replay"] = cpu_seconds() - cpu
        histories = [(n, engine.history(n)) for n in numbers[:500]]
        # the fold alone, in memory, on the first 500 histories
        fold_events = sum(len(h) for _, h in histories)
        fold_started = time.perf_counter()
        for _ in range(3):
            for number, history in histories:
                replay_events(number, history, None)
        out["fold_events_per_second"] = 3 * fold_events / (time.perf_counter() - fold_started)
    else:
        raise SystemExit(f"unknown measurement {kind}")
    if profiler is not None:
        profiler.disable()
    out["wall_seconds"] = out.pop("wall_seconds_replay", time.perf_counter() - wall)
    out["cpu_seconds"] = out.pop("cpu_seconds_replay", cpu_seconds() - cpu)
    out["events_per_second"] = out["events"] / out["wall_seconds"]
    out["events_per_cpu_second"] = out["events"] / max(out["cpu_seconds"], 1e-9)
    out["rss_peak_mib"] = sampler.stop()
    out["maxrss_mib"] = rss_mib()
    if trace:
        out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    if profiler is not None and profile is not None:
        profiler.dump_stats(str(profile))
    engine.close()
    return out


def run_child(
    kind: str,
    url: str,
    now: str,
    *,
    sample: int = 0,
    trace: bool = False,
    profile: Path | None = None,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--url",
        url,
        "--now",
        now,
        "--replay-sample",
        str(sample),
    ]
    if trace:
        cmd.append("--tracemalloc")
    if profile is not None:
        cmd += ["--profile-out", str(profile)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measurement {kind} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def top_functions(stats_file: Path, limit: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(stats_file), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    text = out.getvalue()
    start = text.find("   ncalls")
    return text[start:] if start >= 0 else text


def cumulative_functions(stats_file: Path, limit: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(stats_file), stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(limit)
    text = out.getvalue()
    start = text.find("   ncalls")
    return text[start:] if start >= 0 else text


# -- orchestration ----------------------------------------------------------------------------


@dataclass
class Checkpoint:
    backend: str
    events: int
    complaints: int
    size_mib: float
    load: str = ""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def pg_schema(base: str, name: str | None = None) -> tuple[str, Callable[[], None]]:
    """A fresh schema (``name``, replaced if it exists, or a random one) and its URL."""
    import sqlalchemy as sa

    schema = name or f"bench_replay_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    joiner = "&" if "?" in base else "?"
    url = f"{base}{joiner}options=-csearch_path%3D{schema}"

    def drop() -> None:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

    return url, drop


def pg_size_mib(url: str) -> float:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        size = conn.exec_driver_sql(
            "SELECT pg_total_relation_size('events') + pg_total_relation_size('complaints')"
        ).scalar_one()
    engine.dispose()
    return float(size) / 2**20


def build(args: argparse.Namespace, work: Path, drops: list[Callable[[], None]]) -> dict[str, Any]:
    """Every database measured: a SQLite snapshot per checkpoint (and one for the profile)
    and, with PostgreSQL, a schema per checkpoint holding the same rows. Returns the
    manifest (also written to ``work/manifest.json``)."""
    checkpoints = sorted(int(x) for x in args.checkpoints.split(","))
    backends = [b for b in args.backends.split(",") if b]
    db = work / "bench.db"
    log(f"templates: {args.templates} complaints through the engine in {work}")
    facts = build_templates(db, args.templates)
    log(
        f"templates: {facts['events']} events, {facts['actions']} actions, "
        f"{facts['ticks']} ticks in {facts['seconds']:.0f} s"
    )
    store = Store(db)
    store.load_templates()
    sink, finish = sqlite_sink(db)
    manifest: dict[str, Any] = {
        "facts": facts,
        "templates": args.templates,
        "backends": backends,
        "points": [],
        "profile": None,
    }
    targets = sorted(set(checkpoints) | ({args.profile_events} if args.profile else set()))
    for target in targets:
        log(f"growing to {target:,} events")
        started = time.perf_counter()
        store.grow(target, [sink])
        finish()
        snapshot = work / f"bench-{target}.db"
        shutil.copy(db, snapshot)
        log(
            f"{store.events:,} events, {store.complaints:,} complaints "
            f"(load {time.perf_counter() - started:.0f} s)"
        )
        if args.profile and target == args.profile_events:
            manifest["profile"] = str(snapshot)
        if target not in checkpoints:
            continue
        point: dict[str, Any] = {
            "target": target,
            "events": store.events,
            "complaints": store.complaints,
            "sqlite": str(snapshot),
            "postgresql": None,
        }
        if "postgresql" in backends:
            schema = f"bench_replay_ds_{target}" if args.datasets else None
            pg_url, drop = pg_schema(args.pg_url, schema)
            if not args.datasets:
                drops.append(drop)
            Engine.open(pg_url, clock=SimulatedClock(START)).close()  # schema + rule set
            copy_rows_to_pg(snapshot, pg_url)
            pg_sink(pg_url)[1]()
            point["postgresql"] = pg_url
            log(f"postgresql schema for {target:,} events loaded")
        manifest["points"].append(point)
    db.unlink()
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[Checkpoint], str | None]:
    backends = [b for b in args.backends.split(",") if b]
    if args.datasets:
        work = Path(args.datasets)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-replay-", dir=args.dir))
    drops: list[Callable[[], None]] = []
    results: list[Checkpoint] = []
    profile_text: str | None = None
    try:
        manifest_file = work / "manifest.json"
        if args.datasets and manifest_file.exists():
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
            log(f"reusing the databases in {work}")
            wanted = sorted(int(x) for x in args.checkpoints.split(","))
            have = [p["target"] for p in manifest["points"]]
            if have != wanted or not set(backends) <= set(manifest["backends"]):
                raise SystemExit(
                    f"{work} holds checkpoints {have} for {manifest['backends']}; "
                    f"asked for {wanted} on {backends} (use another --datasets directory)"
                )
            if args.profile and manifest["profile"] is None:
                raise SystemExit(f"{work} has no profile database (built without --profile)")
        else:
            manifest = build(args, work, drops)
        if args.build_only:
            return manifest["facts"], results, None
        facts = manifest["facts"]
        if args.profile:
            copy = Path(manifest["profile"])
            log(f"profile: verify(deep=True) under cProfile on {copy.name}")
            stats = work / "deep.prof"
            res = run_child("deep", f"sqlite:///{copy}", facts["now"], profile=stats)
            profile_text = (
                f"cProfile of `verify(deep=True)` on {res['events']:,} events "
                f"({res['complaints']:,} complaints), {res['wall_seconds']:.1f} s under the "
                f"profiler.\n\nBy own time:\n\n```\n{top_functions(stats)}```\n\n"
                f"By cumulative time:\n\n```\n{cumulative_functions(stats)}```\n"
            )
            log("profile: engine.replay under cProfile")
            stats = work / "replay.prof"
            res = run_child(
                "replay",
                f"sqlite:///{copy}",
                facts["now"],
                sample=args.replay_sample,
                profile=stats,
            )
            profile_text += (
                f"\ncProfile of `engine.replay(number)` for {res['complaints']:,} complaints "
                f"({res['events']:,} events) and the in-memory fold of 500 of them, "
                f"{res['wall_seconds']:.1f} s under the profiler, by cumulative time:\n\n"
                f"```\n{cumulative_functions(stats, 30)}```\n"
            )
            print(profile_text)
        for p in manifest["points"]:
            for backend in backends:
                if backend == "sqlite":
                    db = Path(p["sqlite"])
                    url = f"sqlite:///{db}"
                    size = sum(f.stat().st_size for f in sqlite_files(db)) / 2**20
                else:
                    url = str(p["postgresql"])
                    size = pg_size_mib(url)
                point = Checkpoint(backend, p["events"], p["complaints"], size, load_average())
                for kind in ("deep", "plain", "replay", "floor"):
                    log(f"{backend} {p['events']:,}: {kind}")
                    res = run_child(kind, url, facts["now"], sample=args.replay_sample)
                    point.results[kind] = res
                    log(
                        f"  {res['events']:,} events, {res['wall_seconds']:.1f} s wall, "
                        f"{res['cpu_seconds']:.1f} s CPU, {res['events_per_second']:,.0f} ev/s, "
                        f"peak RSS {res['rss_peak_mib']:.0f} MiB "
                        f"(before {res['rss_before_mib']:.0f}), load {load_average()}"
                        + (f", findings {res['findings']}" if "findings" in res else "")
                    )
                    if "findings" in res and not res["ok"]:
                        raise SystemExit(
                            f"the benchmark database does not verify: {res['first_findings']}"
                        )
                if args.tracemalloc and p["target"] <= args.tracemalloc_upto:
                    log(f"{backend} {p['events']:,}: deep under tracemalloc")
                    traced = run_child("deep", url, facts["now"], trace=True)
                    point.results["deep_traced"] = traced
                    log(
                        f"  tracemalloc peak {traced['tracemalloc_peak_mib']:.1f} MiB, "
                        f"{traced['wall_seconds']:.0f} s under tracemalloc"
                    )
                results.append(point)
                log(
                    "RESULT "
                    + json.dumps(
                        {
                            "backend": point.backend,
                            "events": point.events,
                            "complaints": point.complaints,
                            "size_mib": point.size_mib,
                            "load": load_average(),
                            **point.results,
                        }
                    )
                )
        return facts, results, profile_text
    except BaseException:
        args.keep = True  # leave the databases for a post-mortem
        raise
    finally:
        for drop in drops:
            drop()
        if args.datasets:
            pass
        elif args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def markdown(
    facts: dict[str, Any],
    results: list[Checkpoint],
    args: argparse.Namespace,
    load_before: str,
    load_after: str,
) -> str:
    lines = [
        f"Run {today()}: `python benchmarks/bench_replay.py {' '.join(sys.argv[1:])}`. "
        f"Load average (1/5/15 min) before → after: {load_before} → {load_after}.",
        "",
        f"Templates through the engine: {facts['templates']} complaints, "
        f"{facts['events']:,} events ({facts['actions']} engine calls, {facts['ticks']} "
        f"scheduler ticks) in {facts['seconds']:.0f} s; everything else cloned with re-hashed "
        "chains.",
        "",
        "| backend | events | complaints | DB MiB | deep verify ev/s (wall) | deep ev/CPU-s "
        "| deep wall s | plain verify ev/s | replay ev/s | fold ev/s "
        "| read+parse+hash ev/s | peak RSS MiB (before) deep / plain / replay "
        "| load 1/5/15 min (at the start) |"
        + (" tracemalloc peak MiB (deep) |" if args.tracemalloc else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
        + ("---:|" if args.tracemalloc else ""),
    ]
    for p in results:
        d, pl, r = p.results["deep"], p.results["plain"], p.results["replay"]
        fl = p.results["floor"]
        row = (
            f"| {p.backend} | {p.events:,} | {p.complaints:,} | {p.size_mib:,.0f} "
            f"| {d['events_per_second']:,.0f} | {d['events_per_cpu_second']:,.0f} "
            f"| {d['wall_seconds']:,.0f} | {pl['events_per_second']:,.0f} "
            f"| {r['events_per_second']:,.0f} | {r['fold_events_per_second']:,.0f} "
            f"| {fl['events_per_second']:,.0f} "
            f"| {d['rss_peak_mib']:.0f} ({d['rss_before_mib']:.0f}) / "
            f"{pl['rss_peak_mib']:.0f} ({pl['rss_before_mib']:.0f}) / "
            f"{r['rss_peak_mib']:.0f} ({r['rss_before_mib']:.0f}) | {p.load} |"
        )
        if args.tracemalloc:
            traced = p.results.get("deep_traced")
            row += f" {traced['tracemalloc_peak_mib']:.1f} |" if traced else " – |"
        lines.append(row)
    best = max((p.results["deep"]["events_per_second"] for p in results), default=0.0)
    lines += [
        "",
        f"Target: {TARGET:,.0f} events/s for deep verification; best measured "
        f"{best:,.0f} events/s ({best / TARGET:.1%} of the target).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="the largest checkpoint (default 1,000,000)"
    )
    parser.add_argument(
        "--checkpoints",
        default=None,
        help="comma-separated event counts (default: events/4, /2, events)",
    )
    parser.add_argument(
        "--templates",
        type=int,
        default=240,
        help="complaints run through the engine before cloning (default 240)",
    )
    parser.add_argument("--backends", default="sqlite", help="sqlite,postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument(
        "--replay-sample",
        type=int,
        default=2000,
        help="complaints replayed per checkpoint (default 2000)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="an extra deep-verify run per checkpoint under tracemalloc",
    )
    parser.add_argument(
        "--tracemalloc-upto",
        type=int,
        default=10**9,
        help="with --tracemalloc: only at checkpoints up to this many events",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile deep verification at --profile-events"
    )
    parser.add_argument("--profile-events", type=int, default=50_000)
    parser.add_argument("--dir", default=None, help="where the temporary directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument(
        "--datasets",
        default=None,
        help="build the databases here and keep them (PostgreSQL schemas "
        "bench_replay_ds_<events>); a later run with the same directory reuses them",
    )
    parser.add_argument(
        "--build-only", action="store_true", help="with --datasets: build, do not measure"
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks-replay.md")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--now", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = measure(
            args.child,
            args.url,
            args.now,
            args.replay_sample,
            args.tracemalloc,
            Path(args.profile_out) if args.profile_out else None,
        )
        print(json.dumps(result))
        return 0
    if args.checkpoints is None:
        args.checkpoints = f"{args.events // 4},{args.events // 2},{args.events}"
    load_before = load_average()
    facts, results, profile_text = run(args)
    if args.build_only:
        return 0
    load_after = load_average()
    table = markdown(facts, results, args, load_before, load_after)
    print()
    print(table)
    if args.write:
        write_section("replay-environment", environment_markdown(environment(args.pg_url)), doc=DOC)
        write_section("replay-results", table, doc=DOC)
        if profile_text is not None:
            write_section("replay-profile", profile_text, doc=DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
