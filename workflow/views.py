"""What the engine hands out: read-only views of complaints and history, masked per actor."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.values import from_json, to_json
from complaintflow.storage.hashing import parse_canonical

__all__ = ["Complaint", "FieldCodec", "HistoryEvent", "Page", "TimerView", "mask_value"]

MASK = "***"


def mask_value(value: Any) -> Any:
    """A recognisable but useless stand-in for personal data (张*** / 138****1234 / z***@x)."""
    if value is None:
        return None
    try:
        text = str(to_json(value)) if not isinstance(value, str) else value
    except TypeError:  # a stored value of no field type (a forged row): masked all the same
        text = str(value)
    if "@" in text:
        local, _, domain = text.partition("@")
        return f"{local[:1]}{MASK}@{domain}"
    digits = sum(c.isdigit() for c in text)
    if digits >= 7:  # a number: 138****5678; a shorter one keeps a quarter at each end
        head, tail = (3, 4) if len(text) >= 11 else (len(text) // 4, len(text) // 4)
        return f"{text[:head]}****{text[len(text) - tail:]}"
    return f"{text[:1]}{MASK}" if text else MASK


@dataclass(frozen=True)
class Complaint:
    """A complaint as one actor may see it. ``fields`` hold typed Python values."""

    number: str
    state: str
    version: int
    severity: str
    fields: Mapping[str, Any]
    received_at: datetime
    updated_at: datetime
    ruleset: str
    department: str | None = None
    handler: str | None = None
    masked: tuple[str, ...] = ()
    escalated_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "escalated_to": self.escalated_to,
            "state": self.state,
            "version": self.version,
            "severity": self.severity,
            "department": self.department,
            "handler": self.handler,
            "received_at": to_json(self.received_at),
            "updated_at": to_json(self.updated_at),
            "ruleset": self.ruleset,
            "fields": {k: to_json(v) for k, v in self.fields.items()},
            "masked": list(self.masked),
        }


@dataclass(frozen=True)
class HistoryEvent:
    """One event of a complaint's history (payload masked for actors without access)."""

    number: str
    seq: int
    type: str
    trigger: str | None
    from_state: str | None
    to_state: str
    actor_id: str
    actor_roles: tuple[str, ...]
    actor_department: str | None
    occurred_at: datetime
    payload: Mapping[str, Any]
    ruleset: str
    schema_version: int
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number, "seq": self.seq, "type": self.type, "trigger": self.trigger,
            "from_state": self.from_state, "to_state": self.to_state,
            "actor": {"id": self.actor_id, "roles": list(self.actor_roles),
                      "department": self.actor_department},
            "occurred_at": to_json(self.occurred_at), "payload": dict(self.payload),
            "ruleset": self.ruleset, "schema_version": self.schema_version,
            "prev_hash": self.prev_hash, "hash": self.hash,
        }


@dataclass(frozen=True)
class TimerView:
    """One run of an SLA clock: its ledger and what is derived from it."""

    timer: str
    label: str
    run: int
    status: str  # running | paused | stopped
    started_at: datetime
    due_at: datetime | None
    provisional: bool
    warned: int
    breached_at: datetime | None
    stopped_at: datetime | None
    unit: str
    budget: int
    remaining: timedelta | None
    pauses: tuple[tuple[str | None, ...], ...]
    extensions: tuple[Mapping[str, Any], ...]

    @property
    def breached(self) -> bool:
        return self.breached_at is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "timer": self.timer, "label": self.label, "run": self.run, "status": self.status,
            "started_at": to_json(self.started_at),
            "due_at": to_json(self.due_at) if self.due_at else None,
            "provisional": self.provisional, "warned": self.warned,
            "breached_at": to_json(self.breached_at) if self.breached_at else None,
            "stopped_at": to_json(self.stopped_at) if self.stopped_at else None,
            "budget": {"unit": self.unit, "amount": self.budget},
            "remaining_seconds": self.remaining.total_seconds() if self.remaining is not None
            else None,
            "pauses": [list(p) for p in self.pauses],
            "extensions": [dict(e) for e in self.extensions],
        }


@dataclass(frozen=True)
class Page:
    """One page of a search."""

    items: tuple[Complaint, ...]
    total: int
    limit: int
    offset: int

    @property
    def next_offset(self) -> int | None:
        nxt = self.offset + len(self.items)
        return nxt if nxt < self.total else None


@dataclass
class FieldCodec:
    """Decode stored field JSON to typed values for one rule set, masking on the way out."""

    rules: RuleSet
    _types: dict[str, Any] = field(default_factory=dict)

    def decode(self, stored: str | Mapping[str, Any]) -> dict[str, Any]:
        raw = parse_canonical(stored) if isinstance(stored, str) else stored
        types = self.rules.subject_types
        out: dict[str, Any] = {}
        for name, value in raw.items():
            vtype = types.get(name)
            out[name] = from_json(vtype, value) if vtype is not None else value
        return out

    def reread(self, stored: Mapping[str, Any], values: Mapping[str, Any],
               only: Collection[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """What ``parse_canonical(canonical(stored))`` and ``decode`` of that give, without
        writing and parsing the text: ``stored`` (each field's JSON form) in key order, and
        the decoded values, taken from ``values`` (what the JSON forms were made from)
        where a value is its own JSON form (the same object) and decoded again where not
        (a decimal, a date, a list), as ``decode`` could give an equal value that is not
        the same (``Decimal('1.50')`` is stored as ``'1.5'``). With ``only``, just those
        names are decoded again: the caller knows the other values came from decoding
        their JSON form."""
        types = self.rules.subject_types
        # lists copied: ``stored`` shares them with the event's payload, which observers get
        raw = {k: list(v) if type(v) is list else v for k, v in sorted(stored.items())}
        out = {k: values[k] for k in raw}
        for name in raw if only is None else only:
            value = raw.get(name)
            if value is not None and out[name] is not value:
                vtype = types.get(name)
                out[name] = from_json(vtype, value) if vtype is not None else value
        return raw, out

    def mask(self, fields: Mapping[str, Any], roles: tuple[str, ...] | None
             ) -> tuple[dict[str, Any], tuple[str, ...]]:
        if roles is not None and self.rules.may_read_personal(roles):
            return dict(fields), ()
        hidden = tuple(sorted(n for n in self.rules.personal_fields if fields.get(n) is not None))
        return {k: (mask_value(v) if k in hidden else v) for k, v in fields.items()}, hidden
