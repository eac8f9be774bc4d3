"""What auditors use: replay at an instant, deep verification, rule-set versions."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from complaintflow import arguments
from complaintflow.actor import Actor
from complaintflow.errors import FieldProblem, IntegrityError, InvalidInput, NotFound
from complaintflow.replay import (
    MALFORMED,
    DeepVerifier,
    Replayed,
    ReplayedTimer,
    malformed_history,
    replay_events,
)
from complaintflow.storage import db
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import rulesets as R
from complaintflow.verify import VerificationReport, verify_all
from complaintflow.views import mask_value

if TYPE_CHECKING:
    from complaintflow.engine import Engine

__all__ = ["RuleSetInfo", "deep_verify", "malformed", "replay", "ruleset_diff", "rulesets",
           "stream_events"]

BATCH = 500


@dataclass(frozen=True)
class RuleSetInfo:
    hash: str
    name: str
    source: str
    loaded_at: datetime
    loaded_by: str | None
    complaints: int

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, "name": self.name, "source": self.source,
                "loaded_at": self.loaded_at.isoformat(), "loaded_by": self.loaded_by,
                "complaints": self.complaints}


def rulesets(engine: Engine) -> list[RuleSetInfo]:
    with db.read(engine.database) as conn:
        counts = {r.ruleset: r.n for r in conn.execute(
            sa.select(C.c.ruleset, sa.func.count().label("n")).group_by(C.c.ruleset))}
        return [RuleSetInfo(r.hash, r.name, r.source, r.loaded_at, r.loaded_by,
                            counts.get(r.hash, 0))
                for r in conn.execute(sa.select(R).order_by(R.c.loaded_at, R.c.hash))]


def resolve_hash(conn: Connection, prefix: str) -> str:
    """A full rule-set hash from a unique prefix (at least 6 characters)."""
    if not isinstance(prefix, str) or len(prefix) < 6:
        raise InvalidInput([FieldProblem("hash", "give at least 6 characters of the hash")])
    found = [r.hash for r in conn.execute(sa.select(R.c.hash).where(R.c.hash.like(
        prefix.lower() + "%")))]
    if len(found) != 1:
        raise NotFound("rule set", prefix) if not found else InvalidInput(
            [FieldProblem("hash", f"{prefix!r} matches {len(found)} rule sets")])
    return str(found[0])


def ruleset_text(engine: Engine, prefix: str) -> tuple[str, str]:
    with db.read(engine.database) as conn:
        full = resolve_hash(conn, prefix)
        text: str = conn.execute(sa.select(R.c.text).where(R.c.hash == full)).scalar_one()
        return full, text


def ruleset_diff(engine: Engine, a: str, b: str) -> str:
    """A unified diff of two stored rule files."""
    ha, ta = ruleset_text(engine, a)
    hb, tb = ruleset_text(engine, b)
    return "".join(difflib.unified_diff(ta.splitlines(keepends=True),
                                        tb.splitlines(keepends=True),
                                        fromfile=ha[:12], tofile=hb[:12]))


def _remaining(engine: Engine, conn: Connection
               ) -> Callable[[ReplayedTimer, str, datetime], timedelta | None]:
    def remaining(timer: ReplayedTimer, version: str, moment: datetime) -> timedelta | None:
        if timer.due_at is None:
            return None
        compiled = engine.compiled(conn, version)
        unit = str(timer.budget.get("unit", ""))
        ctimer = compiled.timers.by_id.get(timer.timer)
        cal = compiled.timers.calendar_of(ctimer) if ctimer is not None else None
        if timer.calendar_version is not None and ctimer is not None:
            name = ctimer.definition.calendar or compiled.rules.definition.calendar
            newer = engine.compiled(conn, timer.calendar_version).calendars.get(name or "")
            cal = newer or cal
        if unit.startswith("working") and cal is not None:
            return cal.between(moment, timer.due_at)
        return timer.due_at - moment

    return remaining


def _event_rows(conn: Connection, number: str) -> list[Any]:
    return list(conn.execute(sa.select(E).join(C, C.c.id == E.c.complaint_id)
                             .where(C.c.number == number).order_by(E.c.seq)))


def replay(engine: Engine, number: str, at: datetime | None = None,
           actor: Actor | None = None) -> Replayed:
    """The complaint as of ``at`` (default: after its last event), from history alone."""
    arguments.refuse([arguments.text("number", number, "a complaint number"),
                      arguments.moment("at", at, optional=True),
                      None if actor is None or isinstance(actor, Actor) else
                      FieldProblem("actor", "an Actor or None")])
    with db.read(engine.database) as conn:
        rows = _event_rows(conn, number)
        if not rows and conn.execute(sa.select(C.c.id).where(C.c.number == number)
                                     ).first() is None:
            raise NotFound("complaint", number)
        events = [engine.event_view(number, ev, None) for ev in rows]
        try:
            replayed = replay_events(
                number, events, at, _remaining(engine, conn),
                lambda version: engine.compiled(conn, version).rules.severity_levels)
            if replayed is not None:
                compiled = engine.compiled(conn, replayed.ruleset)
                if actor is None or not compiled.rules.may_read_personal(actor.roles):
                    personal = compiled.rules.personal_fields
                    replayed.fields = {k: (mask_value(v) if k in personal else v)
                                       for k, v in replayed.fields.items()}
                    replayed.events = [engine.mask_event(e, actor) for e in replayed.events]
        except MALFORMED as exc:
            found = malformed_history(number, events,
                                      lambda version: engine.compiled(conn, version).codec)
            if found is None:
                raise  # nothing stored is malformed: a fault of the replay itself
            raise found from exc
        if replayed is None:
            first = engine.shown(events[0].occurred_at) if events else "never"
            raise InvalidInput([FieldProblem(
                "at", f"{engine.shown(at) if at else at} is before the complaint existed "
                      f"(received {first})")], context="replay")
        return replayed


def malformed(engine: Engine, number: str) -> IntegrityError | None:
    """``IntegrityError`` naming the first event of the complaint whose stored payload is
    malformed (``replay.payload_problem``), or ``None``: for a reader of its history that
    failed on it (``MALFORMED``)."""
    with db.read(engine.database) as conn:
        events = [engine.event_view(number, ev, None) for ev in _event_rows(conn, number)]
        return malformed_history(number, events,
                                 lambda version: engine.compiled(conn, version).codec)


def stream_events(engine: Engine, conn: Connection, *, number: str | None = None,
                  since: datetime | None = None, until: datetime | None = None,
                  batch: int = 2000) -> Iterator[tuple[str, Any]]:
    """Event rows with their complaint numbers, in (complaint, seq) order, in batches."""
    arguments.refuse([arguments.text("number", number, "a complaint number", optional=True),
                      arguments.moment("since", since, optional=True),
                      arguments.moment("until", until, optional=True),
                      arguments.integer("batch", batch, 1, 100_000)])
    where: list[Any] = []
    if number is not None:
        cid = conn.execute(sa.select(C.c.id).where(C.c.number == number)).scalar()
        if cid is None:
            raise NotFound("complaint", number)
        where.append(E.c.complaint_id == cid)
    if since is not None:
        where.append(E.c.occurred_at >= since)
    if until is not None:
        where.append(E.c.occurred_at < until)
    last: tuple[int, int] = (0, 0)
    while True:
        rows = conn.execute(
            sa.select(E, C.c.number.label("number")).join(C, C.c.id == E.c.complaint_id)
            .where(*where, sa.tuple_(E.c.complaint_id, E.c.seq) > sa.tuple_(*last))
            .order_by(E.c.complaint_id, E.c.seq).limit(batch)).all()
        if not rows:
            return
        for r in rows:
            yield r.number, r
        last = (rows[-1].complaint_id, rows[-1].seq)


def deep_verify(engine: Engine, *, since: datetime | None = None,
                progress: Callable[[int], None] | None = None) -> VerificationReport:
    """Chains and rows (as ``verify``) plus: every transition legal under its rule version,
    warnings and breaches consistent with the clocks, current rows equal to the replay.
    ``since`` limits the deep part to complaints changed since then or with a warning or
    breach due since then (an idle complaint whose deadline passed unrecorded is checked).
    One pass over the history: each complaint's events are read and parsed once for both
    parts."""
    from complaintflow.engine import upcast

    now = engine.now()
    with db.read(engine.database) as conn:
        deep = DeepVerifier(lambda v: engine.compiled(conn, v), now, upcast)
        return verify_all(conn, progress, engine._index_fields(conn), deep=deep,
                          deep_since=since, now=now)
