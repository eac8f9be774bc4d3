"""The embedding contract: ``Engine.open(...)``, then submit, fire, read, verify.

Every state change, its history event and its side effects (timers, deadlines, outbox)
commit in ONE transaction; observers run after the commit and can neither undo nor block it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as SAEngine

from complaintflow import arguments, sla
from complaintflow.actor import Actor
from complaintflow.clock import Clock, now_from, system_clock
from complaintflow.compiled import Compiled
from complaintflow.errors import (
    ConcurrentUpdate,
    FieldProblem,
    IdempotencyConflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    RoleNotAllowed,
    TimerRefused,
    hint,
)
from complaintflow.replay import Replayed
from complaintflow.rowmemo import RememberedRow, RowMemo
from complaintflow.rules.loader import load_rules, parse_rules
from complaintflow.rules.model import MAX_DURATION
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.values import ValueProblem, check_field, to_json
from complaintflow.states.conditions import Facts
from complaintflow.states.guards import is_blank
from complaintflow.states.machine import TriggerOption
from complaintflow.storage import db
from complaintflow.storage.hashing import GENESIS, canonical, event_hash, parse_canonical
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import deadlines as D
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import idempotency_keys as K
from complaintflow.storage.tables import number_sequences as N
from complaintflow.storage.tables import rulesets as R
from complaintflow.storage.tables import timers as T
from complaintflow.timers import CompiledTimer, Consent, Ledger, timer_payload
from complaintflow.verify import (
    IndexFields,
    VerificationReport,
    VersionFacts,
    check_options,
    verify_all,
)
from complaintflow.views import Complaint, FieldCodec, HistoryEvent, Page, TimerView, mask_value
from complaintflow.worktime import WorkingCalendar

__all__ = ["EVENT_SCHEMA_VERSION", "CommittedEvent", "Engine", "build_event", "upcast"]

log = logging.getLogger("complaintflow")

#: Version of the event payload layout; older versions are upcast when read.
EVENT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CommittedEvent:
    """What observers receive after a commit (unmasked: observers are the host itself)."""

    event: HistoryEvent
    complaint: Complaint | None


Observer = Callable[[CommittedEvent], None]


@dataclass(frozen=True)
class _Move:
    """A decided transition, not yet written."""

    event_row: dict[str, Any]
    event: HistoryEvent
    moved: dict[str, Any]  # the complaint row's new values
    timers: sla.TimerPlan
    complaint: Complaint


# Hot-path statements built once; executed with parameters they compile once and are
# found in the compiled cache (``.values(**kw)`` per call builds a new statement each time).
#: SET columns come from the execution parameters; b_id / b_version select the row
_UPDATE_COMPLAINT = sa.update(C).where(C.c.id == sa.bindparam("b_id"),
                                       C.c.version == sa.bindparam("b_version"))
_INSERT_COMPLAINT = sa.insert(C).returning(C.c.id)
_INSERT_EVENT = sa.insert(E)
#: what a transition writes to the complaint row
_MOVED_COLUMNS = ("state", "version", "severity", "department", "handler", "updated_at",
                  "fields", "head_seq", "head_hash", "facts")


def _move_and_append() -> sa.Insert:
    """PostgreSQL: a transition's UPDATE of the complaint row (under the version check) and
    the INSERT of its event as ONE statement, one round trip instead of two. The event is
    inserted only if the row was updated, so the rowcount (1 or 0) is the version check."""
    moved = (
        sa.update(C)
        .where(C.c.id == sa.bindparam("b_id"), C.c.version == sa.bindparam("b_version"))
        .values({name: sa.bindparam(f"c_{name}", type_=C.c[name].type)
                 for name in _MOVED_COLUMNS})
        .returning(C.c.id)
        .cte("moved")
    )
    columns = [c for c in E.c if c.name != "id"]
    values = [moved.c.id if c.name == "complaint_id" else
              sa.bindparam(f"e_{c.name}", type_=c.type) for c in columns]
    return sa.insert(E).from_select([c.name for c in columns],
                                    sa.select(*values).select_from(moved))


#: an INSERT's rowcount is kept only on request
_MOVE_AND_APPEND = _move_and_append().execution_options(preserve_rowcount=True)
_INSERT_KEY = sa.insert(K)
_SELECT_FACTS = (sa.select(E.c.seq, E.c.trigger, E.c.actor_id, E.c.from_state, E.c.to_state,
                           E.c.occurred_at)
                 .where(E.c.complaint_id == sa.bindparam("b_complaint"),
                        E.c.seq > sa.bindparam("b_after"),
                        E.c.seq <= sa.bindparam("b_upto")).order_by(E.c.seq))


# A fire's statements, straight through the driver. PostgreSQL: the row read, then every
# write in one pipeline on an autocommit connection (one implicit transaction, one round
# trip; none needs another's result). SQLite: all in one BEGIN IMMEDIATE transaction.
#: the names of a complaint row's values for a fire (every column, then its timer runs)
_FIRE_ROW = (*(c.name for c in C.c), "timer_runs")


def _select_for_fire(aggregate: str, number: str) -> str:
    """The complaint row with its timer runs as JSON text (``sla.timer_runs`` reads them),
    given the dialect's JSON ``aggregate`` of ``{run}`` and its ``number`` placeholder."""
    run = "t.id, t.timer, t.run, t.status, t.ledger, t.breached_at IS NOT NULL"
    return (f'SELECT {", ".join(_FIRE_ROW[:-1])}, '
            f"(SELECT coalesce({aggregate.format(run=run)}, '[]') FROM timers t "
            "WHERE t.complaint_id = complaints.id) AS timer_runs "
            f"FROM complaints WHERE number = {number}")


#: timestamps to be made UTC
_PG_SELECT_FOR_FIRE = _select_for_fire("json_agg(json_build_array({run}))::text",
                                       "%(number)s")
#: the complaint row under the version check; FAILS (and with it the transaction, so that
#: nothing after it in the pipeline is applied) unless exactly one row was updated
_PG_VERSION_MOVED = "complaintflow: version check failed"
_EVENT_COLUMNS = tuple(c.name for c in E.c if c.name != "id")


@functools.cache
def _pg_move(ctes: tuple[str, ...] = ()) -> str:
    """The statement that writes a fire: the complaint row under the version check, the
    event appended only if the row moved, and ``ctes`` (``sla.pg_writes``: the clocks)."""
    return (
        "WITH moved AS (UPDATE complaints SET "
        + ", ".join(f"{name} = %({name})s" for name in _MOVED_COLUMNS)
        + " WHERE id = %(b_id)s AND version = %(b_version)s RETURNING id), "
        f'appended AS (INSERT INTO events ({", ".join(_EVENT_COLUMNS)}) SELECT '
        + ", ".join("moved.id" if name == "complaint_id" else f"%({name})s"
                    for name in _EVENT_COLUMNS)
        + " FROM moved)"
        + "".join(f", {cte}" for cte in ctes)
        + f" SELECT CASE WHEN count(*) = 1 THEN 1 ELSE ('{_PG_VERSION_MOVED}: ' || count(*) "
        "|| ' rows')::integer END FROM moved"
    )


# SQLite, through the driver (sqlite3's named paramstyle): a fire's statements, run in its
# BEGIN IMMEDIATE transaction (``Engine._fire_sqlite``).
#: timestamps as text
_SQLITE_SELECT_FOR_FIRE = _select_for_fire("json_group_array(json_array({run}))", ":number")
#: the moved columns some index of the complaints table holds: SQLite rewrites an index
#: entry for every column SET, changed or not (a WAL page per index at the commit), so a
#: fire sets these only when they change
_INDEXED_MOVED = frozenset(
    name for name in _MOVED_COLUMNS
    if any(name in index.columns for index in C.indexes)
    or any(name in c.columns for c in C.constraints if isinstance(c, sa.UniqueConstraint)))


#: a connection, or a callable opening one on first need (``db.SqliteWrite.connection``)
ConnectionSource = Connection | Callable[[], Connection]


def _opened(conn: ConnectionSource) -> Connection:
    return conn if isinstance(conn, Connection) else conn()


def _changed(moved: Mapping[str, Any], row: Any) -> dict[str, Any]:
    """SQLite: the moved columns to SET, without the indexed ones whose value stays (the
    UPDATE's SET list follows the parameters' keys)."""
    return {name: value for name, value in moved.items()
            if name not in _INDEXED_MOVED or value != getattr(row, name)}


@functools.cache
def _sqlite_move(columns: tuple[str, ...]) -> str:
    """The complaint row's UPDATE of ``columns`` under the version check (the rowcount
    tells)."""
    return ("UPDATE complaints SET " + ", ".join(f"{name} = :{name}" for name in columns)
            + " WHERE id = :b_id AND version = :b_version")


_SQLITE_APPEND = (
    # (quoted: TRIGGER is an SQLite keyword)
    "INSERT INTO events (" + ", ".join(f'"{name}"' for name in _EVENT_COLUMNS) + ") "
    f'VALUES ({", ".join(f":{name}" for name in _EVENT_COLUMNS)})'
)
_SQLITE_INSERT_KEY = (
    'INSERT INTO idempotency_keys ("key", fingerprint, complaint_id, event_seq, created_at) '
    "VALUES (:key, :fingerprint, :complaint_id, :event_seq, :created_at)"
)
_PG_INSERT_KEY = (
    "INSERT INTO idempotency_keys (key, fingerprint, complaint_id, event_seq, created_at) "
    "VALUES (%(key)s, %(fingerprint)s, %(complaint_id)s, %(event_seq)s, %(created_at)s)"
)


def insert_ignore(conn: Connection, table: sa.Table, values: Mapping[str, Any]) -> None:
    stmt: Any
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    conn.execute(stmt)


def _stored_json(text: Any, kind: type, what: str, number: str, seq: int) -> Any:
    """A JSON column of a stored event, or ``IntegrityError`` if it is not what the engine
    writes there (an edited row: ``verify`` names it as well)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, kind):
        raise IntegrityError(f"event {seq} of {number}: its stored {what} is not a JSON "
                             f"{'object' if kind is dict else 'list'}; the row was changed "
                             "outside the engine (`complaintflow audit verify` checks the "
                             "whole history)", number, seq)
    return value


def _fingerprint(**parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_event(
    *,
    complaint_id: int,
    number: str,
    seq: int,
    prev_hash: str,
    type: str,
    trigger: str | None,
    from_state: str | None,
    to_state: str,
    actor: Actor,
    now: datetime,
    payload: Mapping[str, Any],
    ruleset: str,
) -> tuple[dict[str, Any], HistoryEvent]:
    """The row to insert for one event, chained to ``prev_hash``, and its view."""
    roles_text = canonical(list(actor.roles))
    payload_text = canonical(payload)
    digest = event_hash(
        number=number, seq=seq, type=type, trigger=trigger, from_state=from_state,
        to_state=to_state, actor_id=actor.id, actor_roles=roles_text,
        actor_department=actor.department, occurred_at=now, payload=payload_text,
        ruleset=ruleset, schema_version=EVENT_SCHEMA_VERSION, prev_hash=prev_hash,
    )
    row = {
        "complaint_id": complaint_id, "seq": seq, "type": type, "trigger": trigger,
        "from_state": from_state, "to_state": to_state, "actor_id": actor.id,
        "actor_roles": roles_text, "actor_department": actor.department, "occurred_at": now,
        "payload": payload_text, "ruleset": ruleset, "schema_version": EVENT_SCHEMA_VERSION,
        "prev_hash": prev_hash, "hash": digest,
    }
    view = HistoryEvent(number, seq, type, trigger, from_state, to_state, actor.id,
                        actor.roles, actor.department, now, dict(payload), ruleset,
                        EVENT_SCHEMA_VERSION, prev_hash, digest)
    return row, view


def upcast(payload: dict[str, Any], schema_version: int) -> dict[str, Any]:
    """Bring a stored payload to the current layout (version 1 is the first layout)."""
    if schema_version > EVENT_SCHEMA_VERSION:
        raise InvalidInput([FieldProblem("schema_version",
                                         f"event schema {schema_version} is newer than this "
                                         f"release ({EVENT_SCHEMA_VERSION})")], context="event")
    return payload


#: field values whose JSON form is the value itself
_AS_STORED = frozenset((str, int, bool))


def _index_value(values: Mapping[str, Any], name: str | None) -> str | None:
    if name is None or values.get(name) is None:
        return None
    return str(values[name])[:200]


_VERSION_TEXT = "a complaint version: a whole number from 1 (the submission) up"
_TIMER_STATUSES = ("running", "paused", "stopped")
_MAX_OFFSET = 2**62 - 1


def _key_problem(key: object) -> FieldProblem | None:
    return arguments.text("idempotency_key", key, "an idempotency key", max_length=200,
                          optional=True)


def _is_version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**62


class Engine:
    """A complaint engine bound to one database and one current rule set."""

    def __init__(self, sa_engine: SAEngine, rules: RuleSet, clock: Clock, *,
                 pool_size: int | None = None, max_overflow: int | None = None) -> None:
        self._db = sa_engine
        #: PostgreSQL: a pool of its own whose connections stay in autocommit, for fires
        #: (``_fire_autocommit``): switching a pooled connection to autocommit and back on
        #: every fire cost about 23 us of CPU (measured; ``docs/benchmarks.md``)
        self._autocommit_db = (db.autocommit_engine(sa_engine.url, pool_size=pool_size,
                                                    max_overflow=max_overflow)
                               if sa_engine.dialect.name == "postgresql" else None)
        #: SQLite: fires' transactions straight on the driver (``_fire_sqlite``)
        self._sqlite_writer = (db.SqliteWriter(sa_engine)
                               if sa_engine.dialect.name == "sqlite" else None)
        self.rules = rules
        self._clock = clock
        self._versions: dict[str, Compiled] = {rules.version: Compiled.build(rules)}
        #: the rows this engine wrote last, so the next fire need not parse them again
        self._rows = RowMemo()
        self._observers: list[Observer] = []
        self._lock = threading.Lock()
        self._zone = ZoneInfo(rules.definition.timezone)
        from complaintflow.outbox import Outbox

        self.outbox = Outbox(self)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str = "sqlite:///complaints.db",
        rules: RuleSet | str | Path | None = None,
        clock: Clock | None = None,
        *,
        loaded_by: str | None = None,
        pool_size: int | None = None,
        max_overflow: int | None = None,
    ) -> Engine:
        """Open (creating or upgrading the schema) with ``rules`` (a path, a loaded
        ``RuleSet``, or ``None`` for the shipped default) and ``clock`` (default: system).

        ``pool_size`` and ``max_overflow`` size each connection pool (SQLAlchemy's 5 and 10
        by default). On PostgreSQL the engine holds two pools (``databases``), so it may
        keep up to twice ``pool_size`` connections idle and open twice ``pool_size +
        max_overflow`` at most."""
        arguments.refuse([
            arguments.integer("pool_size", pool_size, 1, 1000, optional=True),
            arguments.integer("max_overflow", max_overflow, 0, 1000, optional=True),
            None if clock is None or callable(clock) else
            FieldProblem("clock", "a callable returning an aware datetime"),
            None if rules is None or isinstance(rules, RuleSet | str | Path) else
            FieldProblem("rules", "a RuleSet, the path of a rule file, or None"),
            arguments.text("loaded_by", loaded_by, "who loaded the rules", max_length=200,
                           optional=True),
        ], context="engine options")
        ruleset = rules if isinstance(rules, RuleSet) else load_rules(rules)
        Compiled.build(ruleset)  # before anything is stored: a rule set that cannot run is not
        clock = clock or system_clock
        pools = {"pool_size": pool_size, "max_overflow": max_overflow}
        sa_engine = db.connect(url, **pools)
        try:
            with db.write(sa_engine) as conn:
                if conn.dialect.name == "postgresql":
                    # serialise schema upgrades per schema, not database-wide
                    conn.exec_driver_sql(
                        "SELECT pg_advisory_xact_lock(727001, hashtext(current_schema()))")
                from alembic import command

                command.upgrade(db.alembic_config(conn), "head")
                insert_ignore(conn, R, {
                    "hash": ruleset.version, "name": ruleset.name[:200],
                    "source": ruleset.source[:500], "text": ruleset.text,
                    "loaded_at": now_from(clock), "loaded_by": loaded_by,
                })
        except BaseException:
            sa_engine.dispose()
            raise
        return cls(sa_engine, ruleset, clock, **pools)

    def close(self) -> None:
        if self._sqlite_writer is not None:
            self._sqlite_writer.close()
        self._db.dispose()
        if self._autocommit_db is not None:
            self._autocommit_db.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        return self._db.dialect.name

    @property
    def database(self) -> SAEngine:
        """The SQLAlchemy engine (for tools and tests; the schema is not public API)."""
        return self._db

    @property
    def databases(self) -> tuple[SAEngine, ...]:
        """Every SQLAlchemy engine (connection pool) this engine holds: ``database``, and on
        PostgreSQL the autocommit pool fires use (for tools watching or sizing pools)."""
        return (self._db,) if self._autocommit_db is None else (self._db, self._autocommit_db)

    @property
    def zone(self) -> ZoneInfo:
        """The zone times are shown in."""
        return self._zone

    @property
    def clock(self) -> Clock:
        """The injected clock."""
        return self._clock

    def now(self) -> datetime:
        return now_from(self._clock)

    # -- observers -------------------------------------------------------------------------

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` after every committed event; returns an unsubscribe function.
        An exception in an observer is logged and never undoes or blocks a transition."""
        if not callable(observer):
            raise InvalidInput([FieldProblem("observer", "a callable taking a CommittedEvent")])
        with self._lock:
            self._observers.append(observer)

        def unsubscribe() -> None:
            with self._lock:
                if observer in self._observers:
                    self._observers.remove(observer)

        return unsubscribe

    def notify(self, committed: Iterable[CommittedEvent]) -> None:
        with self._lock:
            observers = list(self._observers)
        if not observers:
            return
        for item in committed:
            for observer in observers:
                try:
                    observer(item)
                except Exception:
                    log.exception("observer %r failed on %s #%d", observer,
                                  item.event.number, item.event.seq)

    # -- rule-set versions -----------------------------------------------------------------

    def compiled(self, conn: ConnectionSource, version: str) -> Compiled:
        """The compiled rule set of ``version`` (loaded from the database if not current)."""
        found = self._versions.get(version)
        if found is None:
            text = _opened(conn).execute(sa.select(R.c.text, R.c.source).where(R.c.hash == version)
                                ).first()
            if text is None:
                raise NotFound("rule set", version)
            # as the release that stored it read it (older loaders converted types)
            found = self._versions[version] = Compiled.build(
                parse_rules(text.text, text.source, stored=True))
        return found

    def compiled_current(self) -> Compiled:
        """The compiled form of the engine's current rule set."""
        return self._versions[self.rules.version]

    def calendar_lookup(self, conn: ConnectionSource) -> sla.CalendarLookup:
        def lookup(name: str | None, version: str) -> WorkingCalendar | None:
            if name is None:
                return None
            return self.compiled(conn, version).calendars.get(name)

        return lookup

    # -- input checks ----------------------------------------------------------------------

    @staticmethod
    def check_actor(actor: Actor, rules: RuleSet, *, system: bool = False) -> None:
        """``actor`` passes ``actor_problems`` and holds only roles ``rules`` declares."""
        problems = Engine.actor_problems(actor, system=system)
        if isinstance(actor, Actor):
            problems += Engine._role_problems(actor, rules)
        if problems:
            raise InvalidInput(problems, context="actor")

    @staticmethod
    def _role_problems(actor: Actor, rules: RuleSet) -> list[FieldProblem]:
        return [FieldProblem("actor.roles", f"unknown role {role!r}" + hint(role, rules.roles))
                for role in actor.roles if role not in rules.roles]

    @staticmethod
    def actor_problems(actor: object, *, system: bool = False) -> list[FieldProblem]:
        """What is wrong with ``actor`` whatever the rules: not an ``Actor``; an id, or a
        department, that is not text of 1 to 200 characters every backend stores as given
        (``arguments.text``: no NUL); an id starting with ``system:`` unless ``system``."""
        if not isinstance(actor, Actor):
            return [FieldProblem("actor", "expected an Actor")]
        # stored as text and hashed as given: anything else would not verify
        problems = [p for p in (
            arguments.text("actor.id", actor.id, "an actor id", max_length=200),
            arguments.text("actor.department", actor.department, "a department",
                           max_length=200, optional=True)) if p]
        if not problems and actor.id.startswith("system:") and not system:
            problems.append(FieldProblem("actor.id", "ids starting with 'system:' are reserved"))
        return problems

    def _check_submission(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        rules = self.rules
        allowed = rules.definition.submit.fields
        problems: list[FieldProblem] = []
        values: dict[str, Any] = {}
        if not isinstance(fields, Mapping):
            raise InvalidInput([FieldProblem("fields", "expected a mapping")], context="complaint")
        for name, raw in fields.items():
            fdef = rules.fields.get(name)
            if fdef is None:
                problems.append(FieldProblem(str(name), "no such field" + hint(
                    str(name), rules.fields if allowed == "*" else allowed)))
            elif allowed != "*" and name not in allowed:
                problems.append(FieldProblem(name, "cannot be given at submission"))
            elif raw is not None:
                try:
                    values[name] = check_field(fdef, raw)
                except ValueProblem as exc:
                    problems.append(FieldProblem(name, str(exc)))
        for fdef in rules.definition.fields:
            if fdef.required and is_blank(values.get(fdef.id)) and not any(
                p.field == fdef.id for p in problems
            ):
                problems.append(FieldProblem(fdef.id, "required"))
        if problems:
            raise InvalidInput(problems, context="complaint")
        return values

    # -- writing ---------------------------------------------------------------------------

    def _next_number(self, conn: Connection, now: datetime) -> tuple[str, str, int]:
        pattern = self.rules.definition.number_pattern
        year = now.astimezone(self._zone).year
        scope = str(year) if "{year" in pattern else "all"
        insert_ignore(conn, N, {"scope": scope, "value": 0})
        seq = conn.execute(
            sa.update(N).where(N.c.scope == scope).values(value=N.c.value + 1)
            .returning(N.c.value)
        ).scalar_one()
        return pattern.format(year=year, seq=seq), scope, seq

    def _replayed(self, conn: Connection, key: Any, actor: Actor) -> Complaint:
        """The result of the first call with an idempotency key, rebuilt from history."""
        row = conn.execute(sa.select(C).where(C.c.id == key.complaint_id)).one()
        events = conn.execute(
            sa.select(E.c.to_state, E.c.payload, E.c.occurred_at)
            .where(E.c.complaint_id == key.complaint_id, E.c.seq <= key.event_seq)
            .order_by(E.c.seq)
        ).all()
        fields: dict[str, Any] = {}
        severity = row.severity
        for seq, ev in enumerate(events, 1):
            payload = _stored_json(ev.payload, dict, "payload", row.number, seq)
            fields.update(payload.get("fields", {}))
            fields.update(payload.get("set", {}))
            severity = payload.get("severity", severity)
        codec = self.compiled(conn, row.ruleset).codec
        values = {k: v for k, v in codec.decode(fields).items() if v is not None}
        return self._view(codec, row, actor.roles, fields=values,
                          state=events[-1].to_state, version=key.event_seq, severity=severity,
                          updated_at=events[-1].occurred_at)

    def _idempotent(self, conn: Connection, key: str | None, fingerprint: str,
                    actor: Actor) -> Complaint | None:
        if key is None:
            return None
        found = conn.execute(sa.select(K).where(K.c.key == key)).first()
        if found is None:
            return None
        if found.fingerprint != fingerprint:
            raise IdempotencyConflict(key)
        return self._replayed(conn, found, actor)

    def _idempotent_again(self, key: str | None, fingerprint: str,
                          actor: Actor) -> Complaint | None:
        """``_idempotent`` on a connection of its own, after a race this request lost (the
        winner's key, if it was this request's, committed with the winner's write)."""
        with db.read(self._db) as conn:
            return self._idempotent(conn, key, fingerprint, actor)

    def submit(self, fields: Mapping[str, Any], actor: Actor, *,
               idempotency_key: str | None = None) -> Complaint:
        """Register a new complaint in the initial state; returns it as ``actor`` sees it."""
        rules = self.rules
        arguments.refuse([_key_problem(idempotency_key)], context="request")
        self.check_actor(actor, rules)
        submit_roles = rules.definition.submit.roles
        if submit_roles != "*" and not actor.has_any(submit_roles):
            raise RoleNotAllowed("(new)", "submit", None,
                                 f"needs one of the roles {', '.join(submit_roles)}")
        values = self._check_submission(fields)
        compiled = self._versions[rules.version]
        severity = compiled.machine.severity(values, None)
        now = self.now()
        stored = {k: to_json(v) for k, v in values.items()}
        fingerprint = "" if idempotency_key is None else _fingerprint(
            op="submit", fields=stored, actor=actor.id, roles=actor.roles,
            department=actor.department)
        try:
            done = self._submit(values, stored, actor, idempotency_key, fingerprint, severity,
                                now)
        except IdempotencyConflict:
            # the key may have been stored by a concurrent request after this one looked
            # (PostgreSQL): answered as if this one came second, as on SQLite
            earlier = self._idempotent_again(idempotency_key, fingerprint, actor)
            if earlier is None:
                raise
            return earlier
        if isinstance(done, Complaint):
            return done
        event, complaint = done
        self.notify([CommittedEvent(event, complaint)])
        return self._masked(complaint, actor.roles)

    def _submit(self, values: dict[str, Any], stored: dict[str, Any], actor: Actor,
                idempotency_key: str | None, fingerprint: str, severity: str, now: datetime
                ) -> tuple[HistoryEvent, Complaint] | Complaint:
        """The submission's transaction; the earlier result for a replayed key."""
        rules = self.rules
        compiled = self._versions[rules.version]
        with db.write(self._db, idempotency_key=idempotency_key) as conn:
            earlier = self._idempotent(conn, idempotency_key, fingerprint, actor)
            if earlier is not None:
                return earlier
            number, scope, seq = self._next_number(conn, now)
            department = _index_value(values, rules.definition.department_field)
            handler = _index_value(values, rules.definition.handler_field)
            facts = Facts()
            facts.record(1, None, actor.id, None, rules.initial, now)
            complaint_id = conn.execute(_INSERT_COMPLAINT, {
                "number": number, "scope": scope, "seq": seq, "ruleset": rules.version,
                "state": rules.initial, "version": 1, "severity": severity,
                "severity_floor": None, "department": department, "handler": handler,
                "received_at": now, "updated_at": now, "fields": canonical(stored),
                "head_seq": 0, "head_hash": GENESIS, "facts": facts.to_text(),
            }).scalar_one()
            scope_fields = {**values, **compiled.builtins(number, now), "severity": severity,
                            "state": rules.initial}
            changes = sla.on_event(
                conn, compiled, self.calendar_lookup(conn), complaint_id, kind="receipt",
                trigger=None, from_state=None, to_state=rules.initial,
                scope=compiled.scope(scope_fields, actor, Facts(), now), now=now, runs=[])
            payload: dict[str, Any] = {"number": number, "fields": stored, "severity": severity}
            if changes:
                payload["timers"] = sla.summarise(changes)
            row, event = build_event(
                complaint_id=complaint_id, number=number, seq=1, prev_hash=GENESIS,
                type="submitted", trigger=None, from_state=None, to_state=rules.initial,
                actor=actor, now=now, payload=payload, ruleset=rules.version)
            conn.execute(_INSERT_EVENT, row)
            conn.execute(_UPDATE_COMPLAINT, {"b_id": complaint_id, "b_version": 1,
                                             "head_seq": 1, "head_hash": event.hash})
            if idempotency_key is not None:
                conn.execute(_INSERT_KEY, {"key": idempotency_key, "fingerprint": fingerprint,
                                           "complaint_id": complaint_id, "event_seq": 1,
                                           "created_at": now})
        return event, Complaint(number, rules.initial, 1, severity, values, now, now,
                                rules.version, department, handler)

    def fire(
        self,
        number: str,
        trigger: str,
        actor: Actor,
        data: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        *,
        idempotency_key: str | None = None,
        comment: str | None = None,
    ) -> Complaint:
        """Apply one transition atomically (state, version, fields, severity, timers and the
        history event in one transaction). Raises a ``TransitionRefused`` subclass naming the
        failed check, ``ConcurrentUpdate`` for a stale ``expected_version`` or a lost race."""
        problems: list[FieldProblem] = []
        if data is not None and not isinstance(data, Mapping):
            problems.append(FieldProblem("data", f"a mapping of field names to values, not "
                                                 f"{type(data).__name__}"))
            data = None
        elif data is not None and not all(isinstance(k, str) for k in data):
            problems.append(FieldProblem("data", "field names must be text"))
            data = None
        problems += self.actor_problems(actor)
        problems += [p for p in (
            arguments.text("number", number, "a complaint number"),
            arguments.text("trigger", trigger, "a trigger name"),
            arguments.text("comment", comment, "a comment", max_length=2000, optional=True,
                           empty=True),
            _key_problem(idempotency_key)) if p]
        if expected_version is not None and not _is_version(expected_version):
            problems.append(FieldProblem("expected_version", _VERSION_TEXT))
        if problems:
            raise InvalidInput(problems)
        data = dict(data or {})
        fingerprint = "" if idempotency_key is None else _fingerprint(
            op="fire", number=number, trigger=trigger, actor=actor.id, roles=actor.roles,
            department=actor.department, data=data, expected=expected_version, comment=comment)
        now = self.now()
        if self.dialect == "postgresql":
            done = self._fire_autocommit(number, trigger, actor, data, expected_version, now,
                                         comment, idempotency_key, fingerprint)
            if isinstance(done, Complaint):
                return done
            event, complaint = done
        else:
            done = self._fire_sqlite(number, trigger, actor, data, expected_version, now,
                                     comment, idempotency_key, fingerprint)
            if isinstance(done, Complaint):
                return done
            event, complaint = done
        self.notify([CommittedEvent(event, complaint)])
        return self._masked(complaint, actor.roles)

    def _check_fire(self, conn: ConnectionSource, row: Any, actor: Actor,
                    expected_version: int | None) -> None:
        # ``fire`` checked the rest of the actor (``actor_problems``) before reading the row
        problems = self._role_problems(actor, self.compiled(conn, row.ruleset).rules)
        if problems:
            raise InvalidInput(problems, context="actor")
        if expected_version is not None and expected_version != row.version:
            raise ConcurrentUpdate(row.number, expected_version, row.version)

    def _fire_autocommit(self, number: str, trigger: str, actor: Actor,
                         data: Mapping[str, Any], expected_version: int | None,
                         now: datetime, comment: str | None, key: str | None,
                         fingerprint: str) -> tuple[HistoryEvent, Complaint] | Complaint:
        """PostgreSQL: read the row (one statement, its own snapshot), decide, then send
        every write in one implicit transaction whose first statement re-checks the version
        and also writes the clocks stopped and started (``_pg_move``): one statement, or a
        pipeline when an idempotency key or re-derived clocks add more
        (``db.execute_pipeline``). Two round trips, no BEGIN/COMMIT. A version that moved in
        between raises ``ConcurrentUpdate`` and stores nothing, as a lost race inside one
        transaction would. A replayed idempotency key returns the first call's result (a
        Complaint), also when the first call won the race for the row meanwhile."""
        try:
            return self._fire_autocommit_once(number, trigger, actor, data, expected_version,
                                              now, comment, key, fingerprint)
        except ConcurrentUpdate:
            if key is None:
                raise
            # the winner may have been the same request (a retry racing the original): its
            # key committed with its write, so the key now answers as it would have
            earlier = self._idempotent_again(key, fingerprint, actor)
            if earlier is None:
                raise
            return earlier

    def _fire_autocommit_once(self, number: str, trigger: str, actor: Actor,
                              data: Mapping[str, Any], expected_version: int | None,
                              now: datetime, comment: str | None, key: str | None,
                              fingerprint: str) -> tuple[HistoryEvent, Complaint] | Complaint:
        assert self._autocommit_db is not None
        with db.autocommit(self._autocommit_db, number, idempotency_key=key) as conn:
            found = db.fetch_one(conn, _PG_SELECT_FOR_FIRE, {"number": number})
            if found is None:
                raise NotFound("complaint", number)
            row = SimpleNamespace(**dict(zip(_FIRE_ROW, found, strict=True)))
            # as UTCDateTime reads them
            row.received_at = row.received_at.astimezone(UTC)
            row.updated_at = row.updated_at.astimezone(UTC)
            earlier = self._idempotent(conn, key, fingerprint, actor)
            if earlier is not None:
                return earlier
            self._check_fire(conn, row, actor, expected_version)
            move = self._prepare(conn, row, trigger, actor, data, now, comment)
            writes = sla.pg_writes(move.timers, row.id, now)
            statements = [(_pg_move(writes.ctes), {
                "b_id": row.id, "b_version": row.version, **move.moved, **move.event_row,
                **writes.params})]
            if key is not None:
                statements.append((_PG_INSERT_KEY, {
                    "key": key, "fingerprint": fingerprint, "complaint_id": row.id,
                    "event_seq": move.event.seq, "created_at": now}))
            statements += writes.statements
            try:
                db.execute_pipeline(conn, statements)
            except sa.exc.DataError as exc:
                if _PG_VERSION_MOVED in str(exc.orig):
                    raise ConcurrentUpdate(number, row.version, None) from exc
                raise
        return move.event, move.complaint

    def _fire_sqlite(self, number: str, trigger: str, actor: Actor,
                     data: Mapping[str, Any], expected_version: int | None,
                     now: datetime, comment: str | None, key: str | None,
                     fingerprint: str) -> tuple[HistoryEvent, Complaint] | Complaint:
        """SQLite: read, decide and write in ONE ``BEGIN IMMEDIATE`` transaction (no one
        can move the row in between), every statement straight through the driver
        (``db.SqliteWriter``; a SQLAlchemy Connection only for a read the row does not
        cover): the same rows as ``transition`` writes, without SQLAlchemy's
        per-statement and per-transaction machinery. A replayed idempotency key returns the first
        call's result (a Complaint)."""
        stored = db.sqlite_datetime_in
        assert self._sqlite_writer is not None
        with self._sqlite_writer.transaction(number) as tx:
            cursor = tx.cursor
            found = cursor.execute(_SQLITE_SELECT_FOR_FIRE, {"number": number}).fetchone()
            if found is None:
                raise NotFound("complaint", number)
            row = SimpleNamespace(**dict(zip(_FIRE_ROW, found, strict=True)))
            row.received_at = db.sqlite_datetime_out(row.received_at)
            row.updated_at = db.sqlite_datetime_out(row.updated_at)
            if key is not None:
                earlier = self._idempotent(tx.connection(), key, fingerprint, actor)
                if earlier is not None:
                    return earlier
            self._check_fire(tx.connection, row, actor, expected_version)
            move = self._prepare(tx.connection, row, trigger, actor, data, now, comment)
            at = stored(now)
            moved = _changed(move.moved, row)
            moved["updated_at"] = at
            cursor.execute(_sqlite_move(tuple(moved)),
                           {"b_id": row.id, "b_version": row.version, **moved})
            if cursor.rowcount != 1:
                raise ConcurrentUpdate(number, row.version, None)
            cursor.execute(_SQLITE_APPEND, {**move.event_row, "occurred_at": at})
            if key is not None:
                cursor.execute(_SQLITE_INSERT_KEY, {
                    "key": key, "fingerprint": fingerprint, "complaint_id": row.id,
                    "event_seq": move.event.seq, "created_at": at})
            sla.apply_plan_sqlite(cursor, move.timers, row.id, now)
        return move.event, move.complaint

    def transition(self, conn: Connection, row: Any, trigger: str, actor: Actor,
                   data: Mapping[str, Any], now: datetime,
                   comment: str | None = None) -> tuple[HistoryEvent, Complaint]:
        """Guards, machine step, timers, event and row update inside ``conn``'s transaction.
        ``row`` is the complaint row as read in this transaction (with its ``facts`` column,
        or the history is replayed; with ``timer_runs``, or the timers are selected)."""
        move = self._prepare(conn, row, trigger, actor, data, now, comment)
        sla.apply_plan(conn, move.timers, row.id, now)
        if conn.dialect.name == "postgresql":
            updated = conn.execute(_MOVE_AND_APPEND, {
                "b_id": row.id, "b_version": row.version,
                **{f"c_{k}": v for k, v in move.moved.items()},
                **{f"e_{k}": v for k, v in move.event_row.items() if k != "complaint_id"},
            }).rowcount
        else:
            updated = conn.execute(_UPDATE_COMPLAINT, {"b_id": row.id,
                                                       "b_version": row.version,
                                                       **_changed(move.moved, row)}).rowcount
            if updated == 1:
                conn.execute(_INSERT_EVENT, move.event_row)
        if updated != 1:
            raise ConcurrentUpdate(row.number, row.version, None)
        return move.event, move.complaint

    def _prepare(self, conn: ConnectionSource, row: Any, trigger: str, actor: Actor,
                 data: Mapping[str, Any], now: datetime, comment: str | None) -> _Move:
        """Everything a transition decides, before anything is written: guards, machine
        step, the timer plan, the event and the new row values (reads only; ``conn`` is
        opened only for what ``row`` does not carry)."""
        number = row.number
        compiled = self.compiled(conn, row.ruleset)
        known = self._rows.fields(row.id, row.ruleset, row.fields)
        if known is None:
            raw = parse_canonical(row.fields)
            before = compiled.codec.decode(raw)
        else:
            raw, before = known
        facts = self._rows.facts(row.id, getattr(row, "facts", None))
        if facts is None:
            facts = self.facts_of(conn, row)
        elif facts.through < row.version:  # events appended by a writer that keeps no facts
            facts = self.facts(_opened(conn), row.id, facts, upto=row.version)
        builtins = compiled.builtins(number, row.received_at)
        step = compiled.machine.step(number, row.state, trigger, actor, before, builtins, facts,
                                     data, row.severity_floor, now)
        applied = {k: to_json(step.fields.get(k)) for k in data}
        # every field's stored form: what the data set, else the stored JSON itself where
        # decoding passed it through unchanged (text, integers, booleans, enums; to_json
        # gives them back as they are), else to_json of the decoded value
        if known is None:
            stored = {k: v if v is raw.get(k) and type(v) in _AS_STORED else to_json(v)
                      for k, v in step.fields.items() if v is not None and k not in data}
        else:  # raw is what this engine wrote: an unchanged value's stored form is raw's
            stored = {k: raw[k] if v is before.get(k) else to_json(v)
                      for k, v in step.fields.items() if v is not None and k not in data}
        stored.update((k, v) for k, v in applied.items() if v is not None)
        rules = compiled.rules
        department = _index_value(step.fields, rules.definition.department_field)
        handler = _index_value(step.fields, rules.definition.handler_field)
        seq = row.version + 1
        facts.record(seq, trigger, actor.id, row.state, step.to_state, now)
        timers = sla.TimerPlan()
        if compiled.timers.timers:
            runs_text = getattr(row, "timer_runs", None)
            runs = sla.timer_runs(runs_text) if runs_text is not None \
                else sla.select_timer_runs(_opened(conn), row.id)
            scope_fields = {**step.fields, **builtins, "severity": step.severity,
                            "state": step.to_state}
            timers = sla.plan_event(
                compiled, self.calendar_lookup(conn), kind="transition", trigger=trigger,
                from_state=row.state, to_state=step.to_state,
                scope=compiled.scope(scope_fields, actor, facts, now), now=now, runs=runs)
        payload: dict[str, Any] = {"set": applied, "severity": step.severity}
        if comment:
            payload["comment"] = comment
        if timers.changes:
            payload["timers"] = sla.summarise(timers.changes)
        event_row, event = build_event(
            complaint_id=row.id, number=number, seq=seq, prev_hash=row.head_hash,
            type="transition", trigger=trigger, from_state=row.state, to_state=step.to_state,
            actor=actor, now=now, payload=payload, ruleset=row.ruleset)
        moved = {
            "state": step.to_state, "version": seq, "severity": step.severity,
            "department": department, "handler": handler, "updated_at": now,
            "fields": canonical(stored), "head_seq": seq, "head_hash": event.hash,
            "facts": facts.to_text(),
        }
        self._rows.remember(row.id, RememberedRow(
            row.ruleset, moved["fields"],
            *compiled.codec.reread(stored, step.fields, None if known is None else data),
            moved["facts"], facts))
        complaint = Complaint(number, step.to_state, seq, step.severity,
                              {k: v for k, v in step.fields.items() if v is not None},
                              row.received_at, now, row.ruleset, department, handler,
                              escalated_to=row.escalated_to)
        return _Move(event_row, event, moved, timers, complaint)

    def append_event(self, conn: Connection, row: Any, *, type: str, actor: Actor,
                     payload: Mapping[str, Any], now: datetime, seq: int | None = None,
                     prev_hash: str | None = None) -> HistoryEvent:
        """Append a non-transition event (state unchanged) and advance the chain head."""
        seq = seq if seq is not None else row.version + 1
        prev = prev_hash if prev_hash is not None else row.head_hash
        event_row, event = build_event(
            complaint_id=row.id, number=row.number, seq=seq, prev_hash=prev, type=type,
            trigger=None, from_state=row.state, to_state=row.state, actor=actor, now=now,
            payload={**payload, "severity": payload.get("severity", row.severity)},
            ruleset=row.ruleset)
        # trigger None and the state unchanged: the facts column stays right as it is
        updated = conn.execute(_UPDATE_COMPLAINT, {
            "b_id": row.id, "b_version": seq - 1, "version": seq, "head_seq": seq,
            "head_hash": event.hash, "updated_at": now,
        }).rowcount
        if updated != 1:
            raise ConcurrentUpdate(row.number, seq - 1, None)
        conn.execute(_INSERT_EVENT, event_row)
        return event

    # -- timers ----------------------------------------------------------------------------

    def extend_timer(
        self,
        number: str,
        timer: str,
        actor: Actor,
        amount: int,
        consent: Consent,
        *,
        reason: str,
        expected_version: int | None = None,
    ) -> list[TimerView]:
        """Extend a running clock by ``amount`` of its own unit. Needs the customer's
        recorded consent, and is refused (:class:`TimerRefused`, nothing stored) once the
        clock has breached: when a breach is recorded, and also when its due instant is at
        or before now (or before the consent was given) though the scheduler has not fired
        it yet. Writes two history events (the consent, then the extension) in one
        transaction."""
        now = self.now()
        problems = [p for p in (arguments.text("number", number, "a complaint number"),
                                arguments.text("timer", timer, "a timer id")) if p]
        problems += self.actor_problems(actor)
        problems += consent.problems(now) if isinstance(consent, Consent) else [
            FieldProblem("consent", "the customer's consent is required")]
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            problems.append(FieldProblem("amount", "a positive whole number"))
        elif amount > max(MAX_DURATION.values()):
            problems.append(FieldProblem("amount", "at most 100 years of the clock's unit"))
        if not isinstance(reason, str) or is_blank(reason):
            problems.append(FieldProblem("reason", "required"))
        elif (problem := arguments.text("reason", reason, "a reason")) is not None:
            problems.append(problem)
        if expected_version is not None and not _is_version(expected_version):
            problems.append(FieldProblem("expected_version", _VERSION_TEXT))
        if problems:
            raise InvalidInput(problems, context="extension")
        with db.write(self._db, number) as conn:
            row = conn.execute(sa.select(C).where(C.c.number == number)).first()
            if row is None:
                raise NotFound("complaint", number)
            compiled = self.compiled(conn, row.ruleset)
            self.check_actor(actor, compiled.rules)
            if expected_version is not None and expected_version != row.version:
                raise ConcurrentUpdate(number, expected_version, row.version)
            compiled_timer = compiled.timers.by_id.get(timer)
            if compiled_timer is None:
                raise NotFound("timer", timer, compiled.timers.by_id)
            tdef = compiled_timer.definition
            trow = conn.execute(sa.select(T).where(
                T.c.complaint_id == row.id, T.c.timer == timer, T.c.status != "stopped")).first()
            if trow is None:
                raise TimerRefused(number, timer, "the clock is not running")
            if not tdef.extendable:
                raise TimerRefused(number, timer, "the rule file does not allow extending it")
            if tdef.extend_roles and not actor.has_any(tdef.extend_roles):
                raise TimerRefused(number, timer,
                                   f"needs one of the roles {', '.join(tdef.extend_roles)}")
            too_late = self._extension_too_late(conn, trow, consent.given_at, now)
            if too_late is not None:
                raise TimerRefused(number, timer, too_late)
            ledger = Ledger.from_text(trow.ledger)
            if ledger.budget + amount > MAX_DURATION.get(ledger.unit, 0):
                raise InvalidInput([FieldProblem(
                    "amount", f"the budget would exceed 100 years "
                              f"({MAX_DURATION.get(ledger.unit, 0)} {ledger.unit})")],
                    context="extension")
            consent_event = self.append_event(conn, row, type="customer_consent", actor=actor,
                                              payload={"timer": timer, "consent":
                                                       consent.to_json()}, now=now)
            ledger.extensions.append({"amount": amount, "unit": ledger.unit, "at": to_json(now),
                                      "by": actor.id, "reason": reason,
                                      "consent_seq": consent_event.seq})
            calendars = self.calendar_lookup(conn)
            due = compiled.timers.derive(compiled_timer, ledger,
                                         calendars(ledger.calendar, ledger.calendar_version))
            conn.execute(sa.update(T).where(T.c.id == trow.id).values(
                ledger=ledger.to_text(), due_at=due.breach, provisional=due.provisional))
            sla.replace_deadlines(conn, trow.id, row.id, due, now)
            extended = self.append_event(
                conn, row, type="timer_extended", actor=actor, now=now,
                seq=consent_event.seq + 1, prev_hash=consent_event.hash,
                payload={"timer": timer, "run": trow.run, "amount": amount,
                         "unit": ledger.unit, "reason": reason,
                         "previous_due_at": to_json(trow.due_at),
                         **{k: v for k, v in timer_payload(compiled_timer, ledger, due).items()
                            if k in ("due_at", "provisional", "budget")}})
        self.notify([CommittedEvent(consent_event, None), CommittedEvent(extended, None)])
        return self.timers(number)

    def shown(self, moment: datetime) -> str:
        """``moment`` as people read it in messages: in the rules' zone, to the minute (to
        the second when it has seconds)."""
        arguments.refuse([arguments.moment("moment", moment)])
        local = moment.astimezone(self._zone)
        spec = "minutes" if local.second == local.microsecond == 0 else "seconds"
        return f"{local.isoformat(sep=' ', timespec=spec)} ({self._zone.key})"

    def _extension_too_late(self, conn: Connection, trow: Any, given_at: datetime,
                            now: datetime) -> str | None:
        """Why an extension of the clock run ``trow`` comes too late, if it does: its breach
        is recorded; or it is due at or before now, fired or not (the scheduler may be
        behind; a clock paused after its due instant keeps that breach pending); or the
        consent was given after the due instant."""
        if trow.breached_at is not None:
            return "the deadline has already passed: an extension must be agreed in advance"
        pending: datetime | None = trow.due_at
        passed = pending if pending is not None and pending <= now else conn.execute(
            sa.select(sa.func.min(D.c.due_at)).where(
                D.c.timer_id == trow.id, D.c.kind == "breach", D.c.due_at <= now)).scalar()
        if passed is not None:
            return (f"the deadline {self.shown(passed)} has already passed (the breach is not "
                    f"recorded yet): an extension must be agreed in advance")
        # implied today (a consent cannot lie in the future), stated for its own sake
        if pending is not None and given_at > pending:
            return (f"the customer's consent ({self.shown(given_at)}) came after the deadline "
                    f"{self.shown(pending)}: an extension must be agreed in advance")
        return None

    def timers(self, number: str) -> list[TimerView]:
        """Every clock run of the complaint with its derived state, as of now."""
        self._check_lookup(number, None)
        now = self.now()
        with db.read(self._db) as conn:
            row = conn.execute(sa.select(C.c.id, C.c.ruleset).where(C.c.number == number)
                               ).first()
            if row is None:
                raise NotFound("complaint", number)
            return self._timer_views(conn, row.id, row.ruleset, now)

    def list_timers(self, *, status: str | None = None, breached: bool | None = None,
                    due_before: datetime | None = None, limit: int = 100,
                    offset: int = 0) -> list[tuple[str, TimerView]]:
        """Clock runs across complaints (default: all not stopped), soonest due first."""
        arguments.refuse([
            None if status is None or (isinstance(status, str) and status in _TIMER_STATUSES)
            else FieldProblem("status", "running, paused or stopped, or None"
                              + (hint(status, _TIMER_STATUSES) if isinstance(status, str)
                                 else "")),
            arguments.flag("breached", breached, optional=True),
            arguments.moment("due_before", due_before, optional=True),
            arguments.integer("limit", limit, 1, 10_000),
            arguments.integer("offset", offset, 0, _MAX_OFFSET),
        ])
        now = self.now()
        where: list[Any] = [T.c.status == status] if status else [T.c.status != "stopped"]
        if breached is not None:
            where.append(T.c.breached_at.is_not(None) if breached else
                         T.c.breached_at.is_(None))
        if due_before is not None:
            where.append(T.c.due_at < due_before)
        with db.read(self._db) as conn:
            rows = conn.execute(
                sa.select(T, C.c.number, C.c.ruleset).join(C, C.c.id == T.c.complaint_id)
                .where(*where).order_by(T.c.due_at.is_(None), T.c.due_at, T.c.id)
                .limit(limit).offset(offset)).all()
            return [(r.number, self._timer_view(conn, r, r.ruleset, now)) for r in rows]

    def _timer_views(self, conn: Connection, complaint_id: int, version: str,
                     now: datetime) -> list[TimerView]:
        return [self._timer_view(conn, t, version, now) for t in conn.execute(
            sa.select(T).where(T.c.complaint_id == complaint_id).order_by(T.c.id))]

    def _timer_view(self, conn: Connection, t: Any, version: str, now: datetime) -> TimerView:
        compiled = self.compiled(conn, version)
        ledger = Ledger.from_text(t.ledger)
        cal = self.calendar_lookup(conn)(ledger.calendar, ledger.calendar_version)
        remaining: timedelta | None = None
        if t.status == "running" and t.due_at is not None:
            if ledger.unit.startswith("working") and cal is not None:
                remaining = cal.between(now, t.due_at)
            else:
                remaining = t.due_at - now
        ctimer = compiled.timers.by_id.get(t.timer)
        return TimerView(
            timer=t.timer, label=ctimer.definition.label.zh if ctimer else t.timer,
            run=t.run, status=t.status, started_at=ledger.started_at, due_at=t.due_at,
            provisional=t.provisional, warned=t.warned, breached_at=t.breached_at,
            stopped_at=t.stopped_at, unit=ledger.unit, budget=ledger.budget,
            remaining=remaining, pauses=tuple(tuple(p) for p in ledger.pauses),
            extensions=tuple(ledger.extensions),
        )

    def recompute_timers(self, actor: Actor | None = None) -> list[dict[str, Any]]:
        """Re-derive every open clock with the current rule set's calendars (after calendar
        data changed); pauses and extensions are kept.

        A clock that counts working time moves to the current rule set's calendar of the
        same id when that calendar's declaration differs from the one it counts on (a
        clock in elapsed units, or on an unchanged calendar, stays where it is). Each
        moved clock, and each clock whose deadlines changed, gets one
        ``deadline_recomputed`` history event and one entry in the returned report. A
        clock can move while its due instant stays (paused, or the change lies after its
        deadline): its event then has ``previous_due_at == due_at`` and records the new
        ``calendar_version``, so a later resume or extension counts on the new calendar
        and replay knows which calendar the clock counts on. Running it again changes
        nothing. Under the ``error`` policy a year without data raises and changes
        nothing."""
        if actor is not None:
            self.check_actor(actor, self.rules)
        actor = actor or Actor("system:recompute", ())
        now = self.now()
        current = self._versions[self.rules.version]
        report: list[dict[str, Any]] = []
        committed: list[CommittedEvent] = []
        with db.write(self._db) as conn:
            calendars = self.calendar_lookup(conn)
            rows = conn.execute(sa.select(T, C.c.number).join(C, C.c.id == T.c.complaint_id)
                                .where(T.c.status != "stopped").order_by(T.c.complaint_id,
                                                                         T.c.id)).all()
            for t in rows:
                crow = conn.execute(sa.select(C).where(C.c.id == t.complaint_id)).one()
                compiled = self.compiled(conn, crow.ruleset)
                ctimer = compiled.timers.by_id.get(t.timer)
                if ctimer is None:
                    continue
                ledger = Ledger.from_text(t.ledger)
                moved = self._move_to_current_calendar(ctimer, ledger, current, calendars)
                due = compiled.timers.derive(
                    ctimer, ledger, calendars(ledger.calendar, ledger.calendar_version))
                rows = conn.execute(sa.select(D.c.kind, D.c.idx, D.c.due_at, D.c.fired_at)
                                    .where(D.c.timer_id == t.id)).all()
                # fired rows and rows already past due (they fire late, once) are settled
                settled = {(r.kind, r.idx) for r in rows
                           if r.fired_at is not None or r.due_at <= now}
                pending = {(r.kind, r.idx, r.due_at) for r in rows
                           if (r.kind, r.idx) not in settled}
                wanted = {("warning", i, at) for i, at in due.warnings
                          if ("warning", i) not in settled}
                if due.breach is not None and ("breach", 0) not in settled:
                    wanted.add(("breach", 0, due.breach))
                if not moved and due.breach == t.due_at and due.provisional == t.provisional \
                        and pending == wanted:
                    continue
                conn.execute(sa.update(T).where(T.c.id == t.id).values(
                    ledger=ledger.to_text(), due_at=due.breach, provisional=due.provisional))
                sla.replace_deadlines(conn, t.id, t.complaint_id, due, now)
                change = {"timer": t.timer, "run": t.run, "previous_due_at": to_json(t.due_at),
                          "due_at": to_json(due.breach), "provisional": due.provisional,
                          "warnings": [to_json(at) for _, at in due.warnings],
                          "previous_provisional": t.provisional,
                          "calendar_version": ledger.calendar_version}
                event = self.append_event(conn, crow, type="deadline_recomputed", actor=actor,
                                          payload=change, now=now)
                committed.append(CommittedEvent(event, None))
                report.append({"number": crow.number, **change})
        self.notify(committed)
        return report

    @staticmethod
    def _move_to_current_calendar(ctimer: CompiledTimer, ledger: Ledger, current: Compiled,
                                  calendars: sla.CalendarLookup) -> bool:
        """Point ``ledger`` at the current rule set's calendar if the clock can count
        working time and that calendar is declared differently from the one it counts on;
        whether it moved."""
        name = ledger.calendar
        if name is None or ledger.calendar_version == current.version \
                or not ctimer.counts_working_time:
            return False
        new = current.calendars.get(name)
        old = calendars(name, ledger.calendar_version)
        if new is None or (old is not None and old.spec == new.spec):
            return False
        ledger.calendar_version = current.version
        return True

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def facts(conn: Connection, complaint_id: int, start: Facts | None = None,
              upto: int | None = None) -> Facts:
        """The history facts, replayed from every event of the complaint (or, given
        ``start``, from the events after ``start.through`` onto it), up to the event
        ``upto`` if given (the row's version: events a concurrent writer appended after
        the row was read are not the row's)."""
        facts = start if start is not None else Facts()
        for ev in conn.execute(_SELECT_FACTS, {"b_complaint": complaint_id,
                                               "b_after": facts.through,
                                               "b_upto": 2**31 - 1 if upto is None else upto}):
            facts.record(ev.seq, ev.trigger, ev.actor_id, ev.from_state, ev.to_state,
                         ev.occurred_at)
        return facts

    @classmethod
    def facts_of(cls, conn: ConnectionSource, row: Any) -> Facts:
        """The history facts of a complaint row: its ``facts`` column, caught up with any
        events after the last one it folded in (appended by a writer that does not keep the
        column), or replayed in full (NULL: written before the column existed, or a row
        selected without it); never past the row's version."""
        text = getattr(row, "facts", None)
        if text is None:
            return cls.facts(_opened(conn), row.id, upto=row.version)
        facts = Facts.from_text(text)
        if facts.through < row.version:
            facts = cls.facts(_opened(conn), row.id, facts, upto=row.version)
        return facts

    def _masked(self, complaint: Complaint, roles: tuple[str, ...] | None) -> Complaint:
        codec = self._versions[complaint.ruleset].codec
        fields, hidden = codec.mask(complaint.fields, roles)
        if not hidden:
            return complaint
        return Complaint(complaint.number, complaint.state, complaint.version,
                         complaint.severity, fields, complaint.received_at,
                         complaint.updated_at, complaint.ruleset, complaint.department,
                         complaint.handler, hidden, complaint.escalated_to)

    def _view(self, codec: FieldCodec, row: Any, roles: tuple[str, ...] | None,
              **override: Any) -> Complaint:
        values = override.get("fields")
        if values is None:
            values = codec.decode(row.fields)
        complaint = Complaint(
            row.number, override.get("state", row.state), override.get("version", row.version),
            override.get("severity", row.severity), values, row.received_at,
            override.get("updated_at", row.updated_at), row.ruleset, row.department,
            row.handler, (), row.escalated_to,
        )
        return self._masked(complaint, roles)

    def _check_lookup(self, number: Any, actor: Any, *, optional: bool = True) -> None:
        """A complaint number is text and the reader an ``Actor`` (or ``None`` if
        ``optional``) whose roles the rules declare."""
        problem = arguments.text("number", number, "a complaint number")
        problems = [problem] if problem else []
        problems += self._reader_problems(actor, optional)
        if problems:
            raise InvalidInput(problems)

    def _reader_problems(self, actor: Any, optional: bool = True) -> list[FieldProblem]:
        """A reader is an ``Actor`` (or ``None``) with declared roles: a misspelt role would
        only see masked data, silently."""
        if actor is None and optional:
            return []
        if not isinstance(actor, Actor):
            return [FieldProblem("actor", "an Actor or None" if optional
                                 else "expected an Actor")]
        roles = self.rules.roles
        return [FieldProblem("actor.roles", f"unknown role {role!r}" + hint(role, roles))
                for role in actor.roles if role not in roles]

    def get(self, number: str, actor: Actor | None = None) -> Complaint:
        """The complaint as ``actor`` may see it (``None``: personal data masked)."""
        self._check_lookup(number, actor)
        with db.read(self._db) as conn:
            row = conn.execute(sa.select(C).where(C.c.number == number)).first()
            if row is None:
                raise NotFound("complaint", number)
            return self._view(self.compiled(conn, row.ruleset).codec, row,
                              actor.roles if actor else None)

    def history(self, number: str, actor: Actor | None = None) -> list[HistoryEvent]:
        """Every event of the complaint, oldest first, personal data masked unless
        ``actor`` may read it."""
        self._check_lookup(number, actor)
        with db.read(self._db) as conn:
            row = conn.execute(sa.select(C.c.id, C.c.ruleset).where(C.c.number == number)
                               ).first()
            if row is None:
                raise NotFound("complaint", number)
            rows = conn.execute(sa.select(E).where(E.c.complaint_id == row.id)
                                .order_by(E.c.seq)).all()
            return [self.mask_event(self.event_view(number, ev, conn), actor) for ev in rows]

    def event_view(self, number: str, ev: Any, conn: Connection | None = None) -> HistoryEvent:
        """A stored event row as a (complete, unmasked) view, its payload upcast. A payload
        or roles column that is not the JSON the engine writes raises ``IntegrityError``."""
        payload = upcast(_stored_json(ev.payload, dict, "payload", number, ev.seq),
                         ev.schema_version)
        roles = _stored_json(ev.actor_roles, list, "actor roles", number, ev.seq)
        if conn is not None:
            self.compiled(conn, ev.ruleset)
        return HistoryEvent(number, ev.seq, ev.type, ev.trigger, ev.from_state, ev.to_state,
                            ev.actor_id, tuple(roles), ev.actor_department,
                            ev.occurred_at, payload, ev.ruleset, ev.schema_version,
                            ev.prev_hash, ev.hash)

    def mask_event(self, event: HistoryEvent, actor: Actor | None) -> HistoryEvent:
        """``event`` with personal data masked unless ``actor`` may read it, by the personal
        fields and readers of the rule version the event was recorded under (``NotFound``
        if the database does not hold it: never masked by other rules)."""
        arguments.refuse([
            None if isinstance(event, HistoryEvent) else FieldProblem("event", "a HistoryEvent"),
            None if actor is None or isinstance(actor, Actor)
            else FieldProblem("actor", "an Actor, or None")])
        compiled = self._versions.get(event.ruleset)
        if compiled is None:  # not read by this engine yet (not: the current rules)
            with db.read(self.database) as conn:
                compiled = self.compiled(conn, event.ruleset)
        rules = compiled.rules
        if actor is not None and rules.may_read_personal(actor.roles):
            return event
        personal = rules.personal_fields
        original = event.payload
        masked = [key for key in ("fields", "set")
                  if key in original and not personal.isdisjoint(original[key])]
        consent = original.get("consent")
        if not masked and not isinstance(consent, dict):
            return event  # nothing personal in it: no copy
        payload = dict(original)
        for key in masked:
            payload[key] = {k: (mask_value(v) if k in personal else v)
                            for k, v in payload[key].items()}
        if isinstance(consent, dict):  # the customer's contact who agreed
            consent = dict(consent)
            consent["given_by"] = mask_value(consent.get("given_by"))
            payload["consent"] = consent
        return replace(event, payload=payload)

    def find(
        self,
        *,
        state: str | Iterable[str] | None = None,
        severity: str | None = None,
        department: str | None = None,
        handler: str | None = None,
        received_between: tuple[datetime | None, datetime | None] | None = None,
        limit: int = 50,
        offset: int = 0,
        actor: Actor | None = None,
    ) -> Page:
        """Complaints matching every given filter, oldest first, one page at a time."""
        problems = [p for p in (arguments.integer("limit", limit, 1, 10_000),
                                arguments.integer("offset", offset, 0, _MAX_OFFSET)) if p]
        problems += self._reader_problems(actor)
        where: list[Any] = []
        if state is not None:
            states = [state] if isinstance(state, str) else list(state) \
                if isinstance(state, Iterable) else [state]
            problem = next((p for p in (arguments.text("state", s, "a state id or a list of them",
                                                       empty=True) for s in states) if p), None)
            if problem is None:
                where.append(C.c.state.in_(states))
            else:
                problems.append(problem)
        for name, value, column in (("severity", severity, C.c.severity),
                                    ("department", department, C.c.department),
                                    ("handler", handler, C.c.handler)):
            if value is None:
                continue
            problem = arguments.text(name, value, empty=True)
            if problem is None:
                where.append(column == value)
            else:
                problems.append(problem)
        if received_between is not None and (not isinstance(received_between, tuple | list)
                                             or len(received_between) != 2):
            problems.append(FieldProblem("received_between", "a pair (from, to) of aware "
                                                             "datetimes or None"))
        elif received_between is not None:
            start, end = received_between
            for name, moment in (("from", start), ("to", end)):
                if moment is not None and (not isinstance(moment, datetime)
                                           or moment.tzinfo is None):
                    problems.append(FieldProblem(f"received_between.{name}",
                                                 "an aware datetime"))
            if not problems:
                if start is not None:
                    where.append(C.c.received_at >= start)
                if end is not None:
                    where.append(C.c.received_at < end)
        if problems:
            raise InvalidInput(problems, context="search")
        with db.read(self._db) as conn:
            self._check_filters(conn, states if state is not None else (), severity,
                                department)
            total = conn.execute(sa.select(sa.func.count()).select_from(C).where(*where)
                                 ).scalar_one()
            rows = conn.execute(sa.select(C).where(*where).order_by(C.c.id)
                                .limit(limit).offset(offset)).all()
            roles = actor.roles if actor else None
            items = tuple(self._view(self.compiled(conn, r.ruleset).codec, r, roles)
                          for r in rows)
        return Page(items, total, limit, offset)

    def _check_filters(self, conn: Connection, states: Iterable[str], severity: str | None,
                       department: str | None) -> None:
        """Refuse a state, severity or department no stored rule set knows: a misspelt
        filter would otherwise match nothing and look like an empty result."""
        def known() -> Iterator[RuleSet]:
            yield self.rules
            for version in conn.execute(sa.select(R.c.hash).order_by(R.c.hash)).scalars():
                if version != self.rules.version:
                    yield self.compiled(conn, version).rules

        def departments(rules: RuleSet) -> tuple[str, ...] | None:
            name = rules.definition.department_field
            fdef = rules.fields.get(name) if name else None
            return tuple(fdef.values) if fdef is not None and fdef.type == "enum" \
                and fdef.values else None

        Among = Callable[[RuleSet], tuple[str, ...] | None]
        wanted: list[tuple[str, str, Among]] = [
            ("state", s, lambda r: tuple(r.states)) for s in states]
        if severity is not None:
            wanted.append(("severity", severity, lambda r: r.severity_levels))
        if department is not None:
            wanted.append(("department", department, departments))
        problems: list[FieldProblem] = []
        for name, value, among in wanted:
            seen: set[str] = set()
            free = False  # some rule set takes any text here
            for rules in known():
                values = among(rules)
                if values is None:
                    free = True
                    break
                if value in values:
                    break
                seen.update(values)
            else:
                if not free:
                    problems.append(FieldProblem(name, f"{value!r} is declared by no rule set "
                                                 f"in use" + hint(value, seen)))
        if problems:
            raise InvalidInput(problems, context="search")

    def available_triggers(self, number: str, actor: Actor) -> list[TriggerOption]:
        """Every transition out of the current state, allowed or not (with the failing check
        and reason), for building the host's buttons."""
        self._check_lookup(number, actor, optional=False)
        now = self.now()
        with db.read(self._db) as conn:
            row = conn.execute(sa.select(C).where(C.c.number == number)).first()
            if row is None:
                raise NotFound("complaint", number)
            compiled = self.compiled(conn, row.ruleset)
            self.check_actor(actor, compiled.rules)
            fields = compiled.codec.decode(row.fields)
            return compiled.machine.options(
                number, row.state, actor, fields, compiled.builtins(number, row.received_at),
                self.facts_of(conn, row), row.severity_floor, now)

    def next_due(self) -> datetime | None:
        """The earliest pending deadline (warning or breach), if any."""
        with db.read(self._db) as conn:
            found: datetime | None = conn.execute(
                sa.select(sa.func.min(D.c.due_at)).where(D.c.fired_at.is_(None))).scalar()
            return found

    def verify(self, *, deep: bool = False, since: datetime | None = None,
               progress: Callable[[int], None] | None = None) -> VerificationReport:
        """Recompute every hash chain and compare each complaint row with its history. With
        ``deep``: also re-run every transition through the guards of the rule version it
        was decided under and check warnings and breaches against the clocks; ``since``
        (an aware datetime, deep only) limits that to complaints changed since then or with
        a warning or breach due since then."""
        check_options(deep=deep, since=since, progress=progress)
        if deep:
            from complaintflow.audit import deep_verify

            return deep_verify(self, since=since, progress=progress)
        with db.read(self._db) as conn:
            return verify_all(conn, progress=progress, index_fields=self._index_fields(conn))

    def _index_fields(self, conn: Connection) -> IndexFields:
        def fields(version: str) -> VersionFacts:
            d = self.compiled(conn, version).rules.definition
            return VersionFacts(d.department_field, d.handler_field, d.number_pattern)

        return fields

    def replay(self, number: str, at: datetime | None = None,
               actor: Actor | None = None) -> Replayed:
        """The complaint rebuilt from its history and pinned rule versions as of ``at``
        (state, fields, severity, timers); never reads the current-state row."""
        from complaintflow.audit import replay

        self._check_lookup(number, actor)
        return replay(self, number, at, actor)
