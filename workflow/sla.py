"""Timer bookkeeping inside the caller's transaction: start, stop, pause, resume, re-derive.

Called by the engine for every event it appends, so a state change, its timer changes and
their pending deadlines always commit together.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from complaintflow.compiled import Compiled
from complaintflow.states.conditions import Scope, fields_read
from complaintflow.storage import db
from complaintflow.storage.hashing import iso
from complaintflow.storage.tables import deadlines as D
from complaintflow.storage.tables import timers as T
from complaintflow.timers import CompiledTimer, Due, Ledger, TimerSet, timer_payload
from complaintflow.worktime import WorkingCalendar

__all__ = ["CalendarLookup", "PgWrites", "TimerChange", "TimerPlan", "TimerRun", "apply_plan",
           "on_event", "pg_writes", "plan_event", "replace_deadlines", "select_timer_runs",
           "summarise", "timer_runs"]

#: (calendar name, rule-set version) -> the calendar to count on
CalendarLookup = Callable[[str | None, str], WorkingCalendar | None]


class TimerRun(NamedTuple):
    """What ``on_event`` reads of one timer run."""

    id: int
    timer: str
    run: int
    status: str
    ledger: str
    breached: bool


@dataclass(frozen=True)
class TimerChange:
    kind: str  # started stopped paused resumed rederived extended recomputed
    payload: dict[str, Any]


# Statements built once: executed with parameters they compile once and hit the cache.
_SELECT_TIMERS = (
    sa.select(T.c.id, T.c.timer, T.c.run, T.c.status, T.c.ledger,
              T.c.breached_at.is_not(None).label("breached"))
    .where(T.c.complaint_id == sa.bindparam("b_complaint"))
    .order_by(T.c.id)
)
#: with the complaint, so that the planner takes the pending-by-complaint index
_DELETE_PENDING = sa.delete(D).where(
    D.c.complaint_id == sa.bindparam("b_complaint"),
    D.c.timer_id.in_(sa.bindparam("b_timers", expanding=True)),
    D.c.fired_at.is_(None),
    D.c.due_at > sa.bindparam("b_now"),
)
_STOP_TIMERS = (
    sa.update(T)
    .where(T.c.id.in_(sa.bindparam("b_timers", expanding=True)))
    .values(status="stopped", stopped_at=sa.bindparam("b_now"))
)

_STOPPED = _STOP_TIMERS.returning(T.c.id).cte("stopped")
#: PostgreSQL: both of the above in one statement (one round trip). The deadlines are found
#: by complaint and the timer ids given, not through the CTE, so that the planner takes
#: the pending-by-complaint index instead of scanning every pending deadline still ahead
_STOP_TIMERS_AND_DEADLINES = _DELETE_PENDING.add_cte(_STOPPED)
_UPDATE_TIMER = sa.update(T).where(T.c.id == sa.bindparam("b_id"))
_INSERT_TIMERS = sa.insert(T).returning(T.c.id, T.c.timer)
_INSERT_DEADLINES = sa.insert(D)
# the unique key (timer_id, kind, idx) keeps fired and already-due rows, and their indexes
_INSERT_NEW_DEADLINES = {
    "postgresql": postgresql.insert(D).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(D).on_conflict_do_nothing(),
}


def select_timer_runs(conn: Connection, complaint_id: int) -> Sequence[Any]:
    """The complaint's timer runs, selected (as ``timer_runs`` reads them from the row)."""
    return conn.execute(_SELECT_TIMERS, {"b_complaint": complaint_id}).all()


def timer_runs(text: str) -> list[TimerRun]:
    """The runs in a fire's ``timer_runs`` JSON text (each run an array: id, timer, run,
    status, ledger, breached), in id order (as ``on_event`` reads them). Parsed by orjson:
    the database built this text from row ids, names, stored text and flags, with no
    floats, no integers beyond 64 bits and no lone surrogates, nothing orjson parses
    differently from ``json.loads``."""
    return sorted((TimerRun(int(i), t, int(r), st, led, bool(b))
                   for i, t, r, st, led, b in orjson.loads(text)), key=lambda run: run.id)


def replace_deadlines(
    conn: Connection, timer_row_id: int, complaint_id: int, due: Due, now: datetime
) -> None:
    """Swap the pending deadlines of one timer run for freshly derived ones. Fired rows
    stay (they are history), and so do rows already due but not yet fired: a deadline that
    passed before the change still fires (late) once; nothing fires twice."""
    conn.execute(_DELETE_PENDING, {"b_complaint": complaint_id, "b_timers": [timer_row_id],
                                   "b_now": now})
    rows = _deadline_rows(timer_row_id, complaint_id, due)
    if rows:
        conn.execute(_INSERT_NEW_DEADLINES[conn.dialect.name], rows)


def _deadline_rows(timer_row_id: int, complaint_id: int, due: Due) -> list[dict[str, Any]]:
    if due.breach is None:
        return []
    base = {"timer_id": timer_row_id, "complaint_id": complaint_id}
    rows = [{**base, "kind": "warning", "idx": idx, "due_at": at} for idx, at in due.warnings]
    rows.append({**base, "kind": "breach", "idx": 0, "due_at": due.breach})
    return rows


@dataclass
class TimerPlan:
    """What one event does to the clocks, worked out in Python before anything is written:
    the changes for the event payload (in payload order) and the rows to write."""

    changes: list[TimerChange] = field(default_factory=list)
    #: timer row ids to stop (their future pending deadlines go)
    stopped: list[int] = field(default_factory=list)
    #: (timer row id, status, ledger text, re-derived due): paused, resumed or re-derived
    touched: list[tuple[int, str, str, Due]] = field(default_factory=list)
    #: (timer id, run, status, ledger text, due): new runs
    started: list[tuple[str, int, str, str, Due]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.stopped or self.touched or self.started)


#: what ``plan_event`` needs to know of a clock's ledger text before deciding to change it:
#: (paused, (unit, amount)); by text, as a fire reads the same ledgers again and again
_LEDGER_FACTS: dict[str, tuple[bool, tuple[str, int]]] = {}


def _ledger_facts(text: str) -> tuple[bool, tuple[str, int]]:
    found = _LEDGER_FACTS.get(text)
    if found is None:
        ledger = Ledger.from_text(text)
        found = (ledger.paused, (ledger.unit, ledger.amount))
        if len(_LEDGER_FACTS) >= 8192:
            _LEDGER_FACTS.clear()
        _LEDGER_FACTS[text] = found
    return found


def _touch(plan: TimerPlan, timers: TimerSet, calendars: CalendarLookup,
           timer: CompiledTimer, row: Any, pausing: bool, budget: tuple[str, int],
           to_state: str, now: datetime) -> None:
    """Pause, resume or re-derive the running clock ``row`` as the event requires."""
    ledger = Ledger.from_text(row.ledger)
    touched: list[str] = []
    if pausing and not ledger.paused:
        ledger.pause(now, f"state:{to_state}")
        touched.append("paused")
    elif ledger.paused and not pausing:
        ledger.resume(now)
        touched.append("resumed")
    if budget != (ledger.unit, ledger.amount) and not row.breached:
        ledger.unit, ledger.amount = budget
        touched.append("rederived")
    if not touched:
        return
    due = timers.derive(timer, ledger, calendars(ledger.calendar, ledger.calendar_version))
    plan.touched.append((row.id, "paused" if ledger.paused else "running", ledger.to_text(),
                         due))
    for what in touched:
        plan.changes.append(
            TimerChange(what, {**timer_payload(timer, ledger, due), "run": row.run}))


def plan_event(
    compiled: Compiled,
    calendars: CalendarLookup,
    *,
    kind: str,
    trigger: str | None,
    to_state: str,
    from_state: str | None,
    scope: Scope,
    now: datetime,
    runs: Sequence[Any],
) -> TimerPlan:
    """The timer rules applied to one event, given the complaint's timer ``runs`` (in id
    order, as ``timer_runs`` gives them): no database access."""
    plan = TimerPlan()
    timers = compiled.timers
    if not timers.timers:
        return plan
    changes = plan.changes
    last_run: dict[str, int] = {}
    active: dict[str, Any] = {}
    for row in runs:
        last_run[row.timer] = max(last_run.get(row.timer, 0), row.run)
        if row.status != "stopped":
            active[row.timer] = row
    for name, row in active.items():
        timer = timers.by_id.get(name)
        if timer is None:
            continue
        definition = timer.definition
        if kind == "transition" and (
            to_state in definition.stop or trigger in definition.stop_triggers
        ):
            plan.stopped.append(row.id)
            changes.append(TimerChange("stopped", {"timer": name, "run": row.run}))
            continue
        paused, was = _ledger_facts(row.ledger)
        budget = timer.budget_for(scope)
        pausing = to_state in definition.pause
        if pausing != paused or (budget != was and not row.breached):
            _touch(plan, timers, calendars, timer, row, pausing, budget, to_state, now)
    starting = severity_starters(compiled, to_state) if kind == "severity" \
        else timers.starters(kind, trigger, from_state, to_state)
    for timer in starting:
        if timer.id in active:
            continue
        if timer.condition is not None and not timer.condition(scope):
            continue
        ledger = timers.new_ledger(timer, scope, now)
        if to_state in timer.definition.pause:
            ledger.pause(now, f"state:{to_state}")
        due = timers.derive(timer, ledger, calendars(ledger.calendar, ledger.calendar_version))
        run = last_run.get(timer.id, 0) + 1
        plan.started.append((timer.id, run, "paused" if ledger.paused else "running",
                             ledger.to_text(), due))
        changes.append(TimerChange("started", {**timer_payload(timer, ledger, due), "run": run}))
    return plan


@functools.lru_cache(maxsize=256)
def _severity_starters(timers: TimerSet, state: str) -> tuple[CompiledTimer, ...]:
    return tuple(
        t for t in timers.timers
        if t.definition.start.on == "enter" and state in t.definition.start.states
        and state not in t.definition.stop and t.definition.condition is not None
        and "severity" in fields_read(t.definition.condition))


def severity_starters(compiled: Compiled, state: str) -> tuple[CompiledTimer, ...]:
    """The clocks a raised severity starts in ``state`` (unless running, or their condition
    fails): those started on entering it whose condition reads the severity. The procedure
    reports a major complaint to management at once, also one a breach made major; the
    condition held at no entry, so no transition started them."""
    return _severity_starters(compiled.timers, state)


def apply_plan(conn: Connection, plan: TimerPlan, complaint_id: int, now: datetime) -> None:
    """Write ``plan`` in ``conn``'s transaction (both backends)."""
    for row_id, status, ledger, due in plan.touched:
        conn.execute(_UPDATE_TIMER, {"b_id": row_id, "status": status, "ledger": ledger,
                                     "due_at": due.breach, "provisional": due.provisional})
        replace_deadlines(conn, row_id, complaint_id, due, now)
    if plan.stopped:
        params = {"b_complaint": complaint_id, "b_timers": plan.stopped, "b_now": now}
        if conn.dialect.name == "postgresql":
            conn.execute(_STOP_TIMERS_AND_DEADLINES, params)
        else:
            conn.execute(_DELETE_PENDING, params)
            conn.execute(_STOP_TIMERS, params)
    if plan.started:
        # one multi-row INSERT; RETURNING order is not guaranteed, the timer id tells
        inserted = conn.execute(_INSERT_TIMERS, [
            {"complaint_id": complaint_id, "timer": timer, "run": run, "status": status,
             "ledger": ledger, "due_at": due.breach, "provisional": due.provisional,
             "warned": 0}
            for timer, run, status, ledger, due in plan.started
        ]).all()
        ids = {r.timer: r.id for r in inserted}
        deadlines = []
        for timer, _run, _status, _ledger, due in plan.started:
            deadlines.extend(_deadline_rows(ids[timer], complaint_id, due))
        if deadlines:
            conn.execute(_INSERT_DEADLINES, deadlines)


# PostgreSQL through the driver (psycopg's paramstyle): ``apply_plan``'s writes as
# statements of constant text that need no result from one another, so that they can go
# out in one pipeline, or CTEs of the fire's one statement (``pg_writes``).
_PG_RECORDS = "json_to_recordset(%(rows)s::json)"
_PG_DELETE_PENDING_OF = (
    "DELETE FROM deadlines WHERE complaint_id = %(complaint)s AND timer_id = ANY(%(ids)s) "
    "AND fired_at IS NULL AND due_at > %(now)s"
)
_PG_UPDATE_TIMER = (
    "UPDATE timers SET status = %(status)s, ledger = %(ledger)s, due_at = %(due_at)s, "
    "provisional = %(provisional)s WHERE id = %(id)s"
)
_PG_INSERT_NEW_DEADLINES = (
    "INSERT INTO deadlines (timer_id, complaint_id, kind, idx, due_at) "
    "SELECT %(id)s, %(complaint)s, r.kind, r.idx, r.due_at "
    f"FROM {_PG_RECORDS} AS r(kind text, idx integer, due_at timestamptz) "
    "ON CONFLICT (timer_id, kind, idx) DO NOTHING"
)
# The runs stopped and started, as common table expressions of the statement that moves
# the complaint row (``Engine._fire_autocommit``): one statement instead of three, each
# applied only if the row ``moved`` (so a lost race changes no clock, whatever order the
# server runs them in). Their parameters are prefixed ``t_``.
_PG_STOP_CTES = (
    "t_stopped AS (UPDATE timers SET status = 'stopped', stopped_at = %(t_now)s "
    "WHERE id = ANY(%(t_stopped)s) AND EXISTS (SELECT FROM moved)), "
    "t_cleared AS (DELETE FROM deadlines WHERE complaint_id = %(t_complaint)s "
    "AND timer_id = ANY(%(t_stopped)s) AND fired_at IS NULL AND due_at > %(t_now)s "
    "AND EXISTS (SELECT FROM moved))"
)
#: the runs started and their deadlines, found by the (timer, run) the INSERT returns
_PG_START_CTES = (
    "t_started AS (INSERT INTO timers (complaint_id, timer, run, status, ledger, due_at, "
    "provisional, warned) "
    "SELECT moved.id, r.timer, r.run, r.status, r.ledger, r.due_at, r.provisional, 0 "
    "FROM moved, json_to_recordset(%(t_started)s::json) AS r(timer text, run integer, "
    "status text, ledger text, due_at timestamptz, provisional boolean) "
    "RETURNING id, complaint_id, timer, run), "
    "t_deadlines AS (INSERT INTO deadlines (timer_id, complaint_id, kind, idx, due_at) "
    "SELECT s.id, s.complaint_id, d.kind, d.idx, d.due_at FROM t_started s "
    "JOIN json_to_recordset(%(t_deadlines)s::json) AS d(timer text, run integer, kind text, "
    "idx integer, due_at timestamptz) ON d.timer = s.timer AND d.run = s.run)"
)


@dataclass(frozen=True, slots=True)
class PgWrites:
    """``plan``'s writes for PostgreSQL (``pg_writes``): common table expressions for the
    statement that moves the complaint row (a CTE named ``moved`` returning its ``id``),
    their parameters, and the statements that must go separately, after it in the same
    pipeline."""

    ctes: tuple[str, ...]
    params: dict[str, Any]
    statements: list[tuple[str, dict[str, Any]]]


def _iso_or_none(moment: datetime | None) -> str | None:
    return iso(moment) if moment is not None else None


def _deadline_records(due: Due, **key: Any) -> list[dict[str, Any]]:
    if due.breach is None:
        return []
    rows = [{**key, "kind": "warning", "idx": idx, "due_at": iso(at)}
            for idx, at in due.warnings]
    rows.append({**key, "kind": "breach", "idx": 0, "due_at": iso(due.breach)})
    return rows


def _rows_text(rows: list[dict[str, Any]]) -> str:
    """Rows for ``json_to_recordset``: names, integers, ISO text and flags, which orjson
    writes several times faster than ``json.dumps``, to the same JSON values."""
    return orjson.dumps(rows).decode()


def pg_writes(plan: TimerPlan, complaint_id: int, now: datetime) -> PgWrites:
    """``plan``'s writes for PostgreSQL, in psycopg's paramstyle: the same rows as
    ``apply_plan`` writes. Runs stopped and started become CTEs of the fire's one
    statement; re-derived runs (rare) separate statements, independent of one another's
    results (for one pipeline)."""
    statements: list[tuple[str, dict[str, Any]]] = []
    for row_id, status, ledger, due in plan.touched:
        statements.append((_PG_UPDATE_TIMER, {"id": row_id, "status": status,
                                              "ledger": ledger, "due_at": due.breach,
                                              "provisional": due.provisional}))
        statements.append((_PG_DELETE_PENDING_OF, {"complaint": complaint_id,
                                                   "ids": [row_id], "now": now}))
        rows = _deadline_records(due)
        if rows:
            statements.append((_PG_INSERT_NEW_DEADLINES, {
                "id": row_id, "complaint": complaint_id, "rows": _rows_text(rows)}))
    ctes: tuple[str, ...] = ()
    params: dict[str, Any] = {}
    if plan.stopped:
        ctes += (_PG_STOP_CTES,)
        params.update(t_stopped=plan.stopped, t_complaint=complaint_id, t_now=now)
    if plan.started:
        ctes += (_PG_START_CTES,)
        params["t_started"] = _rows_text([
            {"timer": timer, "run": run, "status": status, "ledger": ledger,
             "due_at": _iso_or_none(due.breach), "provisional": due.provisional}
            for timer, run, status, ledger, due in plan.started])
        params["t_deadlines"] = _rows_text([
            r for timer, run, _status, _ledger, due in plan.started
            for r in _deadline_records(due, timer=timer, run=run)])
    return PgWrites(ctes, params, statements)


# SQLite through the driver (sqlite3's named paramstyle): ``apply_plan``'s writes as SQL
# text executed straight on the DBAPI cursor, in the caller's transaction.
_SQLITE_UPDATE_TIMER = (
    "UPDATE timers SET status = :status, ledger = :ledger, due_at = :due_at, "
    "provisional = :provisional WHERE id = :id"
)
_SQLITE_INSERT_TIMER = (
    "INSERT INTO timers (complaint_id, timer, run, status, ledger, due_at, provisional, "
    "warned) VALUES (:complaint, :timer, :run, :status, :ledger, :due_at, :provisional, 0)"
)
_SQLITE_INSERT_DEADLINE = (
    "INSERT INTO deadlines (timer_id, complaint_id, kind, idx, due_at) "
    "VALUES (:timer_id, :complaint_id, :kind, :idx, :due_at)"
)


@functools.cache
def _sqlite_in(count: int) -> str:
    return ", ".join(f":id{i}" for i in range(count))


@functools.cache
def _sqlite_delete_pending(count: int) -> str:
    """With the complaint, so that the planner takes the pending-by-complaint index."""
    return ("DELETE FROM deadlines WHERE complaint_id = :complaint "
            f"AND timer_id IN ({_sqlite_in(count)}) AND fired_at IS NULL AND due_at > :now")


@functools.cache
def _sqlite_stop(count: int) -> str:
    return (f"UPDATE timers SET status = 'stopped', stopped_at = :now "
            f"WHERE id IN ({_sqlite_in(count)})")


def _sqlite_ids(ids: Sequence[int], **params: Any) -> dict[str, Any]:
    return {**params, **{f"id{i}": row_id for i, row_id in enumerate(ids)}}


def _sqlite_deadlines(timer_row_id: int, complaint_id: int, due: Due) -> list[dict[str, Any]]:
    stored = db.sqlite_datetime_in
    return [{**row, "due_at": stored(row["due_at"])}
            for row in _deadline_rows(timer_row_id, complaint_id, due)]


def apply_plan_sqlite(cursor: Any, plan: TimerPlan, complaint_id: int, now: datetime) -> None:
    """Write ``plan`` on a sqlite3 ``cursor`` (``db.SqliteWrite.cursor``) in its connection's
    transaction: the same rows as ``apply_plan`` writes."""
    stored = db.sqlite_datetime_in
    at = stored(now)
    for row_id, status, ledger, due in plan.touched:
        cursor.execute(_SQLITE_UPDATE_TIMER, {
            "id": row_id, "status": status, "ledger": ledger,
            "due_at": None if due.breach is None else stored(due.breach),
            "provisional": due.provisional})
        cursor.execute(_sqlite_delete_pending(1),
                       _sqlite_ids([row_id], complaint=complaint_id, now=at))
        rows = _sqlite_deadlines(row_id, complaint_id, due)
        if rows:
            # the unique key (timer_id, kind, idx) keeps fired and already-due rows
            cursor.executemany(_SQLITE_INSERT_DEADLINE + " ON CONFLICT DO NOTHING", rows)
    if plan.stopped:
        count = len(plan.stopped)
        cursor.execute(_sqlite_delete_pending(count),
                       _sqlite_ids(plan.stopped, complaint=complaint_id, now=at))
        cursor.execute(_sqlite_stop(count), _sqlite_ids(plan.stopped, now=at))
    for timer, run, status, ledger, due in plan.started:
        cursor.execute(_SQLITE_INSERT_TIMER, {
            "complaint": complaint_id, "timer": timer, "run": run, "status": status,
            "ledger": ledger, "due_at": None if due.breach is None else stored(due.breach),
            "provisional": due.provisional})
        rows = _sqlite_deadlines(cursor.lastrowid, complaint_id, due)
        if rows:
            cursor.executemany(_SQLITE_INSERT_DEADLINE, rows)


def on_event(
    conn: Connection,
    compiled: Compiled,
    calendars: CalendarLookup,
    complaint_id: int,
    *,
    kind: str,
    trigger: str | None,
    from_state: str | None,
    to_state: str,
    scope: Scope,
    now: datetime,
    runs: Sequence[TimerRun] | None = None,
) -> list[TimerChange]:
    """Apply the timer rules to one event; return what changed (for the event payload).
    ``runs``: the complaint's timer runs as read in this transaction (``timer_runs``), if
    the caller has them; otherwise they are selected here."""
    if not compiled.timers.timers:
        return []
    rows = runs if runs is not None else select_timer_runs(conn, complaint_id)
    plan = plan_event(compiled, calendars, kind=kind, trigger=trigger, from_state=from_state,
                      to_state=to_state, scope=scope, now=now, runs=rows)
    apply_plan(conn, plan, complaint_id, now)
    return plan.changes


def summarise(changes: list[TimerChange]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        out.setdefault(change.kind, []).append(change.payload)
    return out
