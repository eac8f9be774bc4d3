"""The embedding contract: ``Engine.open(...)``, then submit, fire, read, verify.

Every state change, its history event and its side effects commit in ONE transaction;
observers run after the commit and can neither undo nor block it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row
from sqlalchemy.engine import Engine as SAEngine

from complaintflow.actor import Actor
from complaintflow.clock import Clock, now_from, system_clock
from complaintflow.errors import (
    ConcurrentUpdate,
    FieldProblem,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    RoleNotAllowed,
)
from complaintflow.rules.loader import load_rules, parse_rules
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.values import ValueProblem, check_field, to_json
from complaintflow.states.conditions import Facts
from complaintflow.states.machine import ComplaintMachine, TriggerOption
from complaintflow.storage import db
from complaintflow.storage.hashing import GENESIS, canonical, event_hash
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import idempotency_keys as K
from complaintflow.storage.tables import number_sequences as N
from complaintflow.storage.tables import rulesets as R
from complaintflow.verify import VerificationReport, verify_all
from complaintflow.views import Complaint, FieldCodec, HistoryEvent, Page, mask_value

__all__ = ["EVENT_SCHEMA_VERSION", "CommittedEvent", "Engine"]

log = logging.getLogger("complaintflow")

#: Version of the event payload layout; older versions are upcast when read.
EVENT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CommittedEvent:
    """What observers receive after a commit (unmasked: observers are the host itself)."""

    event: HistoryEvent
    complaint: Complaint


Observer = Callable[[CommittedEvent], None]


def _insert_ignore(conn: Connection, table: sa.Table, values: Mapping[str, Any]) -> None:
    dialect = conn.dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    conn.execute(stmt)


def _fingerprint(**parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Engine:
    """A complaint engine bound to one database and one current rule set."""

    def __init__(self, sa_engine: SAEngine, rules: RuleSet, clock: Clock) -> None:
        self._db = sa_engine
        self.rules = rules
        self._clock = clock
        self._machines: dict[str, ComplaintMachine] = {rules.version: ComplaintMachine(rules)}
        self._codecs: dict[str, FieldCodec] = {rules.version: FieldCodec(rules)}
        self._observers: list[Observer] = []
        self._lock = threading.Lock()
        self._zone = ZoneInfo(rules.definition.timezone)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str = "sqlite:///complaints.db",
        rules: RuleSet | str | Path | None = None,
        clock: Clock | None = None,
        *,
        loaded_by: str | None = None,
    ) -> Engine:
        """Open (creating or upgrading the schema) with ``rules`` (a path, a loaded
        ``RuleSet``, or ``None`` for the shipped default) and ``clock`` (default: system)."""
        ruleset = rules if isinstance(rules, RuleSet) else load_rules(rules)
        clock = clock or system_clock
        sa_engine = db.connect(url)
        try:
            with db.write(sa_engine) as conn:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727001)")
                from alembic import command

                command.upgrade(db.alembic_config(conn), "head")
                _insert_ignore(conn, R, {
                    "hash": ruleset.version, "name": ruleset.name[:200],
                    "source": ruleset.source[:500], "text": ruleset.text,
                    "loaded_at": now_from(clock), "loaded_by": loaded_by,
                })
        except BaseException:
            sa_engine.dispose()
            raise
        return cls(sa_engine, ruleset, clock)

    def close(self) -> None:
        self._db.dispose()

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

    def now(self) -> datetime:
        return now_from(self._clock)

    # -- observers -------------------------------------------------------------------------

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` after every committed event; returns an unsubscribe function.
        An exception in an observer is logged and never undoes or blocks a transition."""
        with self._lock:
            self._observers.append(observer)

        def unsubscribe() -> None:
            with self._lock:
                if observer in self._observers:
                    self._observers.remove(observer)

        return unsubscribe

    def _notify(self, committed: Iterable[CommittedEvent]) -> None:
        with self._lock:
            observers = list(self._observers)
        for item in committed:
            for observer in observers:
                try:
                    observer(item)
                except Exception:
                    log.exception("observer %r failed on %s #%d", observer,
                                  item.event.number, item.event.seq)

    # -- rule-set versions -----------------------------------------------------------------

    def _machine(self, conn: Connection, version: str) -> ComplaintMachine:
        machine = self._machines.get(version)
        if machine is None:
            text = conn.execute(sa.select(R.c.text, R.c.source).where(R.c.hash == version)).first()
            if text is None:
                raise NotFound("rule set", version)
            ruleset = parse_rules(text.text, text.source)
            machine = self._machines[version] = ComplaintMachine(ruleset)
            self._codecs[version] = FieldCodec(ruleset)
        return machine

    def _codec(self, conn: Connection, version: str) -> FieldCodec:
        self._machine(conn, version)
        return self._codecs[version]

    # -- input checks ----------------------------------------------------------------------

    def _check_actor(self, actor: Actor, rules: RuleSet) -> None:
        problems = []
        if not isinstance(actor, Actor):
            raise InvalidInput([FieldProblem("actor", "expected an Actor")], context="actor")
        if not actor.id or not isinstance(actor.id, str) or len(actor.id) > 200:
            problems.append(FieldProblem("actor.id", "a non-empty id of at most 200 characters"))
        unknown = [r for r in actor.roles if r not in rules.roles]
        if unknown:
            problems.append(FieldProblem("actor.roles", f"unknown roles {', '.join(unknown)}"))
        if problems:
            raise InvalidInput(problems, context="actor")

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
                problems.append(FieldProblem(str(name), "no such field"))
            elif allowed != "*" and name not in allowed:
                problems.append(FieldProblem(name, "cannot be given at submission"))
            elif raw is not None:
                try:
                    values[name] = check_field(fdef, raw)
                except ValueProblem as exc:
                    problems.append(FieldProblem(name, str(exc)))
        for fdef in rules.definition.fields:
            if fdef.required and values.get(fdef.id) in (None, "", ()) and not any(
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
        _insert_ignore(conn, N, {"scope": scope, "value": 0})
        seq = conn.execute(
            sa.update(N).where(N.c.scope == scope).values(value=N.c.value + 1)
            .returning(N.c.value)
        ).scalar_one()
        return pattern.format(year=year, seq=seq), scope, seq

    def _append(
        self,
        conn: Connection,
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
    ) -> HistoryEvent:
        roles_text = canonical(list(actor.roles))
        payload_text = canonical(payload)
        digest = event_hash(
            number=number, seq=seq, type=type, trigger=trigger, from_state=from_state,
            to_state=to_state, actor_id=actor.id, actor_roles=roles_text,
            actor_department=actor.department, occurred_at=now, payload=payload_text,
            ruleset=ruleset, schema_version=EVENT_SCHEMA_VERSION, prev_hash=prev_hash,
        )
        conn.execute(sa.insert(E).values(
            complaint_id=complaint_id, seq=seq, type=type, trigger=trigger,
            from_state=from_state, to_state=to_state, actor_id=actor.id,
            actor_roles=roles_text, actor_department=actor.department, occurred_at=now,
            payload=payload_text, ruleset=ruleset, schema_version=EVENT_SCHEMA_VERSION,
            prev_hash=prev_hash, hash=digest,
        ))
        return HistoryEvent(number, seq, type, trigger, from_state, to_state, actor.id,
                            actor.roles, actor.department, now, dict(payload), ruleset,
                            EVENT_SCHEMA_VERSION, prev_hash, digest)

    def _replayed(self, conn: Connection, key: Row[Any], actor: Actor) -> Complaint:
        """The result of the first call with an idempotency key, rebuilt from history."""
        row = conn.execute(sa.select(C).where(C.c.id == key.complaint_id)).one()
        events = conn.execute(
            sa.select(E.c.to_state, E.c.payload, E.c.occurred_at)
            .where(E.c.complaint_id == key.complaint_id, E.c.seq <= key.event_seq)
            .order_by(E.c.seq)
        ).all()
        fields: dict[str, Any] = {}
        severity = row.severity
        for ev in events:
            payload = json.loads(ev.payload)
            fields.update(payload.get("fields", {}))
            fields.update(payload.get("set", {}))
            severity = payload.get("severity", severity)
        codec = self._codec(conn, row.ruleset)
        return self._view(codec, row, actor.roles, fields=codec.decode(fields),
                          state=events[-1].to_state, version=key.event_seq, severity=severity,
                          updated_at=events[-1].occurred_at)

    def _idempotent(self, conn: Connection, key: str | None, fingerprint: str,
                    actor: Actor) -> Complaint | None:
        if key is None:
            return None
        if not isinstance(key, str) or not 1 <= len(key) <= 200:
            raise InvalidInput([FieldProblem("idempotency_key", "1 to 200 characters")],
                               context="request")
        found = conn.execute(sa.select(K).where(K.c.key == key)).first()
        if found is None:
            return None
        if found.fingerprint != fingerprint:
            raise IdempotencyConflict(key)
        return self._replayed(conn, found, actor)

    def submit(self, fields: Mapping[str, Any], actor: Actor, *,
               idempotency_key: str | None = None) -> Complaint:
        """Register a new complaint in the initial state; returns it as ``actor`` sees it."""
        rules = self.rules
        self._check_actor(actor, rules)
        submit_roles = rules.definition.submit.roles
        if submit_roles != "*" and not actor.has_any(submit_roles):
            raise RoleNotAllowed("(new)", "submit", None,
                                 f"needs one of the roles {', '.join(submit_roles)}")
        values = self._check_submission(fields)
        machine = self._machines[rules.version]
        severity = machine.severity(values, None)
        now = self.now()
        stored = {k: to_json(v) for k, v in values.items()}
        fingerprint = _fingerprint(op="submit", fields=stored, actor=actor.id,
                                   roles=actor.roles, department=actor.department)
        with db.write(self._db) as conn:
            earlier = self._idempotent(conn, idempotency_key, fingerprint, actor)
            if earlier is not None:
                return earlier
            number, scope, seq = self._next_number(conn, now)
            department = self._index_value(values, rules.definition.department_field)
            handler = self._index_value(values, rules.definition.handler_field)
            complaint_id = conn.execute(sa.insert(C).values(
                number=number, scope=scope, seq=seq, ruleset=rules.version,
                state=rules.initial, version=1, severity=severity, severity_floor=None,
                department=department, handler=handler, received_at=now, updated_at=now,
                fields=canonical(stored), head_seq=0, head_hash=GENESIS,
            ).returning(C.c.id)).scalar_one()
            payload = {"number": number, "fields": stored, "severity": severity}
            event = self._append(conn, complaint_id=complaint_id, number=number, seq=1,
                                 prev_hash=GENESIS, type="submitted", trigger=None,
                                 from_state=None, to_state=rules.initial, actor=actor, now=now,
                                 payload=payload, ruleset=rules.version)
            conn.execute(sa.update(C).where(C.c.id == complaint_id)
                         .values(head_seq=1, head_hash=event.hash))
            if idempotency_key is not None:
                conn.execute(sa.insert(K).values(key=idempotency_key, fingerprint=fingerprint,
                                                 complaint_id=complaint_id, event_seq=1,
                                                 created_at=now))
        complaint = Complaint(number, rules.initial, 1, severity, values, now, now,
                              rules.version, department, handler)
        self._notify([CommittedEvent(event, complaint)])
        return self._masked(complaint, actor.roles)

    @staticmethod
    def _index_value(values: Mapping[str, Any], name: str | None) -> str | None:
        if name is None or values.get(name) is None:
            return None
        return str(values[name])[:200]

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
        """Apply one transition atomically (state, version, fields, severity and the history
        event in one transaction). Raises a ``TransitionRefused`` subclass naming the failed
        check, ``ConcurrentUpdate`` for a stale ``expected_version`` or a lost race."""
        data = dict(data or {})
        if comment is not None and (not isinstance(comment, str) or len(comment) > 2000):
            raise InvalidInput([FieldProblem("comment", "text of at most 2000 characters")])
        if expected_version is not None and (
            isinstance(expected_version, bool) or not isinstance(expected_version, int)
        ):
            raise InvalidInput([FieldProblem("expected_version", "an integer")])
        fingerprint = _fingerprint(op="fire", number=number, trigger=trigger, actor=actor.id,
                                   roles=actor.roles, department=actor.department, data=data,
                                   expected=expected_version, comment=comment)
        now = self.now()
        with db.write(self._db, number) as conn:
            row = conn.execute(sa.select(C).where(C.c.number == number)).first()
            if row is None:
                raise NotFound("complaint", number)
            earlier = self._idempotent(conn, idempotency_key, fingerprint, actor)
            if earlier is not None:
                return earlier
            machine = self._machine(conn, row.ruleset)
            self._check_actor(actor, machine.rules)
            if expected_version is not None and expected_version != row.version:
                raise ConcurrentUpdate(number, expected_version, row.version)
            codec = self._codecs[row.ruleset]
            before = codec.decode(row.fields)
            facts = self._facts(conn, row.id)
            step = machine.step(number, row.state, trigger, actor, before,
                                {"number": number, "received_at": row.received_at}, facts,
                                data, row.severity_floor)
            applied = {k: to_json(step.fields.get(k)) for k in data}
            stored = {k: to_json(v) for k, v in step.fields.items() if v is not None}
            rules = machine.rules
            department = self._index_value(step.fields, rules.definition.department_field)
            handler = self._index_value(step.fields, rules.definition.handler_field)
            seq = row.version + 1
            payload: dict[str, Any] = {"set": applied, "severity": step.severity}
            if comment:
                payload["comment"] = comment
            event = self._append(conn, complaint_id=row.id, number=number, seq=seq,
                                 prev_hash=row.head_hash, type="transition", trigger=trigger,
                                 from_state=row.state, to_state=step.to_state, actor=actor,
                                 now=now, payload=payload, ruleset=row.ruleset)
            updated = conn.execute(
                sa.update(C).where(C.c.id == row.id, C.c.version == row.version).values(
                    state=step.to_state, version=seq, severity=step.severity,
                    department=department, handler=handler, updated_at=now,
                    fields=canonical(stored), head_seq=seq, head_hash=event.hash,
                )
            ).rowcount
            if updated != 1:
                raise ConcurrentUpdate(number, expected_version, None)
            if idempotency_key is not None:
                conn.execute(sa.insert(K).values(key=idempotency_key, fingerprint=fingerprint,
                                                 complaint_id=row.id, event_seq=seq,
                                                 created_at=now))
        complaint = Complaint(number, step.to_state, seq, step.severity,
                              {k: v for k, v in step.fields.items() if v is not None},
                              row.received_at, now, row.ruleset, department, handler)
        self._notify([CommittedEvent(event, complaint)])
        return self._masked(complaint, actor.roles)

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def _facts(conn: Connection, complaint_id: int) -> Facts:
        facts = Facts()
        for ev in conn.execute(
            sa.select(E.c.seq, E.c.trigger, E.c.actor_id, E.c.from_state, E.c.to_state)
            .where(E.c.complaint_id == complaint_id).order_by(E.c.seq)
        ):
            facts.record(ev.seq, ev.trigger, ev.actor_id, ev.from_state, ev.to_state)
        return facts

    def _masked(self, complaint: Complaint, roles: tuple[str, ...] | None) -> Complaint:
        codec = self._codecs[complaint.ruleset]
        fields, hidden = codec.mask(complaint.fields, roles)
        if not hidden:
            return complaint
        return Complaint(complaint.number, complaint.state, complaint.version,
                         complaint.severity, fields, complaint.received_at,
                         complaint.updated_at, complaint.ruleset, complaint.department,
                         complaint.handler, hidden)

    def _view(self, codec: FieldCodec, row: Row[Any], roles: tuple[str, ...] | None,
              **override: Any) -> Complaint:
        values = override.get("fields")
        if values is None:
            values = codec.decode(row.fields)
        complaint = Complaint(
            row.number, override.get("state", row.state), override.get("version", row.version),
            override.get("severity", row.severity), values, row.received_at,
            override.get("updated_at", row.updated_at), row.ruleset, row.department,
            row.handler,
        )
        fields, hidden = codec.mask(complaint.fields, roles)
        if not hidden:
            return complaint
        return Complaint(complaint.number, complaint.state, complaint.version,
                         complaint.severity, fields, complaint.received_at,
                         complaint.updated_at, complaint.ruleset, complaint.department,
                         complaint.handler, hidden)

    def get(self, number: str, actor: Actor | None = None) -> Complaint:
        """The complaint as ``actor`` may see it (``None``: personal data masked)."""
        with db.read(self._db) as conn:
            row = conn.execute(sa.select(C).where(C.c.number == number)).first()
            if row is None:
                raise NotFound("complaint", number)
            return self._view(self._codec(conn, row.ruleset), row,
                              actor.roles if actor else None)

    def history(self, number: str, actor: Actor | None = None) -> list[HistoryEvent]:
        """Every event of the complaint, oldest first, personal data masked unless
        ``actor`` may read it."""
        with db.read(self._db) as conn:
            row = conn.execute(sa.select(C.c.id, C.c.ruleset).where(C.c.number == number)
                               ).first()
            if row is None:
                raise NotFound("complaint", number)
            rows = conn.execute(sa.select(E).where(E.c.complaint_id == row.id)
                                .order_by(E.c.seq)).all()
            out = []
            for ev in rows:
                codec = self._codec(conn, ev.ruleset)
                out.append(self._event_view(codec, number, ev, actor))
            return out

    def _event_view(self, codec: FieldCodec, number: str, ev: Row[Any],
                    actor: Actor | None) -> HistoryEvent:
        payload = upcast(json.loads(ev.payload), ev.schema_version)
        roles = actor.roles if actor else None
        if not (roles is not None and codec.rules.may_read_personal(roles)):
            for key in ("fields", "set"):
                if key in payload:
                    personal = codec.rules.personal_fields
                    payload[key] = {
                        k: (mask_value(v) if k in personal else v)
                        for k, v in payload[key].items()
                    }
        return HistoryEvent(number, ev.seq, ev.type, ev.trigger, ev.from_state, ev.to_state,
                            ev.actor_id, tuple(json.loads(ev.actor_roles)), ev.actor_department,
                            ev.occurred_at, payload, ev.ruleset, ev.schema_version,
                            ev.prev_hash, ev.hash)

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
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidInput([FieldProblem("limit", "an integer from 1 to 10000")])
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInput([FieldProblem("offset", "a non-negative integer")])
        where: list[Any] = []
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            where.append(C.c.state.in_(states))
        if severity is not None:
            where.append(C.c.severity == severity)
        if department is not None:
            where.append(C.c.department == department)
        if handler is not None:
            where.append(C.c.handler == handler)
        if received_between is not None:
            start, end = received_between
            for name, moment in (("from", start), ("to", end)):
                if moment is not None and moment.tzinfo is None:
                    raise InvalidInput([FieldProblem(f"received_between.{name}",
                                                     "an aware datetime")])
            if start is not None:
                where.append(C.c.received_at >= start)
            if end is not None:
                where.append(C.c.received_at < end)
        with db.read(self._db) as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(C).where(*where)
                                 ).scalar_one()
            rows = conn.execute(sa.select(C).where(*where).order_by(C.c.id)
                                .limit(limit).offset(offset)).all()
            roles = actor.roles if actor else None
            items = tuple(self._view(self._codec(conn, r.ruleset), r, roles) for r in rows)
        return Page(items, total, limit, offset)

    def available_triggers(self, number: str, actor: Actor) -> list[TriggerOption]:
        """Every transition out of the current state, allowed or not (with the failing check
        and reason), for building the host's buttons."""
        with db.read(self._db) as conn:
            row = conn.execute(sa.select(C).where(C.c.number == number)).first()
            if row is None:
                raise NotFound("complaint", number)
            machine = self._machine(conn, row.ruleset)
            self._check_actor(actor, machine.rules)
            fields = self._codecs[row.ruleset].decode(row.fields)
            return machine.options(number, row.state, actor, fields,
                                   {"number": number, "received_at": row.received_at},
                                   self._facts(conn, row.id), row.severity_floor)

    def verify(self, *, progress: Callable[[int], None] | None = None) -> VerificationReport:
        """Recompute every hash chain and compare each complaint row with its history."""
        with db.read(self._db) as conn:
            return verify_all(conn, progress=progress)


def upcast(payload: dict[str, Any], schema_version: int) -> dict[str, Any]:
    """Bring a stored payload to the current layout (version 1 is the first layout)."""
    if schema_version > EVENT_SCHEMA_VERSION:
        raise InvalidInput([FieldProblem("schema_version",
                                         f"event schema {schema_version} is newer than this "
                                         f"release ({EVENT_SCHEMA_VERSION})")], context="event")
    return payload
