"""The scheduler: fires every due warning and breach exactly once, from any number of
processes on one database.

The database is the source of truth. Each process runs its own APScheduler 3.x
``BackgroundScheduler`` (in-memory job store, ONE interval job, coalesce, max_instances=1);
job stores are never shared between processes. A tick claims due deadlines in batches
(``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite) and, in
ONE transaction per batch, marks each one fired, applies its actions, appends the history
events and writes the notifications to the outbox. A process killed mid-batch loses its
transaction, and the rows return to the pool for the others. On PostgreSQL a process fires
its batches on ``threads`` worker threads (one connection each), concurrent workers in the
same sense as processes, so that one batch's Python work overlaps another's database time.

Order: within one complaint, deadlines fire in due order. Across complaints, each batch is
taken in due order, but parallel processes interleave their batches.
"""

from __future__ import annotations

import calendar as _calendar
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from complaintflow import arguments, sla
from complaintflow.actor import Actor
from complaintflow.compiled import Compiled
from complaintflow.engine import CommittedEvent, Engine, build_event, insert_ignore
from complaintflow.errors import FieldProblem, InvalidInput, TransitionRefused
from complaintflow.rules.model import ReviewDef
from complaintflow.rules.ruleset import raise_level
from complaintflow.states.conditions import Scope
from complaintflow.storage import db
from complaintflow.storage.hashing import canonical, iso
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import deadlines as D
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import outbox as O
from complaintflow.storage.tables import review_runs as RR
from complaintflow.storage.tables import timers as T
from complaintflow.timers import SCHEDULER, CompiledTimer, Ledger, recorded_actions

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_THREADS", "SYSTEM", "BatchReport", "Scheduler",
           "TickReport"]

log = logging.getLogger("complaintflow.scheduler")

SYSTEM = Actor(SCHEDULER, ())

#: Deadlines per batch (one transaction). Measured on PostgreSQL, 100k complaints (see
#: docs/benchmarks-scheduler.md): one process drains fastest at 2,000 (500: ~4,300/s, 1,000:
#: ~4,800/s, 2,000: ~5,650/s). A batch holds its complaints' row locks (on SQLite the write
#: lock) for its duration, about 0.35 s at this size.
DEFAULT_BATCH_SIZE = 2000

#: Worker threads per scheduler process on PostgreSQL, each with its own connection: while
#: one batch waits for the database (psycopg releases the GIL), another computes its events.
#: Measured at 1,000,000 complaints (docs/benchmarks-scheduler.md). On SQLite a batch holds
#: the database's write lock, so one thread fires there whatever this says.
DEFAULT_THREADS = 2

#: A review notification lists at most this many numbers (oldest first); the counts are
#: always complete (``unresolved_count``, ``by_state``).
REVIEW_NUMBERS_LISTED = 1000


@dataclass
class BatchReport:
    fired: int = 0
    warnings: int = 0
    breaches: int = 0
    max_lateness: timedelta = timedelta(0)
    events: list[CommittedEvent] = field(default_factory=list)
    #: a breach moved or started clocks (a raised severity, a transition fired): their
    #: deadlines may be due already, and the tick takes another batch for them
    changed_clocks: bool = False


@dataclass
class TickReport:
    fired: int = 0
    warnings: int = 0
    breaches: int = 0
    batches: int = 0
    max_lateness: timedelta = timedelta(0)
    reviews: int = 0
    delivered: int = 0
    next_due: datetime | None = None

    def add(self, batch: BatchReport) -> None:
        self.fired += batch.fired
        self.warnings += batch.warnings
        self.breaches += batch.breaches
        self.batches += 1
        self.max_lateness = max(self.max_lateness, batch.max_lateness)


# -- the statements of a batch, built once (SQLAlchemy caches their compiled form) -----------
#
# Two sets with the same parameters. SQLite: expanding IN lists and executemany (in-process,
# cheap). PostgreSQL: arrays of ids, and each bulk write is ONE statement reading its rows
# from ONE JSON parameter (``json_to_recordset``), so that every statement has one constant
# text (prepared by psycopg after a few batches). Measured at 1,000 rows a batch: a pipelined
# executemany costs ~40 us of client time per row, and psycopg's text-array dumper escapes
# every string with a regex (~300 us per event); one JSON text costs a few us per row, and
# orjson writes it ~10 times faster than ``json.dumps`` (37 ms -> 3.4 ms for 2,000 events).


def _ids(name: str, column: sa.Column[Any], postgres: bool) -> Any:
    # NOT an array literal in a text parameter cast to bigint[] (cheaper to send): in a
    # generic plan the cast is not a constant, and in a filter it parses the whole text
    # again for every row (0.8 s per statement at 2,000 ids, measured)
    if postgres:
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(sa.bindparam(name, expanding=True))


def _raw(column: sa.Column[Any], postgres: bool) -> Any:
    """On PostgreSQL a timestamp column read as the driver returns it (aware, in the
    session's time zone: compared and converted as instants), without the per-value call
    of ``UTCDateTime``; SQLite needs that call (it stores naive UTC)."""
    if postgres:
        return sa.type_coerce(column, sa.DateTime(timezone=True)).label(column.name)
    return column


def _recordset(table: sa.Table, columns: dict[str, str]) -> Any:
    """``json_to_recordset(:rows) AS v(...)``: field -> the table column it is typed like."""
    return sa.func.json_to_recordset(sa.cast(sa.bindparam("rows", type_=sa.Text),
                                             postgresql.JSON)).table_valued(
        *[sa.column(name, table.c[column].type) for name, column in columns.items()]
    ).render_derived(name="v", with_types=True)


def _rows_json(rows: list[dict[str, Any]]) -> dict[str, str]:
    # aware datetimes become RFC 3339 text, which PostgreSQL reads as timestamptz
    return {"rows": orjson.dumps(rows).decode()}


_EVENT_COLUMNS = [c.name for c in E.c if c.name != "id"]
_OUTBOX_COLUMNS = ["key", "complaint_id", "number", "event_seq", "kind", "recipients", "payload",
                   "created_at", "attempts"]


@dataclass(frozen=True)
class _Statements:
    claim: Any
    complaints: Any  # locked in id order on PostgreSQL: no deadlock between workers
    earliest: Any  # per complaint, its earliest pending deadline outside the batch
    timers: Any  # the batch's timer rows, and every running clock of its complaints
    scope_rows: Any
    mark_fired: Any
    insert_events: Any
    insert_outbox: Any
    advance_heads: Any  # only what a timer event changes: the fire path owns the rest
    count_timers: Any

    @classmethod
    def build(cls, postgres: bool) -> _Statements:
        claim = (sa.select(D.c.id, D.c.timer_id, D.c.complaint_id, D.c.kind, D.c.idx,
                           _raw(D.c.due_at, postgres))
                 .where(D.c.fired_at.is_(None), D.c.due_at <= sa.bindparam("now"))
                 .order_by(D.c.due_at, D.c.id).limit(sa.bindparam("size")))
        complaints = (sa.select(C.c.id, C.c.number, C.c.ruleset, C.c.state, C.c.version,
                                C.c.severity, C.c.severity_floor, C.c.head_hash,
                                C.c.escalated_to)
                      .where(_ids("ids", C.c.id, postgres)).order_by(C.c.id))
        earliest = (sa.select(D.c.complaint_id, sa.func.min(_raw(D.c.due_at, postgres)))
                    .where(_ids("ids", D.c.complaint_id, postgres), D.c.fired_at.is_(None),
                           sa.not_(_ids("mine", D.c.id, postgres)))
                    .group_by(D.c.complaint_id))
        timers = (sa.select(T.c.id, T.c.complaint_id, T.c.timer, T.c.run, T.c.provisional,
                            T.c.status, T.c.ledger, _raw(T.c.breached_at, postgres))
                  .where(_ids("complaints", T.c.complaint_id, postgres),
                         sa.or_(_ids("ids", T.c.id, postgres), T.c.status != "stopped")))
        scope_rows = (sa.select(C.c.id, C.c.fields, C.c.received_at, C.c.version, C.c.facts)
                      .where(_ids("ids", C.c.id, postgres)))
        mark_fired = (sa.update(D).where(_ids("ids", D.c.id, postgres))
                      .values(fired_at=sa.bindparam("now", type_=D.c.fired_at.type),
                              fired_by=sa.bindparam("worker")))
        now = sa.bindparam("now", type_=C.c.updated_at.type)
        if not postgres:
            return cls(
                claim, complaints, earliest, timers, scope_rows, mark_fired,
                sa.insert(E), sa.insert(O),
                sa.update(C).where(C.c.id == sa.bindparam("b_id")).values(
                    version=sa.bindparam("b_version"), head_seq=sa.bindparam("b_version"),
                    head_hash=sa.bindparam("b_hash"), severity=sa.bindparam("b_severity"),
                    severity_floor=sa.bindparam("b_floor"),
                    escalated_to=sa.bindparam("b_escalated"), updated_at=now),
                sa.update(T).where(T.c.id == sa.bindparam("b_id")).values(
                    warned=T.c.warned + sa.bindparam("b_warned"),
                    breached_at=sa.func.coalesce(
                        sa.bindparam("b_breached", type_=T.c.breached_at.type),
                        T.c.breached_at)))
        rows = _recordset(E, {c: c for c in _EVENT_COLUMNS})
        insert_events = sa.insert(E).from_select(_EVENT_COLUMNS, sa.select(*rows.c))
        # the payload is the event's, already sent once: taken from the row just inserted
        rows = _recordset(O, {c: c for c in _OUTBOX_COLUMNS if c != "payload"})
        insert_outbox = sa.insert(O).from_select(_OUTBOX_COLUMNS, sa.select(
            *[E.c.payload if c == "payload" else rows.c[c] for c in _OUTBOX_COLUMNS]
        ).join_from(rows, E, sa.and_(E.c.complaint_id == rows.c.complaint_id,
                                     E.c.seq == rows.c.event_seq)))
        v = _recordset(C, {"b_id": "id", "b_version": "version", "b_hash": "head_hash",
                        "b_severity": "severity", "b_floor": "severity_floor",
                        "b_escalated": "escalated_to"})
        advance_heads = sa.update(C).where(C.c.id == v.c.b_id).values(
            version=v.c.b_version, head_seq=v.c.b_version, head_hash=v.c.b_hash,
            severity=v.c.b_severity, severity_floor=v.c.b_floor,
            escalated_to=v.c.b_escalated, updated_at=now)
        v = _recordset(T, {"b_id": "id", "b_warned": "warned", "b_breached": "breached_at"})
        count_timers = sa.update(T).where(T.c.id == v.c.b_id).values(
            warned=T.c.warned + v.c.b_warned,
            breached_at=sa.func.coalesce(v.c.b_breached, T.c.breached_at))
        return cls(claim.with_for_update(skip_locked=True), complaints.with_for_update(),
                   earliest, timers, scope_rows, mark_fired, insert_events,
                   insert_outbox, advance_heads, count_timers)


_GENERIC = _Statements.build(postgres=False)
_POSTGRES = _Statements.build(postgres=True)
_NEXT_DUE = sa.select(sa.func.min(D.c.due_at)).where(D.c.fired_at.is_(None))


class _Head:
    """A locked complaint row as a batch advances it (only what a timer event changes)."""

    __slots__ = ("compiled", "escalated_to", "hash", "id", "number", "ruleset", "severity",
                 "severity_floor", "state", "version")
    id: int
    number: str
    ruleset: str
    state: str
    version: int
    severity: str
    severity_floor: str | None
    hash: str
    escalated_to: str | None

    def __init__(self, row: Any, compiled: Compiled) -> None:
        # the columns of the statements' ``complaints`` query, in order
        (self.id, self.number, self.ruleset, self.state, self.version, self.severity,
         self.severity_floor, self.hash, self.escalated_to) = row
        self.compiled = compiled


class Scheduler:
    """Fires due deadlines for one engine. Use ``tick()`` directly (tests, simulations) or
    ``start()``/``stop()`` for the background loop. ``threads``: batches fired at once by a
    busy tick on PostgreSQL, each on its own pooled connection (SQLite: always one)."""

    def __init__(
        self,
        engine: Engine,
        *,
        worker: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int = DEFAULT_THREADS,
        max_batches_per_tick: int = 10_000,
        min_interval: float = 0.2,
        max_interval: float = 30.0,
    ) -> None:
        problems = [p for p in (
            arguments.integer("batch_size", batch_size, 1, 100_000),
            arguments.integer("threads", threads, 1, 256),
            arguments.integer("max_batches_per_tick", max_batches_per_tick, 1, 10**9)) if p]
        for name, seconds in (("min_interval", min_interval), ("max_interval", max_interval)):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                    or not 0 < seconds <= 86_400:
                problems.append(FieldProblem(name, "seconds, above 0 and at most 86400"))
        if not problems and min_interval > max_interval:
            problems.append(FieldProblem("min_interval", "at most max_interval"))
        problem = arguments.text("worker", worker, "a worker name", max_length=200,
                                 optional=True)
        if problem is not None:
            problems.append(problem)
        if problems:
            raise InvalidInput(problems, context="scheduler")
        self.engine = engine
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.batch_size = batch_size
        self.threads = threads
        self.max_batches_per_tick = max_batches_per_tick
        self.min_interval = min_interval
        self.max_interval = max_interval
        self._apscheduler: Any = None
        self._stopped = threading.Event()
        self._reviewed: dict[str, str] = {}  # review id -> the latest period known recorded
        self._notify_lock = threading.Lock()  # sinks never see two batches at once
        self.on_tick: Callable[[TickReport], None] | None = None

    # -- one batch ------------------------------------------------------------------------

    def fire_batch(self, now: datetime) -> BatchReport:
        """Claim and fire up to ``batch_size`` due deadlines in ONE transaction.

        Set-based: one claim, three reads (the complaints, locked in id order; their earliest
        pending deadline outside the batch; their timer rows), events and hashes computed
        here, then one bulk write per table (deadlines, events, complaint heads, timers,
        outbox). Only a complaint whose raised severity really changes a clock, or whose
        breach fires a transition, takes a path of its own. ``now``: an aware datetime."""
        arguments.refuse([arguments.moment("now", now)], context="scheduler")
        engine = self.engine
        report = BatchReport()
        with db.write(engine.database) as conn:
            postgres = conn.dialect.name == "postgresql"
            st = _POSTGRES if postgres else _GENERIC
            claimed = conn.execute(st.claim, {"now": now, "size": self.batch_size}).all()
            if not claimed:
                return report
            ids = sorted({d.complaint_id for d in claimed})
            versions: dict[str, Compiled] = {}
            heads: dict[int, _Head] = {}
            for crow in conn.execute(st.complaints, {"ids": ids}).all():
                compiled = versions.get(crow.ruleset)
                if compiled is None:
                    compiled = versions[crow.ruleset] = engine.compiled(conn, crow.ruleset)
                heads[crow.id] = _Head(crow, compiled)
            # Due order within a complaint: a claimed deadline waits while an earlier one
            # of the same complaint is pending outside this batch (held by another worker).
            earliest: dict[int, datetime] = dict(conn.execute(
                st.earliest, {"ids": ids, "mine": [d.id for d in claimed]}).all())
            if earliest:
                claimed = [d for d in claimed if d.complaint_id not in earliest
                           or d.due_at <= earliest[d.complaint_id]]
                if not claimed:
                    return report
            claimed_timers = {d.timer_id for d in claimed}
            clocks = conn.execute(st.timers, {"complaints": sorted({d.complaint_id
                                                                    for d in claimed}),
                                              "ids": sorted(claimed_timers)}).all()
            timers = {r.id: r for r in clocks if r.id in claimed_timers}
            events: list[dict[str, Any]] = []
            notes: list[dict[str, Any]] = []  # without the payload: the event's
            note_events: list[int] = []  # index in ``events`` of each note's event
            warned: dict[int, int] = {}
            breached: set[int] = set()
            touched: dict[int, _Head] = {}
            raised: dict[int, _Head] = {}
            fires: list[tuple[int, str, str]] = []
            recipients: dict[tuple[str, ...], str] = {}
            committed = report.events
            for d in claimed:
                comp = heads[d.complaint_id]
                trow = timers[d.timer_id]
                ctimer = comp.compiled.timers.by_id.get(trow.timer)
                lateness = now - d.due_at if d.due_at < now else timedelta(0)
                actions = recorded_actions(ctimer, d.kind, d.idx)
                notify: tuple[str, ...] = tuple(actions.get("notify", ()))
                if d.kind == "warning":
                    kind = "timer_warning"
                    warned[trow.id] = warned.get(trow.id, 0) + 1
                    report.warnings += 1
                else:
                    kind = "timer_breached"
                    warned.setdefault(trow.id, 0)
                    breached.add(trow.id)
                    report.breaches += 1
                    level = actions.get("raise_severity")
                    if level is not None:
                        levels = comp.compiled.rules.severity_levels
                        before = comp.severity
                        comp.severity_floor = raise_level(levels, comp.severity_floor, level)
                        comp.severity = raise_level(levels, comp.severity, level)
                        if comp.severity != before:
                            raised[comp.id] = comp
                    if "reassign" in actions:
                        comp.escalated_to = actions["reassign"]
                    if "fire" in actions:
                        fires.append((comp.id, actions["fire"], trow.timer))
                seq = comp.version + 1
                payload = {
                    "timer": trow.timer, "run": trow.run, "kind": d.kind, "index": d.idx,
                    "due_at": iso(d.due_at), "lateness_seconds": lateness.total_seconds(),
                    "provisional": trow.provisional, "actions": actions,
                    "severity": comp.severity,
                }
                event_row, view = build_event(
                    complaint_id=comp.id, number=comp.number, seq=seq, prev_hash=comp.hash,
                    type=kind, trigger=None, from_state=comp.state, to_state=comp.state,
                    actor=SYSTEM, now=now, payload=payload, ruleset=comp.ruleset)
                events.append(event_row)
                committed.append(CommittedEvent(view, None))
                comp.version = seq
                comp.hash = view.hash
                touched[comp.id] = comp
                if notify:
                    text = recipients.get(notify)
                    if text is None:
                        text = recipients[notify] = canonical(list(notify))
                    notes.append({
                        "key": f"{comp.number}:{seq}:{kind}", "complaint_id": comp.id,
                        "number": comp.number, "event_seq": seq, "kind": kind,
                        "recipients": text, "created_at": now, "attempts": 0,
                    })
                    note_events.append(len(events) - 1)
                if lateness > report.max_lateness:
                    report.max_lateness = lateness
            report.fired = len(claimed)
            conn.execute(st.mark_fired, {"ids": [d.id for d in claimed], "now": now,
                                         "worker": self.worker[:200]})
            heads_rows = [{"b_id": c.id, "b_version": c.version, "b_hash": c.hash,
                           "b_severity": c.severity, "b_floor": c.severity_floor,
                           "b_escalated": c.escalated_to} for c in touched.values()]
            timer_rows = [{"b_id": tid, "b_warned": n,
                           "b_breached": now if tid in breached else None}
                          for tid, n in warned.items()]
            if postgres:
                conn.execute(st.insert_events, _rows_json(events))
                conn.execute(st.advance_heads, {**_rows_json(heads_rows), "now": now})
                conn.execute(st.count_timers, _rows_json(timer_rows))
                if notes:
                    conn.execute(st.insert_outbox, _rows_json(notes))
            else:
                conn.execute(st.insert_events, events)
                conn.execute(st.advance_heads, [{**r, "now": now} for r in heads_rows])
                conn.execute(st.count_timers, timer_rows)
                if notes:
                    conn.execute(st.insert_outbox, [
                        {**note, "payload": events[i]["payload"]}  # canonical(payload)
                        for note, i in zip(notes, note_events, strict=True)])
            sensitive = [c for c in raised.values() if c.compiled.timers.severity_sensitive]
            rederive = self._clocks_to_rederive(conn, st, sensitive, clocks, breached, now) \
                if sensitive else []
            # and those in a state where a clock starts on the raised severity
            chosen = {c.id for c in rederive}
            rederive += [c for c in raised.values() if c.id not in chosen
                         and sla.severity_starters(c.compiled, c.state)]
            for comp in rederive:
                rederived = self._rederive(conn, comp.id, now)
                report.changed_clocks |= bool(rederived)
                committed.extend(rederived)
            for complaint_id, trigger, timer_name in fires:
                committed.extend(self._fire_action(conn, complaint_id, trigger, timer_name,
                                                   now))
            report.changed_clocks |= bool(fires)
        return report

    def _clocks_to_rederive(self, conn: Connection, st: _Statements, raised: list[_Head],
                            clocks: Sequence[Any], breached: set[int],
                            now: datetime) -> list[_Head]:
        """The complaints among ``raised`` for which ``sla.on_event`` with the raised
        severity would change a clock: a pause out of step with the state, or a clock not
        yet breached (``breached``: by this batch) whose budget (a variant) now differs.
        ``clocks``: the running clocks as read at the start of the batch (which changed
        only their breach and warning counts since). One more read, only if some clock is
        not breached; the others need nothing."""
        by_id = {c.id: c for c in raised}
        out: dict[int, _Head] = {}
        budgets: list[tuple[_Head, CompiledTimer, Ledger]] = []
        for row in clocks:
            comp = by_id.get(row.complaint_id)
            if comp is None or row.status == "stopped" or comp.id in out:
                continue
            timer = comp.compiled.timers.by_id.get(row.timer)
            if timer is None:
                continue
            paused = False
            if '"pauses":[]' not in row.ledger:  # no pause ever: cannot be paused
                ledger = Ledger.from_text(row.ledger)
                paused = ledger.paused
            if (comp.state in timer.definition.pause) != paused:
                out[comp.id] = comp
            elif row.breached_at is None and row.id not in breached:
                budgets.append((comp, timer, Ledger.from_text(row.ledger)))
        budgets = [b for b in budgets if b[0].id not in out]
        if budgets:
            scopes: dict[int, Scope] = {}
            for row in conn.execute(st.scope_rows,
                                    {"ids": sorted({b[0].id for b in budgets})}).all():
                comp = by_id[row.id]
                compiled = comp.compiled
                fields = {**compiled.codec.decode(row.fields),
                          **compiled.builtins(comp.number, row.received_at),
                          "severity": comp.severity, "state": comp.state}
                scopes[row.id] = compiled.scope(fields, SYSTEM, self.engine.facts_of(conn, row),
                                                now)
            for comp, timer, ledger in budgets:
                if timer.budget_for(scopes[comp.id]) != (ledger.unit, ledger.amount):
                    out[comp.id] = comp
        return [c for c in raised if c.id in out]

    def _rederive(self, conn: Connection, complaint_id: int,
                  now: datetime) -> list[CommittedEvent]:
        """A breach raised the severity: clocks whose budget depends on it are re-derived,
        recorded in one ``timers_rederived`` event."""
        engine = self.engine
        row = conn.execute(sa.select(C).where(C.c.id == complaint_id)).one()
        compiled = engine.compiled(conn, row.ruleset)
        fields = {**compiled.codec.decode(row.fields),
                  **compiled.builtins(row.number, row.received_at),
                  "severity": row.severity, "state": row.state}
        changes = sla.on_event(
            conn, compiled, engine.calendar_lookup(conn), row.id, kind="severity",
            trigger=None, from_state=row.state, to_state=row.state,
            scope=compiled.scope(fields, SYSTEM, engine.facts_of(conn, row), now), now=now)
        if not changes:
            return []
        event = engine.append_event(conn, row, type="timers_rederived", actor=SYSTEM, now=now,
                                    payload={"timers": sla.summarise(changes),
                                             "reason": "severity raised"})
        return [CommittedEvent(event, None)]

    def _fire_action(self, conn: Connection, complaint_id: int, trigger: str, timer: str,
                     now: datetime) -> list[CommittedEvent]:
        """A breach action that fires a transition as the system, in the same transaction."""
        engine = self.engine
        row = conn.execute(sa.select(C).where(C.c.id == complaint_id)).one()
        compiled = engine.compiled(conn, row.ruleset)
        roles = tuple(sorted({r for t in compiled.rules.transitions_by_trigger.get(trigger, ())
                              for r in t.roles}))
        actor = Actor(SCHEDULER, roles)
        try:
            savepoint = conn.begin_nested()
            event, complaint = engine.transition(conn, row, trigger, actor, {}, now,
                                                 comment=f"breach action of timer {timer}")
            savepoint.commit()
            return [CommittedEvent(event, complaint)]
        except TransitionRefused as exc:
            savepoint.rollback()
            row = conn.execute(sa.select(C).where(C.c.id == complaint_id)).one()
            event = engine.append_event(conn, row, type="timer_action_refused", actor=SYSTEM,
                                        now=now, payload={"timer": timer, "trigger": trigger,
                                                          "check": exc.check,
                                                          "reason": exc.reason})
            return [CommittedEvent(event, None)]

    # -- periodic reviews -----------------------------------------------------------------

    def _review_due(self, review: ReviewDef, now: datetime) -> tuple[str, datetime] | None:
        compiled = self.engine.compiled_current()
        name = review.calendar or compiled.rules.definition.calendar
        cal = compiled.calendars.get(name or "")
        if cal is None:
            return None
        local = cal.to_local(now)
        hour, minute = (int(x) for x in review.at.split(":"))
        year, month = local.year, local.month
        scheduled = datetime.combine(
            local.date().replace(day=min(review.day_of_month,
                                         _calendar.monthrange(year, month)[1])),
            time(hour, minute), tzinfo=cal.zone)
        if local < scheduled:
            month -= 1
            if month == 0:
                year, month = year - 1, 12
            scheduled = scheduled.replace(year=year, month=month)
        return f"{year:04d}-{month:02d}", scheduled

    def run_reviews(self, now: datetime) -> int:
        """Fire each periodic review once per period (the latest missed one on catch-up).

        A period once recorded stays recorded, so each process remembers the latest one it
        saw and asks the database again only when a new period begins. ``now``: an aware
        datetime."""
        arguments.refuse([arguments.moment("now", now)], context="scheduler")
        fired = 0
        rules = self.engine.rules
        for review in rules.definition.reviews:
            due = self._review_due(review, now)
            if due is None:
                continue
            period, scheduled = due
            if self._reviewed.get(review.id) == period:
                continue
            with db.write(self.engine.database) as conn:
                exists = conn.execute(sa.select(RR.c.period).where(
                    RR.c.review == review.id, RR.c.period == period)).first()
                if exists is not None:
                    self._reviewed[review.id] = period
                    continue
                older = conn.execute(sa.select(C.c.id).where(C.c.received_at < scheduled)
                                     .limit(1)).first()
                if older is None:
                    continue  # nothing existed yet when this review was due
                listed = sa.and_(C.c.state.in_(review.states))
                counts: dict[str, int] = {
                    state: n for state, n in conn.execute(
                        sa.select(C.c.state, sa.func.count()).where(listed)
                        .group_by(C.c.state))}
                total = sum(counts.values())
                numbers = list(conn.execute(
                    sa.select(C.c.number).where(listed).order_by(C.c.id)
                    .limit(REVIEW_NUMBERS_LISTED)).scalars())
                insert_ignore(conn, RR, {"review": review.id, "period": period,
                                         "fired_at": now, "fired_by": self.worker[:200],
                                         "complaints": total})
                payload: dict[str, Any] = {
                    "review": review.id, "period": period, "scheduled_at": iso(scheduled),
                    "lateness_seconds": max((now - scheduled).total_seconds(), 0.0),
                    "unresolved": numbers, "unresolved_count": total,
                    "by_state": {s: counts.get(s, 0) for s in review.states}}
                insert_ignore(conn, O, {
                    "key": f"review:{review.id}:{period}", "complaint_id": None,
                    "number": None, "event_seq": None, "kind": "review",
                    "recipients": canonical(list(review.notify)), "payload": canonical(payload),
                    "created_at": now, "attempts": 0,
                })
                fired += 1
            self._reviewed[review.id] = period
        return fired

    # -- ticks ----------------------------------------------------------------------------

    def next_due(self) -> datetime | None:
        """The earliest pending deadline: ONE statement, on PostgreSQL outside any
        transaction (no BEGIN/COMMIT round trips), so an idle tick costs one round trip."""
        database = self.engine.database
        with db.translate_errors():
            if database.dialect.name == "postgresql":
                with database.connect() as base:
                    conn = base.execution_options(isolation_level="AUTOCOMMIT")
                    found: datetime | None = conn.execute(_NEXT_DUE).scalar()
                    return found
            with db.read(database) as conn:
                found = conn.execute(_NEXT_DUE).scalar()
                return found

    def tick(self) -> TickReport:
        """Fire everything due now (in batches), run due reviews, feed the sinks.

        With nothing due this is one round trip: the earliest pending deadline (also the
        report's ``next_due``); reviews touch the database only when a new period begins."""
        now = self.engine.now()
        report = TickReport()
        report.next_due = self.next_due()
        busy = report.next_due is not None and report.next_due <= now
        if busy:
            self._fire_due(now, report)
        report.reviews = self.run_reviews(now)
        report.delivered = self.engine.outbox.deliver()
        if busy or report.delivered:  # fired rows, and sinks, may have moved the next due
            report.next_due = self.next_due()
        return report

    def _fire_due(self, now: datetime, report: TickReport) -> None:
        """Batches until one comes back short, on ``threads`` threads (PostgreSQL), each
        with its own connection and transactions. Threads are concurrent workers like
        processes: the claim skips rows another batch holds, and due order within a
        complaint is kept by ``fire_batch`` (it locks the complaint, then defers a deadline
        while an earlier one of it is pending elsewhere)."""
        threads = self.threads if self.engine.database.dialect.name == "postgresql" else 1
        lock = threading.Lock()
        budget = [self.max_batches_per_tick]

        def work() -> None:
            while True:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                batch = self.fire_batch(now)
                if batch.fired == 0:
                    return
                with lock:
                    report.add(batch)
                with self._notify_lock:
                    self.engine.notify(batch.events)
                if batch.fired < self.batch_size and not batch.changed_clocks:
                    return

        if threads == 1:
            work()
            return
        with ThreadPoolExecutor(threads, thread_name_prefix="complaintflow-batch") as pool:
            futures = [pool.submit(work) for _ in range(threads)]
        for future in futures:
            future.result()  # the first failure, after every thread has stopped

    def next_interval(self, report: TickReport) -> float:
        """Seconds until the next tick: sooner when the next deadline is close."""
        if report.batches and report.fired >= self.batch_size:
            return self.min_interval
        if report.next_due is None:
            return self.max_interval
        wait = (report.next_due - self.engine.now()).total_seconds()
        return min(self.max_interval, max(self.min_interval, wait))

    def _job(self) -> None:
        try:
            report = self.tick()
        except Exception:
            log.exception("tick failed; retrying at the next interval")
            interval = self.max_interval
        else:
            if report.fired or report.reviews:
                log.info("fired %d (warnings %d, breaches %d, max lateness %s), reviews %d",
                         report.fired, report.warnings, report.breaches, report.max_lateness,
                         report.reviews)
            interval = self.next_interval(report)
            if self.on_tick is not None:
                self.on_tick(report)
        if self._apscheduler is not None and not self._stopped.is_set():
            self._apscheduler.reschedule_job("tick", trigger="interval", seconds=interval)

    def start(self) -> None:
        """Run ticks in the background (APScheduler, one interval job, in-memory store)."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        self._stopped.clear()
        scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
        )
        scheduler.add_job(self._job, "interval", seconds=self.min_interval, id="tick",
                          coalesce=True, max_instances=1)
        self._apscheduler = scheduler
        scheduler.start()

    def stop(self, wait: bool = True) -> None:
        """Stop the background loop; with ``wait``, after the running tick ends."""
        arguments.refuse([arguments.flag("wait", wait)], context="scheduler")
        self._stopped.set()
        if self._apscheduler is not None:
            self._apscheduler.shutdown(wait=wait)
            self._apscheduler = None

    def run(self, stop: threading.Event) -> None:
        """Run in the background until ``stop`` is set (the CLI sets it on SIGTERM/SIGINT)."""
        # any event with wait() and is_set(): threading's, multiprocessing's
        if not (callable(getattr(stop, "wait", None)) and callable(getattr(stop, "is_set", None))):
            raise InvalidInput([FieldProblem(
                "stop", "an event with wait() and is_set() (threading.Event, "
                        "multiprocessing.Event)")], context="scheduler")
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()
