"""Verification of stored history: hash chains, heads, current rows, number sequences.

One streaming pass: complaints in id order (keyset batches of ``BATCH``), their events in
(complaint, seq) order through a plain driver cursor, so memory stays flat however large the
database is. Each event is hashed from its stored text (the payload and the roles are
hashed as stored, the instant in the same ISO form ``storage.hashing.iso`` gives), and its
payload parsed once; a ``deep`` check (see ``replay.DeepCheck``) gets the same parsed
events.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from complaintflow import arguments
from complaintflow.errors import FieldProblem, InvalidInput, NotFound
from complaintflow.states.conditions import Facts
from complaintflow.storage.hashing import (
    GENESIS,
    canonical,
    canonical_bytes,
    iso,
    parse_strict,
)
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import deadlines as D
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import number_sequences as N
from complaintflow.storage.tables import timers as T

if TYPE_CHECKING:
    from complaintflow.engine import Engine

__all__ = ["MISSED_AFTER", "Finding", "StoredEvent", "VerificationReport", "fold_fields",
           "verify_all", "verify_parallel"]

BATCH = 500
#: how late a warning or breach may be recorded before deep verification calls it missed
MISSED_AFTER = timedelta(minutes=1)


@dataclass(frozen=True)
class Finding:
    """One problem: which complaint, from which event on, what kind, and the evidence.

    kinds: ``edited`` (an event's content no longer matches its hash), ``missing`` (an event
    was deleted: a gap in the sequence), ``reordered`` (an event does not link to its
    predecessor: inserted or moved), ``truncated`` (events after the last stored one were
    deleted: the complaint's chain head says there were more), ``head_mismatch``,
    ``state_mismatch`` / ``version_mismatch`` / ``fields_mismatch`` / ``severity_mismatch``
    (the current-state row disagrees with the history), ``facts_mismatch`` (the row's
    ``facts`` column does not parse, folds in events the history does not have, or differs
    from the facts replayed up to the event it says it folded in), ``complaint_missing`` (a
    whole complaint was deleted: a gap in its number sequence), ``number_mismatch`` (the
    number does not fit the scope and sequence number the row files it under: a complaint
    deleted and the later ones moved down the sequence), ``bad_payload`` (an event's
    payload is not a JSON object (``NaN`` and ``Infinity`` are not JSON), or its ``fields``
    or ``set`` not an object, its ``dropped_fields`` not a list of names; deep: any payload
    the engine never writes), ``ruleset_mismatch`` (an event names another rule set
    than the one the complaint is pinned to, which only a ``ruleset_migrated`` event to its
    own target changes; or the row's differs from the history's).

    deep kinds (``replay.DeepVerifier``): ``illegal_transition``, ``wrong_target``,
    ``wrong_severity`` (a transition the rules in force did not allow, or not to there, or
    not with that severity); for the clocks, re-derived from their replayed ledgers:
    ``wrong_due`` (a recorded due time the ledger does not give; at the event that
    recorded it), ``unexpected_warning`` / ``unexpected_breach`` (nothing of the kind was
    pending), ``warning_mismatch`` / ``breach_mismatch`` (recorded for another due time),
    ``early_warning`` / ``early_breach`` (recorded before its instant),
    ``missed_warning`` / ``missed_breach`` (due a minute or more before the verification
    instant and never recorded; at the event that started or last changed the clock),
    ``late_extension`` (an extension at or after the due instant, or on a consent given
    then), ``unconsented_extension`` (no consent by the same actor just before it),
    ``extension_not_allowed`` (a stopped or unknown clock, one the rules do not let be
    extended, or by a role they do not allow); ``illegal_event`` (a submission the rules did
    not allow, an unknown event type, or an event other than a transition or migration that
    moves the state or changes fields), ``unknown_ruleset`` (an event's rule set is not
    stored), ``wrong_timers`` (a submission or transition records other clocks started,
    stopped, paused or resumed than the timer rules do there), ``wrong_breach_actions`` (a
    breach records other actions, escalation, severity raise, transition fired or roles
    notified, than its timer's ``on_breach`` in the rule set in force),
    ``wrong_warning_actions`` (a warning notifies other roles than its rule does);
    ``missing_breach_action`` (a breach's ``on_breach`` fires a transition and neither it
    nor its refusal follows in the breach's transaction), ``unexpected_breach_action`` (a
    transition or refusal by the scheduler that no breach of its transaction calls for),
    ``wrong_action_refusal`` (recorded as refused, though the rules allowed it then);
    ``severity_floor_mismatch`` / ``escalation_mismatch`` (the row's ``severity_floor`` or
    ``escalated_to`` differs from what the recorded breaches give). Times in the detail are
    in the rules' zone.
    """

    number: str | None
    seq: int | None
    kind: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "seq": self.seq, "kind": self.kind,
                "detail": self.detail}


@dataclass
class VerificationReport:
    complaints: int = 0
    events: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "complaints": self.complaints, "events": self.events,
                "findings": [f.to_json() for f in self.findings]}


class VersionFacts(NamedTuple):
    """What plain verification needs of a rule version: the fields the complaint row's
    department and handler columns index, and the pattern its numbers were made with."""

    department_field: str | None
    handler_field: str | None
    number_pattern: str


IndexFields = Callable[[str], VersionFacts]


class StoredEvent(NamedTuple):
    """An event row as verification reads it: the stored texts, the instant as the ISO text
    the hash covers, and the payload parsed once (``None`` if it is not JSON)."""

    seq: int
    type: str
    trigger: str | None
    from_state: str | None
    to_state: str
    actor_id: str
    actor_roles: str
    actor_department: str | None
    occurred_at: str
    payload_text: str
    payload: dict[str, Any] | None
    ruleset: str
    schema_version: int
    prev_hash: str
    hash: str

    def parsed(self) -> dict[str, Any] | None:
        """The payload, or ``None`` if the stored text is not a JSON object (the reader's
        fast parser refused it: the standard one gets a second try)."""
        if self.payload is not None:
            return self.payload
        try:
            loaded = parse_strict(self.payload_text)
        except (TypeError, ValueError, RecursionError):
            return None
        return loaded if isinstance(loaded, dict) else None


#: What ``verify_all`` hands each complaint to for the deep part: the complaint's row and its
#: events; it returns the findings.
DeepCheck = Callable[[Any, Sequence[StoredEvent]], Iterable[Finding]]


def _fold_problem(payload: dict[str, Any]) -> str | None:
    """Why ``fold_fields`` cannot fold ``payload``, if it cannot: its ``fields`` or ``set``
    is not an object, or its ``dropped_fields`` not a list of names (a forged payload whose
    hash was recomputed; the engine never writes one)."""
    for key in ("fields", "set"):
        if key in payload and type(payload[key]) is not dict:
            return f"its {key} is not an object of field values"
    dropped = payload.get("dropped_fields")
    if dropped is not None and (type(dropped) is not list
                                or not all(type(n) is str for n in dropped)):
        return "its dropped_fields is not a list of field names"
    return None


def fold_fields(fields: dict[str, Any], payload: dict[str, Any] | Any) -> dict[str, Any]:
    """The complaint's field values (as stored JSON values) after one event's payload.

    ``fields`` is updated in place; the result is a new dict when a ``set`` cleared values
    (cleared fields are dropped). The one fold of fields that replay, verification and deep
    verification share."""
    if "fields" in payload:
        fields.update(payload["fields"])
    if "set" in payload:
        fields.update(payload["set"])
        if None in fields.values():
            fields = {k: v for k, v in fields.items() if v is not None}
    if "dropped_fields" in payload:
        for name in payload["dropped_fields"]:
            fields.pop(name, None)
    return fields


# -- reading events cheaply ---------------------------------------------------------------------


_SQLITE_INSTANT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")
_PG_INSTANT = "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
_COLUMNS = ("complaint_id, seq, type, trigger, from_state, to_state, actor_id, actor_roles, "
            "actor_department, {instant}, payload, ruleset, schema_version, prev_hash, hash")


class _EventReader:
    """Events of a range of complaint ids through the driver's own cursor: no row objects,
    no type processing; instants come back as the text the hash covers."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._sqlite = conn.dialect.name == "sqlite"
        mark = "?" if self._sqlite else "%s"
        instant = "occurred_at" if self._sqlite else _PG_INSTANT
        self._sql = (f"SELECT {_COLUMNS.format(instant=instant)} FROM {E.name} "
                     f"WHERE complaint_id >= {mark} AND complaint_id <= {mark} "
                     "ORDER BY complaint_id, seq")
        dialect = conn.dialect
        self._fallback = E.c.occurred_at.type.dialect_impl(dialect).result_processor(dialect, None)

    def instant(self, raw: Any) -> str:
        """The ISO text (``…Z``) of a stored instant, as ``hashing.iso`` gives it."""
        if self._sqlite and isinstance(raw, str) and _SQLITE_INSTANT.fullmatch(raw):
            return f"{raw[:10]}T{raw[11:]}Z"
        if isinstance(raw, str) and not self._sqlite:
            return raw
        value = self._fallback(raw) if self._fallback is not None else raw
        assert isinstance(value, datetime), f"stored instant {raw!r}"
        return iso(value)

    def events(self, first_id: int, last_id: int) -> Generator[tuple[int, list[StoredEvent]]]:
        """(complaint id, its events) for the complaints in ``first_id..last_id`` that have
        events, in id order; one complaint's events are built at a time."""
        cursor: Any = self._conn.connection.cursor()
        try:
            cursor.execute(self._sql, (first_id, last_id))
            # the hash is never computed from the parsed value, only from the stored text
            loads = parse_strict
            sqlite = self._sqlite
            fast = _SQLITE_INSTANT.fullmatch
            current = -1
            bucket: list[StoredEvent] = []
            for (cid, seq, type_, trigger, from_state, to_state, actor_id, roles, department,
                 at, text, ruleset, schema_version, prev_hash, digest) in cursor:
                if cid != current:
                    if bucket:
                        yield current, bucket
                    current, bucket = cid, []
                if sqlite and isinstance(at, str) and fast(at):
                    at = f"{at[:10]}T{at[11:]}Z"
                else:
                    at = self.instant(at)
                try:
                    payload = loads(text)
                except (TypeError, ValueError):
                    payload = None
                if not isinstance(payload, dict):
                    payload = None
                bucket.append(StoredEvent(seq, type_, trigger, from_state, to_state, actor_id,
                                          roles, department, at, text, payload, ruleset,
                                          schema_version, prev_hash, digest))
            if bucket:
                yield current, bucket
        finally:
            cursor.close()


def stored_hash(number: str, ev: StoredEvent) -> str:
    """``storage.hashing.event_hash`` of a stored event, from the stored texts as they are
    (the instant as the ISO text the hash covers; nothing re-serialised but the list)."""
    return hashlib.sha256(canonical_bytes((
        number, ev.seq, ev.type, ev.trigger, ev.from_state, ev.to_state, ev.actor_id,
        ev.actor_roles, ev.actor_department, ev.occurred_at, ev.payload_text, ev.ruleset,
        ev.schema_version, ev.prev_hash))).hexdigest()


# -- one complaint --------------------------------------------------------------------------


@dataclass
class _History:
    """What the chain says about the complaint's current row."""

    last: StoredEvent
    first: StoredEvent
    fields: dict[str, Any]
    severity: str | None
    ruleset: str  # in force after the last migration (or the first event's)
    facts: Facts | None = None  # replayed up to the row's facts column's ``through``
    stored_facts: Facts | None = None  # the column parsed (None: NULL or unparseable)
    facts_problem: str | None = None  # why the column does not parse


def _check_chain(row: Any, events: Sequence[StoredEvent],
                 index_fields: IndexFields | None = None) -> list[Finding]:
    number = row.number
    out: list[Finding] = []
    prev = GENESIS
    fields: dict[str, Any] = {}
    severity = None
    last: StoredEvent | None = None
    ruleset = ""
    stored_facts, facts_problem = _parse_facts(getattr(row, "facts", None))
    facts = Facts() if stored_facts is not None else None
    through = stored_facts.through if stored_facts is not None else 0
    for expected, ev in enumerate(events, start=1):
        if ev.seq != expected:
            out.append(Finding(number, expected, "missing",
                               f"event {expected} is missing (next stored is {ev.seq})"))
            return out
        if ev.prev_hash != prev:
            out.append(Finding(number, ev.seq, "reordered",
                               "does not link to the event before it (inserted or moved)"))
            return out
        digest = stored_hash(number, ev)
        if digest != ev.hash:
            out.append(Finding(number, ev.seq, "edited",
                               f"content hashes to {digest[:12]}…, stored {ev.hash[:12]}…"))
            return out
        if last is not None and ev.from_state != last.to_state:
            out.append(Finding(number, ev.seq, "reordered",
                               f"starts in {ev.from_state!r} but the complaint was in "
                               f"{last.to_state!r}"))
            return out
        payload = ev.parsed()
        if payload is None:
            out.append(Finding(number, ev.seq, "bad_payload",
                               "the stored payload is not a JSON object"))
            return out
        malformed = _fold_problem(payload)
        if malformed is not None:
            out.append(Finding(number, ev.seq, "bad_payload", malformed))
            return out
        if last is None:
            ruleset = str(ev.ruleset)
        elif ev.type == "ruleset_migrated":
            if payload.get("to") != ev.ruleset:
                out.append(Finding(number, ev.seq, "ruleset_mismatch",
                                   f"a migration to rule set {str(payload.get('to'))[:12]} "
                                   f"recorded under {ev.ruleset[:12]}"))
                return out
            ruleset = str(ev.ruleset)
        elif ev.ruleset != ruleset:
            out.append(Finding(number, ev.seq, "ruleset_mismatch",
                               f"the event names rule set {ev.ruleset[:12]}, the complaint is "
                               f"pinned to {ruleset[:12]} (it changes only by a migration)"))
            return out
        fields = fold_fields(fields, payload)
        severity = payload.get("severity", severity)
        if facts is not None and ev.seq <= through:
            facts.record(ev.seq, ev.trigger, ev.actor_id, ev.from_state, ev.to_state,
                         datetime.fromisoformat(ev.occurred_at) if ev.trigger else None)
        prev = ev.hash
        last = ev
    if last is None:  # a submission always commits its row with event 1
        out.append(Finding(number, 1, "truncated", "the complaint has no events left" if
                           row.head_seq else "the complaint has no events, and its row says "
                           "it never had any (a submission always records event 1)"))
        return out
    if row.head_seq > last.seq:
        out.append(Finding(number, last.seq + 1, "truncated",
                           f"events {last.seq + 1}..{row.head_seq} were deleted"))
        return out
    out.extend(_row_findings(row, _History(last, events[0], fields, severity, ruleset, facts,
                                           stored_facts, facts_problem), index_fields))
    return out


def _parse_facts(text: str | None) -> tuple[Facts | None, str | None]:
    """The row's ``facts`` column parsed, or why it does not parse (NULL: neither)."""
    if text is None:
        return None, None
    try:
        return Facts.from_text(text), None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return None, f"the stored facts do not parse ({type(exc).__name__}: {exc})"


def _facts_findings(number: str, h: _History) -> list[Finding]:
    if h.facts_problem is not None:
        return [Finding(number, h.last.seq, "facts_mismatch", h.facts_problem)]
    stored, replayed = h.stored_facts, h.facts
    if stored is None or replayed is None:
        return []
    if stored.through > h.last.seq:
        return [Finding(number, h.last.seq, "facts_mismatch",
                        f"the stored facts say they fold in events up to {stored.through}, "
                        f"the history has {h.last.seq}")]
    if stored == replayed:
        return []
    differ = [name for name in ("last_actor", "count", "last_seq", "last_time", "entered_seq")
              if getattr(stored, name) != getattr(replayed, name)]
    shown = "; ".join(f"{name} stored {getattr(stored, name)!r}, history gives "
                      f"{getattr(replayed, name)!r}" for name in differ)
    return [Finding(number, stored.through, "facts_mismatch",
                    f"the stored facts (through event {stored.through}) differ from the "
                    f"history: {shown}")]


def _version_facts(index_fields: IndexFields, number: str, event: StoredEvent,
                   version: str | None = None) -> VersionFacts | Finding:
    """``index_fields`` of ``version`` (default: the event's), or, if the database does not
    hold that rule set, a finding at ``event`` saying so."""
    version = version or event.ruleset
    try:
        return index_fields(version)
    except NotFound:
        return Finding(number, event.seq, "unknown_ruleset",
                       f"rule set {version[:12]} is not in the database")


def _number_findings(row: Any, first: StoredEvent, pattern: str) -> list[Finding]:
    """The number (which every event's hash covers) against the scope and sequence number
    the row files it under, as the pattern of the version it was submitted under makes
    it. Without this, a complaint deleted with its history, and every later one's sequence
    number moved down to close the gap, would leave no trace."""
    yearly = "{year" in pattern
    fits = row.scope.isascii() and row.scope.isdigit() if yearly else row.scope == "all"
    expected = pattern.format(year=int(row.scope) if yearly else 0, seq=row.seq) if fits else None
    if expected == row.number:
        return []
    filed = f"scope {row.scope!r}, sequence number {row.seq}"
    why = ("which gives " + repr(expected)) if expected is not None else (
        "which its pattern cannot give" + (" (it counts per year)" if yearly else
                                           " (it counts across years: scope 'all')"))
    return [Finding(row.number, first.seq, "number_mismatch",
                    f"filed under {filed}, {why} with the pattern {pattern!r} of rule set "
                    f"{first.ruleset[:12]} (a complaint deleted and the later ones renumbered"
                    " in the sequence, or the row edited)")]


def _row_findings(row: Any, h: _History, index_fields: IndexFields | None) -> list[Finding]:
    """The complaint's current-state row against what its history says, column by column."""
    number, last = row.number, h.last
    out: list[Finding] = []
    if row.head_hash != last.hash or row.head_seq != last.seq:
        out.append(Finding(number, last.seq, "head_mismatch",
                           "the complaint's chain head does not match its last event"))
    if row.state != last.to_state:
        out.append(Finding(number, last.seq, "state_mismatch",
                           f"stored state {row.state!r}, history ends in {last.to_state!r}"))
    if row.version != last.seq:
        out.append(Finding(number, last.seq, "version_mismatch",
                           f"stored version {row.version}, history has {last.seq} events"))
    replayed = {k: v for k, v in h.fields.items() if v is not None}
    text = canonical(replayed)
    if text != row.fields and text != canonical(json.loads(row.fields)):
        stored = json.loads(row.fields)
        changed = sorted(k for k in set(replayed) | set(stored)
                         if replayed.get(k) != stored.get(k))
        out.append(Finding(number, last.seq, "fields_mismatch",
                           f"stored fields differ from history: {', '.join(changed)}"))
    if row.ruleset != h.ruleset:
        out.append(Finding(number, last.seq, "ruleset_mismatch",
                           f"stored rule set {row.ruleset[:12]}, history pins {h.ruleset[:12]}"))
    if iso(row.received_at) != h.first.occurred_at:
        first_at = datetime.fromisoformat(h.first.occurred_at).astimezone(UTC)
        if row.received_at != first_at:
            out.append(Finding(number, 1, "received_mismatch",
                               f"stored receipt {row.received_at.isoformat()}, history says "
                               f"{first_at.isoformat()}"))
    first: VersionFacts | Finding | None = None
    current: VersionFacts | Finding | None = None
    if index_fields is not None:
        first = _version_facts(index_fields, number, h.first)
        current = first if h.ruleset == h.first.ruleset else _version_facts(
            index_fields, number, h.last, h.ruleset)
        out.extend(f for f in dict.fromkeys((first, current)) if isinstance(f, Finding))
    if isinstance(first, VersionFacts):
        out.extend(_number_findings(row, h.first, first.number_pattern))
    if isinstance(current, VersionFacts):
        for column, name in (("department", current.department_field),
                             ("handler", current.handler_field)):
            indexed: str | None = None
            if name is not None and replayed.get(name) is not None:
                indexed = str(replayed[name])[:200]
            if getattr(row, column) != indexed:
                out.append(Finding(number, last.seq, "index_mismatch",
                                   f"stored {column} {getattr(row, column)!r}, history gives "
                                   f"{indexed!r}"))
    if h.severity is not None and row.severity != h.severity:
        out.append(Finding(number, last.seq, "severity_mismatch",
                           f"stored severity {row.severity!r}, history says {h.severity!r}"))
    out.extend(_facts_findings(number, h))
    return out


# -- the whole database -----------------------------------------------------------------------


@dataclass
class _Part:
    """What one range of complaints gives: their chain and row findings, their deep
    findings (kept apart: they follow the number-sequence findings), their counts and the
    sequence numbers of their numbers, per scope."""

    complaints: int = 0
    events: int = 0
    chain: list[Finding] = field(default_factory=list)
    deep: list[Finding] = field(default_factory=list)
    seqs: dict[str, list[int]] = field(default_factory=dict)


def _due_between(since: datetime, now: datetime | None) -> sa.ColumnElement[bool]:
    """Whether the complaint's clocks have a warning or breach due in ``since..now``
    (``now`` ``None``: no upper bound): a deadline row, fired or not, or a clock not
    stopped and not breached whose due time is. Through the timers' (complaint, timer,
    run) key and the deadlines' (timer, kind, index) key: a few index probes per
    complaint, asked only for one not changed since ``since``."""
    deadline = [D.c.timer_id == T.c.id, D.c.due_at >= since]
    clock = [T.c.status != "stopped", T.c.breached_at.is_(None), T.c.due_at >= since]
    if now is not None:
        deadline.append(D.c.due_at <= now)
        clock.append(T.c.due_at <= now)
    return sa.exists().where(T.c.complaint_id == C.c.id,
                             sa.or_(sa.and_(*clock), sa.exists().where(*deadline)))


def _verify_range(conn: Connection, after: int, upto: int | None,
                  progress: Callable[[int], None] | None, index_fields: IndexFields | None,
                  deep: DeepCheck | None, deep_since: datetime | None,
                  now: datetime | None = None) -> _Part:
    """Complaints with ``after < id <= upto`` (no upper bound: ``None``), in id order."""
    part = _Part()
    reader = _EventReader(conn)
    columns: list[Any] = [C.c.id, C.c.number, C.c.scope, C.c.seq, C.c.state, C.c.version,
                          C.c.severity, C.c.fields, C.c.head_seq, C.c.head_hash, C.c.ruleset,
                          C.c.received_at, C.c.department, C.c.handler, C.c.facts,
                          C.c.severity_floor, C.c.escalated_to]
    if deep is not None and deep_since is not None:
        # changed since then, or idle with a deadline due since then (a missed warning or
        # breach changes nothing); from a minute before, as a deadline due in the minute
        # before the previous run's instant was not yet missed then
        columns.append(sa.or_(C.c.updated_at >= deep_since,
                              _due_between(deep_since - MISSED_AFTER, now)).label("deep"))
    last_id = after
    while True:
        query = sa.select(*columns).where(C.c.id > last_id)
        if upto is not None:
            query = query.where(C.c.id <= upto)
        rows = conn.execute(query.order_by(C.c.id).limit(BATCH)).all()
        if not rows:
            break
        last_id = rows[-1].id
        stream = reader.events(rows[0].id, last_id)
        pending = next(stream, None)
        for r in rows:
            while pending is not None and pending[0] < r.id:  # events of a deleted complaint
                pending = next(stream, None)
            events: list[StoredEvent] = []
            if pending is not None and pending[0] == r.id:
                events = pending[1]
                pending = next(stream, None)
            part.seqs.setdefault(r.scope, []).append(r.seq)
            chain = _check_chain(r, events, index_fields)
            part.chain.extend(chain)
            part.events += len(events)
            if deep is not None and (deep_since is None or r.deep):
                kinds = {f.kind for f in chain}
                part.deep.extend(f for f in deep(r, events) if f.kind not in kinds)
        stream.close()
        part.complaints += len(rows)
        if progress is not None:
            progress(len(rows))
    return part


def _report(conn: Connection, parts: Iterable[_Part]) -> VerificationReport:
    """The parts' findings in complaint order, the number-sequence findings after them, and
    the deep findings last."""
    report = VerificationReport()
    deep_found: list[Finding] = []
    seqs: dict[str, list[int]] = {}
    for part in parts:
        report.complaints += part.complaints
        report.events += part.events
        report.findings.extend(part.chain)
        deep_found.extend(part.deep)
        for scope, numbers in part.seqs.items():
            seqs.setdefault(scope, []).extend(numbers)
    counters = {r.scope: r.value for r in conn.execute(sa.select(N.c.scope, N.c.value))}
    for scope in sorted(set(seqs) | set(counters)):
        present = set(seqs.get(scope, []))
        top = max(counters.get(scope, 0), max(present, default=0))
        missing = [s for s in range(1, top + 1) if s not in present]
        if missing:
            shown = ", ".join(str(s) for s in missing[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            report.findings.append(Finding(None, None, "complaint_missing",
                                           f"scope {scope}: complaint numbers {shown}{more} "
                                           "are missing (deleted with their history)"))
    report.findings.extend(deep_found)
    return report


def verify_all(conn: Connection, progress: Callable[[int], None] | None = None,
               index_fields: IndexFields | None = None, *, deep: DeepCheck | None = None,
               deep_since: datetime | None = None,
               now: datetime | None = None) -> VerificationReport:
    """Every complaint's chain and row, and the number sequences. With ``deep``, each
    complaint (if ``deep_since`` is given: changed since then, or with a warning or breach
    due between then and ``now``, the verification instant) and its events also go to
    ``deep``; its findings follow the others, without repeating a kind already found for
    the same complaint."""
    part = _verify_range(conn, 0, None, progress, index_fields, deep, deep_since, now)
    return _report(conn, [part])


# -- in parallel ------------------------------------------------------------------------------


MAX_JOBS = 256


def check_options(*, deep: object, since: object, progress: object, jobs: object = 1) -> None:
    """Refuse, all at once, options ``Engine.verify`` and ``verify_parallel`` cannot use."""
    problems = []
    if not isinstance(deep, bool):
        problems.append(FieldProblem("deep", "True or False"))
    found = arguments.moment("since", since, optional=True)
    if found is not None:
        problems.append(found)
    elif since is not None and not deep:
        problems.append(FieldProblem("since", "limits the deep checks: give deep=True"))
    if progress is not None and not callable(progress):
        problems.append(FieldProblem("progress", "a callable taking a count, or None"))
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= MAX_JOBS:
        problems.append(FieldProblem("jobs", f"a whole number from 1 to {MAX_JOBS}"))
    if problems:
        raise InvalidInput(problems, context="verification")


def verify_parallel(engine: Engine, jobs: int, *, deep: bool = False,
                    since: datetime | None = None,
                    progress: Callable[[int], None] | None = None) -> VerificationReport:
    """``engine.verify(deep=deep, since=since)`` with the complaints split into ``jobs``
    ranges of ids, each verified in a process of its own (its own connection, a snapshot of
    its own); the report is the one ``verify`` gives, findings in the same order. For a
    large database on a machine with free cores; ``progress`` advances as ranges finish.
    Complaints created while it runs may be verified or not, as with ``verify``; none is
    reported missing for it."""
    check_options(deep=deep, since=since, progress=progress, jobs=jobs)
    from complaintflow.storage import db

    url = engine.database.url.render_as_string(hide_password=False)
    now = engine.now()
    with db.read(engine.database) as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(C)).scalar_one()
        bounds = [0]
        for k in range(1, jobs):
            below = conn.execute(sa.select(C.c.id).order_by(C.c.id).offset(k * total // jobs)
                                 .limit(1)).scalar()
            if below is not None and below - 1 > bounds[-1]:
                bounds.append(below - 1)
        ranges = [(lo, hi) for lo, hi in zip(bounds, [*bounds[1:], None], strict=True)]
        if len(ranges) == 1:
            parts = [_verify_part(url, now, ranges[0][0], None, deep, since)]
            if progress is not None:
                progress(parts[0].complaints)
        else:
            context = multiprocessing.get_context("spawn")  # no forked connections
            with ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
                futures = [pool.submit(_verify_part, url, now, lo, hi, deep, since)
                           for lo, hi in ranges]
                parts = []
                for future in futures:
                    parts.append(future.result())
                    if progress is not None:
                        progress(parts[-1].complaints)
        return _report(conn, parts)


def _verify_part(url: str, now: datetime, after: int, upto: int | None, deep: bool,
                 since: datetime | None) -> _Part:
    """One range, in a worker process: an engine of its own on the same database (not
    ``Engine.open``: nothing is written), the verifier ``engine.verify`` uses."""
    from complaintflow.clock import SimulatedClock
    from complaintflow.engine import Engine, upcast
    from complaintflow.replay import DeepVerifier
    from complaintflow.rules.loader import load_rules
    from complaintflow.storage import db

    engine = Engine(db.connect(url), load_rules(None), SimulatedClock(now))
    try:
        with db.read(engine.database) as conn:
            check = DeepVerifier(lambda v: engine.compiled(conn, v), now, upcast) \
                if deep else None
            return _verify_range(conn, after, upto, None, engine._index_fields(conn), check,
                                 since if deep else None, now)
    finally:
        engine.close()
