"""Moving open complaints to another rule-set version, explicitly.

A complaint stays on the rule set it started under; ``plan`` reports per complaint what a
move would change, and ``apply`` performs it with one ``ruleset_migrated`` history event per
complaint, all in one transaction. A complaint whose state does not exist in the target (and
has no mapping) or whose fields do not fit the target's types is refused, and then nothing
is changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from complaintflow import sla
from complaintflow.actor import Actor
from complaintflow.audit import resolve_hash
from complaintflow.engine import CommittedEvent, build_event
from complaintflow.errors import ConcurrentUpdate, FieldProblem, InvalidInput, hint
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.values import ValueProblem, check_field
from complaintflow.states.conditions import Facts
from complaintflow.states.guards import is_blank
from complaintflow.storage import db
from complaintflow.storage.hashing import canonical
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import timers as T
from complaintflow.timers import Due, Ledger, timer_payload

if TYPE_CHECKING:
    from complaintflow.engine import Engine

__all__ = ["WHERE_KEYS", "MigrationItem", "MigrationRefused", "Progress", "Where", "apply",
           "parse_where", "plan"]

#: What a selection may name: complaint columns the database indexes.
WHERE_KEYS = ("state", "severity", "department", "handler", "received_after", "received_before")
#: A selection: key -> values. Values of one key are alternatives (any of them); keys must all
#: hold. ``received_after`` (at or after) and ``received_before`` (strictly before) take ISO
#: times, naive ones in the rule set's time zone.
Where = Mapping[str, str | Iterable[str]]
#: Told ``(phase, done, total)`` as a migration goes: "checking" as each selected complaint
#: is planned, then, for ``apply``, "moving" as each is written. A migration is one
#: transaction: nothing is committed before the last complaint is written.
Progress = Callable[[str, int, int], None]


class MigrationRefused(InvalidInput):
    """Some selected complaints cannot be moved safely; nothing was changed."""

    def __init__(self, items: list[MigrationItem]) -> None:
        self.items = items
        super().__init__([FieldProblem(i.number, "; ".join(i.problems)) for i in items],
                         context="migration")


@dataclass
class MigrationItem:
    """What moving one complaint would change. ``newly_required``: the fields it lacks that
    the target requires, at submission or by a transition out of the state it moves to,
    and that its rules in force did not require to leave its state."""

    number: str
    from_version: str
    to_version: str
    state: str
    target_state: str
    problems: list[str] = field(default_factory=list)
    newly_required: list[str] = field(default_factory=list)
    dropped_fields: list[str] = field(default_factory=list)
    timers_added: list[str] = field(default_factory=list)
    timers_removed: list[str] = field(default_factory=list)
    timers_rederived: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "from": self.from_version, "to": self.to_version,
                "state": self.state, "target_state": self.target_state, "ok": self.ok,
                "problems": self.problems, "newly_required": self.newly_required,
                "dropped_fields": self.dropped_fields, "timers_added": self.timers_added,
                "timers_removed": self.timers_removed,
                "timers_rederived": self.timers_rederived}


def parse_where(items: Iterable[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` texts (``--where``) as a ``Where``; every bad item reported at once."""
    out: dict[str, list[str]] = {}
    problems: list[FieldProblem] = []
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            problems.append(FieldProblem("where", f"{item!r} is not KEY=VALUE "
                                                  f"(keys: {', '.join(WHERE_KEYS)})"))
            continue
        out.setdefault(key, []).append(value)
    problems += _key_problems(out)
    if problems:
        raise InvalidInput(problems, context="selection")
    return out


def _key_problems(where: Where) -> list[FieldProblem]:
    problems = []
    for key in where:
        if key not in WHERE_KEYS:
            problems.append(FieldProblem(
                f"where.{key}", f"unknown key; expected one of {', '.join(WHERE_KEYS)}"
                + hint(key, WHERE_KEYS)))
    return problems


def _values(raw: str | Iterable[str]) -> list[str]:
    return [raw] if isinstance(raw, str) else list(raw)


def _conditions(conn: Connection, engine: Engine, target: str,
                where: Where) -> list[sa.ColumnElement[bool]]:
    """``where`` as SQL conditions on the complaints table, after checking every key and value
    (states and severities against the rule sets in use, did-you-mean included)."""
    problems = _key_problems(where)
    rules = _rules_in_use(conn, engine, target)
    known = {"state": sorted({s for r in rules for s in r.states}),
             "severity": sorted({s for r in rules for s in r.severity_levels})}
    out: list[sa.ColumnElement[bool]] = []
    for key, raw in where.items():
        values = _values(raw)
        if key not in WHERE_KEYS:
            continue
        if not values:
            problems.append(FieldProblem(f"where.{key}", "no value given"))
            continue
        if key in ("received_after", "received_before"):
            for value in values:
                try:
                    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    problems.append(FieldProblem(
                        f"where.{key}", f"{value!r} is not an ISO 8601 time; give e.g. "
                                        "2026-03-03T10:00+08:00, or 2026-03-03 in the rule "
                                        "set's time zone"))
                    continue
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=engine.zone)
                column = C.c.received_at
                out.append(column >= moment if key == "received_after" else column < moment)
            continue
        for value in values:
            if key in known and value not in known[key]:
                problems.append(_unknown(f"where.{key}", value, known[key],
                                         f"a {key} of any rule set in use"))
        out.append(C.c[key].in_(values))
    if problems:
        raise InvalidInput(problems, context="selection")
    return out


def _rules_in_use(conn: Connection, engine: Engine, target: str) -> list[RuleSet]:
    """The rule sets complaints are on, and the target."""
    versions = {target, *conn.execute(sa.select(C.c.ruleset).distinct()).scalars()}
    return [engine.compiled(conn, v).rules for v in sorted(versions)]


def _unknown(field: str, value: str, among: list[str], what: str) -> FieldProblem:
    return FieldProblem(field, f"{value!r} is not {what}" + hint(value, among))


def _check_selection(conn: Connection, engine: Engine, target: str,
                     states: list[str] | None, numbers: list[str] | None,
                     state_map: Mapping[str, str]) -> None:
    """Every state, state mapped from and number given names one that exists (a typo used
    to select nothing, or leave a mapping unused, without a word)."""
    problems: list[FieldProblem] = []
    known = sorted({s for r in _rules_in_use(conn, engine, target) for s in r.states}) \
        if states or state_map else []
    what = "a state of any rule set in use"
    problems += [_unknown("states", state, known, what)
                 for state in states or () if state not in known]
    # a mapped-to state the target lacks: the plan's item names it
    problems += [_unknown(f"map.{old}", old, known, what)
                 for old in state_map if old not in known]
    if numbers:
        found = set(conn.execute(sa.select(C.c.number).where(C.c.number.in_(numbers)))
                    .scalars())
        for number in numbers:
            if number not in found:
                problems.append(FieldProblem("numbers", f"no complaint {number!r}"))
    if problems:
        raise InvalidInput(problems, context="selection")


def _select(conn: Connection, engine: Engine, target: str, states: Iterable[str] | None,
            numbers: Iterable[str] | None, where: Where | None = None,
            state_map: Mapping[str, str] | None = None) -> list[Any]:
    states = list(states) if states is not None else None
    numbers = list(numbers) if numbers is not None else None
    _check_selection(conn, engine, target, states, numbers, state_map or {})
    query = sa.select(C).where(C.c.ruleset != target).order_by(C.c.id)
    if states is not None:
        query = query.where(C.c.state.in_(states))
    if numbers is not None:
        query = query.where(C.c.number.in_(numbers))
    if where:
        query = query.where(*_conditions(conn, engine, target, where))
    rows = []
    for row in conn.execute(query):
        if row.state not in engine.compiled(conn, row.ruleset).rules.final_states:
            rows.append(row)
    return rows


def _plan_one(conn: Connection, engine: Engine, row: Any, target: str,
              state_map: Mapping[str, str]) -> MigrationItem:
    source = engine.compiled(conn, row.ruleset)
    dest = engine.compiled(conn, target)
    new_state = state_map.get(row.state, row.state)
    item = MigrationItem(row.number, row.ruleset, target, row.state, new_state)
    if new_state not in dest.rules.states:
        item.problems.append(f"state {row.state!r} does not exist in the target; map it "
                             f"(--map {row.state}=STATE)" if new_state == row.state else
                             f"mapped state {new_state!r} does not exist in the target")
    stored = json.loads(row.fields)
    for name, raw in stored.items():
        fdef = dest.rules.fields.get(name)
        if fdef is None:
            item.dropped_fields.append(name)
            continue
        try:
            check_field(fdef, raw, recorded=True)  # a stored value, judged as stored
        except ValueProblem as exc:
            item.problems.append(f"field {name!r} does not fit the target: {exc}")
    # required at submission, or to leave the state it will be in, where the rules in force
    # did not require it to leave its state
    required = {f.id for f in dest.rules.definition.fields if f.required}
    required |= _required_to_leave(dest.rules, new_state) - _required_to_leave(source.rules,
                                                                               row.state)
    item.newly_required = sorted(name for name in required if is_blank(stored.get(name)))
    active = {r.timer for r in conn.execute(sa.select(T.c.timer).where(
        T.c.complaint_id == row.id, T.c.status != "stopped"))}
    for name in sorted(active):
        (item.timers_rederived if name in dest.timers.by_id else item.timers_removed
         ).append(name)
    scope = _scope(dest, row, new_state, stored, engine.facts_of(conn, row))
    for t in dest.timers.timers:
        if t.id in active:
            continue
        start = t.definition.start
        running_now = start.on == "receipt" or (start.on == "enter" and new_state in
                                                start.states)
        holds = t.condition is None or t.condition(scope)
        if running_now and holds and new_state not in t.definition.stop \
                and t.id not in source.timers.by_id:
            item.timers_added.append(t.id)
    return item


def _required_to_leave(rules: RuleSet, state: str) -> set[str]:
    """The fields some transition out of ``state`` requires (``requires``)."""
    return {name for t in rules.definition.transitions if state in t.source
            for name in t.requires}


def _scope(dest: Any, row: Any, state: str, stored: Mapping[str, Any], facts: Facts,
           actor: Actor | None = None, now: datetime | None = None) -> Any:
    """What the destination's timer rules read: the kept fields, the history's facts (as of
    the migration event), the acting actor and instant (a plan: the row's last change)."""
    values = dest.codec.decode({k: v for k, v in stored.items() if k in dest.rules.fields})
    fields = {**values, **dest.builtins(row.number, row.received_at), "severity": row.severity,
              "state": state}
    return dest.scope(fields, actor or Actor("system:migrate", ()), facts,
                      now or row.updated_at)


def _plan_all(conn: Connection, engine: Engine, rows: list[Any], target: str,
              state_map: Mapping[str, str] | None, progress: Progress | None
              ) -> list[MigrationItem]:
    items = []
    for done, row in enumerate(rows, 1):
        items.append(_plan_one(conn, engine, row, target, state_map or {}))
        if progress is not None:
            progress("checking", done, len(rows))
    return items


def plan(engine: Engine, to: str, *, states: Iterable[str] | None = None,
         numbers: Iterable[str] | None = None, state_map: Mapping[str, str] | None = None,
         where: Where | None = None, progress: Progress | None = None
         ) -> list[MigrationItem]:
    """What moving the selected open complaints to rule set ``to`` would change. The
    selection is every open complaint not on ``to``, narrowed by ``states``, ``numbers`` and
    ``where`` (see ``Where``; an unknown key or value raises ``InvalidInput``)."""
    with db.read(engine.database) as conn:
        target = resolve_hash(conn, to)
        rows = _select(conn, engine, target, states, numbers, where, state_map)
        return _plan_all(conn, engine, rows, target, state_map, progress)


def apply(engine: Engine, to: str, actor: Actor, *, states: Iterable[str] | None = None,
          numbers: Iterable[str] | None = None, state_map: Mapping[str, str] | None = None,
          where: Where | None = None, progress: Progress | None = None
          ) -> list[MigrationItem]:
    """Move the selected open complaints (selected as by ``plan``); all or nothing."""
    engine.check_actor(actor, engine.rules)
    now = engine.now()
    committed: list[CommittedEvent] = []
    with db.write(engine.database) as conn:
        target = resolve_hash(conn, to)
        rows = _select(conn, engine, target, states, numbers, where, state_map)
        items = _plan_all(conn, engine, rows, target, state_map, progress)
        refused = [i for i in items if not i.ok]
        if refused:
            raise MigrationRefused(refused)
        dest = engine.compiled(conn, target)
        calendars = engine.calendar_lookup(conn)
        for done, (row, item) in enumerate(zip(rows, items, strict=True), 1):
            stored = {k: v for k, v in json.loads(row.fields).items()
                      if k not in item.dropped_fields}
            seq = row.version + 1
            # a mapped state is a state change without a trigger: it moves entered_seq
            facts = engine.facts_of(conn, row)
            facts.record(seq, None, actor.id, row.state, item.target_state, now)
            scope = _scope(dest, row, item.target_state, stored, facts, actor, now)
            changes: dict[str, list[dict[str, Any]]] = {}
            # in id order, as the engine reads a complaint's runs (``sla.timer_runs``): the
            # payload lists them in this order, and without ORDER BY it would follow whichever
            # index the planner takes (it changed when migration 0004 dropped one)
            for t in conn.execute(sa.select(T).where(T.c.complaint_id == row.id,
                                                     T.c.status != "stopped")
                                  .order_by(T.c.id)).all():
                ctimer = dest.timers.by_id.get(t.timer)
                if ctimer is None:
                    conn.execute(sa.update(T).where(T.c.id == t.id)
                                 .values(status="stopped", stopped_at=now))
                    sla.replace_deadlines(conn, t.id, row.id, _no_due(), now)
                    changes.setdefault("stopped", []).append({"timer": t.timer, "run": t.run})
                    continue
                ledger = Ledger.from_text(t.ledger)
                ledger.unit, ledger.amount = ctimer.budget_for(scope)
                name = ctimer.definition.calendar or dest.rules.definition.calendar
                ledger.calendar, ledger.calendar_version = name, target
                due = dest.timers.derive(ctimer, ledger, calendars(name, target))
                conn.execute(sa.update(T).where(T.c.id == t.id).values(
                    ledger=ledger.to_text(), due_at=due.breach, provisional=due.provisional))
                sla.replace_deadlines(conn, t.id, row.id, due, now)
                changes.setdefault("rederived", []).append(
                    {**timer_payload(ctimer, ledger, due), "run": t.run})
            for name in item.timers_added:
                ctimer = dest.timers.by_id[name]
                ledger = dest.timers.new_ledger(ctimer, scope, now)
                due = dest.timers.derive(ctimer, ledger,
                                         calendars(ledger.calendar, ledger.calendar_version))
                last = conn.execute(sa.select(sa.func.max(T.c.run)).where(
                    T.c.complaint_id == row.id, T.c.timer == name)).scalar() or 0
                timer_id = conn.execute(sa.insert(T).values(
                    complaint_id=row.id, timer=name, run=last + 1, status="running",
                    ledger=ledger.to_text(), due_at=due.breach, provisional=due.provisional,
                    warned=0).returning(T.c.id)).scalar_one()
                sla.replace_deadlines(conn, timer_id, row.id, due, now)
                changes.setdefault("started", []).append(
                    {**timer_payload(ctimer, ledger, due), "run": last + 1})
            payload: dict[str, Any] = {"from": row.ruleset, "to": target,
                                       "dropped_fields": item.dropped_fields,
                                       "newly_required": item.newly_required,
                                       "severity": row.severity}
            if item.target_state != row.state:
                payload["state_mapped"] = [row.state, item.target_state]
            if changes:
                payload["timers"] = changes
            event_row, event = build_event(
                complaint_id=row.id, number=row.number, seq=seq, prev_hash=row.head_hash,
                type="ruleset_migrated", trigger=None, from_state=row.state,
                to_state=item.target_state, actor=actor, now=now, payload=payload,
                ruleset=target)
            updated = conn.execute(sa.update(C).where(C.c.id == row.id,
                                                      C.c.version == row.version).values(
                ruleset=target, state=item.target_state, version=seq, head_seq=seq,
                head_hash=event.hash, fields=canonical(stored), updated_at=now,
                facts=facts.to_text())).rowcount
            if updated != 1:
                raise ConcurrentUpdate(row.number, row.version, None)
            conn.execute(sa.insert(E).values(**event_row))
            committed.append(CommittedEvent(event, None))
            if progress is not None:
                progress("moving", done, len(rows))
    engine.notify(committed)
    return items


def _no_due() -> Due:
    return Due(None, (), False)
