"""Verification of stored history: hash chains, heads, current rows, number sequences.

Streams complaints in batches, so memory stays flat however large the database is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from complaintflow.storage.hashing import GENESIS, canonical, event_hash
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import number_sequences as N

__all__ = ["Finding", "VerificationReport", "verify_all"]

BATCH = 500


@dataclass(frozen=True)
class Finding:
    """One problem: which complaint, from which event on, what kind, and the evidence.

    kinds: ``edited`` (an event's content no longer matches its hash), ``missing`` (an event
    was deleted: a gap in the sequence), ``reordered`` (an event does not link to its
    predecessor: inserted or moved), ``truncated`` (events after the last stored one were
    deleted: the complaint's chain head says there were more), ``head_mismatch``,
    ``state_mismatch`` / ``version_mismatch`` / ``fields_mismatch`` / ``severity_mismatch``
    (the current-state row disagrees with the history), ``complaint_missing`` (a whole
    complaint was deleted: a gap in its number sequence).
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


IndexFields = Callable[[str], tuple[str | None, str | None]]


def _check_chain(row: Any, events: Sequence[Any],
                 index_fields: IndexFields | None = None) -> list[Finding]:
    number = row.number
    out: list[Finding] = []
    prev = GENESIS
    fields: dict[str, Any] = {}
    severity = None
    last: Any = None
    for expected, ev in enumerate(events, start=1):
        if ev.seq != expected:
            out.append(Finding(number, expected, "missing",
                               f"event {expected} is missing (next stored is {ev.seq})"))
            return out
        digest = event_hash(
            number=number, seq=ev.seq, type=ev.type, trigger=ev.trigger,
            from_state=ev.from_state, to_state=ev.to_state, actor_id=ev.actor_id,
            actor_roles=ev.actor_roles, actor_department=ev.actor_department,
            occurred_at=ev.occurred_at, payload=ev.payload, ruleset=ev.ruleset,
            schema_version=ev.schema_version, prev_hash=ev.prev_hash,
        )
        if ev.prev_hash != prev:
            out.append(Finding(number, ev.seq, "reordered",
                               "does not link to the event before it (inserted or moved)"))
            return out
        if digest != ev.hash:
            out.append(Finding(number, ev.seq, "edited",
                               f"content hashes to {digest[:12]}…, stored {ev.hash[:12]}…"))
            return out
        if last is not None and ev.from_state != last.to_state:
            out.append(Finding(number, ev.seq, "reordered",
                               f"starts in {ev.from_state!r} but the complaint was in "
                               f"{last.to_state!r}"))
            return out
        payload = json.loads(ev.payload)
        fields.update(payload.get("fields", {}))
        fields.update(payload.get("set", {}))
        for name in payload.get("dropped_fields", []):
            fields.pop(name, None)
        severity = payload.get("severity", severity)
        prev = ev.hash
        last = ev
    if last is None:
        if row.head_seq:
            out.append(Finding(number, 1, "truncated", "the complaint has no events left"))
        return out
    if row.head_seq > last.seq:
        out.append(Finding(number, last.seq + 1, "truncated",
                           f"events {last.seq + 1}..{row.head_seq} were deleted"))
        return out
    if row.head_hash != last.hash or row.head_seq != last.seq:
        out.append(Finding(number, last.seq, "head_mismatch",
                           "the complaint's chain head does not match its last event"))
    if row.state != last.to_state:
        out.append(Finding(number, last.seq, "state_mismatch",
                           f"stored state {row.state!r}, history ends in {last.to_state!r}"))
    if row.version != last.seq:
        out.append(Finding(number, last.seq, "version_mismatch",
                           f"stored version {row.version}, history has {last.seq} events"))
    replayed = {k: v for k, v in fields.items() if v is not None}
    if canonical(replayed) != canonical(json.loads(row.fields)):
        changed = sorted(k for k in set(replayed) | set(json.loads(row.fields))
                         if replayed.get(k) != json.loads(row.fields).get(k))
        out.append(Finding(number, last.seq, "fields_mismatch",
                           f"stored fields differ from history: {', '.join(changed)}"))
    first = events[0]
    pinned = _latest_ruleset(events)
    if row.ruleset != pinned:
        out.append(Finding(number, last.seq, "ruleset_mismatch",
                           f"stored rule set {row.ruleset[:12]}, history pins {pinned[:12]}"))
    if row.received_at != first.occurred_at:
        out.append(Finding(number, 1, "received_mismatch",
                           f"stored receipt {row.received_at.isoformat()}, history says "
                           f"{first.occurred_at.isoformat()}"))
    if index_fields is not None:
        department_field, handler_field = index_fields(_latest_ruleset(events))
        for column, name in (("department", department_field), ("handler", handler_field)):
            indexed: str | None = None
            if name is not None and replayed.get(name) is not None:
                indexed = str(replayed[name])[:200]
            if getattr(row, column) != indexed:
                out.append(Finding(number, last.seq, "index_mismatch",
                                   f"stored {column} {getattr(row, column)!r}, history gives "
                                   f"{indexed!r}"))
    if severity is not None and row.severity != severity:
        out.append(Finding(number, last.seq, "severity_mismatch",
                           f"stored severity {row.severity!r}, history says {severity!r}"))
    return out


def _latest_ruleset(events: Sequence[Any]) -> str:
    """The rule set in force after the last migration (or the first event's)."""
    current = str(events[0].ruleset)
    for e in events:
        if e.type == "ruleset_migrated":
            current = str(e.ruleset)
    return current


def verify_all(conn: Connection, progress: Callable[[int], None] | None = None,
               index_fields: IndexFields | None = None) -> VerificationReport:
    report = VerificationReport()
    seqs: dict[str, list[int]] = {}
    last_id = 0
    while True:
        rows = conn.execute(
            sa.select(C.c.id, C.c.number, C.c.scope, C.c.seq, C.c.state, C.c.version,
                      C.c.severity, C.c.fields, C.c.head_seq, C.c.head_hash, C.c.ruleset,
                      C.c.received_at, C.c.department, C.c.handler)
            .where(C.c.id > last_id).order_by(C.c.id).limit(BATCH)
        ).all()
        if not rows:
            break
        last_id = rows[-1].id
        by_id: dict[int, list[Any]] = {r.id: [] for r in rows}
        for ev in conn.execute(
            sa.select(E).where(E.c.complaint_id.in_(list(by_id)))
            .order_by(E.c.complaint_id, E.c.seq)
        ):
            by_id[ev.complaint_id].append(ev)
        for r in rows:
            seqs.setdefault(r.scope, []).append(r.seq)
            report.findings.extend(_check_chain(r, by_id[r.id], index_fields))
            report.events += len(by_id[r.id])
        report.complaints += len(rows)
        if progress is not None:
            progress(len(rows))
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
    return report
