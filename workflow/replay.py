"""Replay: a complaint rebuilt purely from its history and the pinned rule versions.

``replay_events`` never looks at the complaint's current-state row; it folds the events
(upcast to the current payload layout) into a ``Replayed`` snapshot as of any instant. The
same fold drives deep verification, which re-runs every recorded transition through the
guards of the rule version it was decided under.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from complaintflow.actor import Actor
from complaintflow.compiled import Compiled
from complaintflow.errors import TransitionRefused
from complaintflow.states.conditions import Facts
from complaintflow.timers import parse_iso
from complaintflow.verify import Finding
from complaintflow.views import HistoryEvent

__all__ = ["Replayed", "ReplayedTimer", "fold", "replay_events"]


@dataclass
class ReplayedTimer:
    """A clock run as the history tells it."""

    timer: str
    run: int
    started_at: datetime
    budget: dict[str, Any]
    due_at: datetime | None
    provisional: bool
    status: str = "running"  # running | paused | stopped
    paused_since: datetime | None = None
    pauses: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    extensions: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    breached_at: datetime | None = None
    breach_due_at: datetime | None = None
    stopped_at: datetime | None = None
    remaining: timedelta | None = None
    calendar_version: str | None = None  # set when a recompute moved it to newer calendars

    def to_json(self) -> dict[str, Any]:
        def t(v: datetime | None) -> str | None:
            return v.isoformat() if v else None

        return {
            "timer": self.timer, "run": self.run, "status": self.status,
            "started_at": t(self.started_at), "budget": self.budget, "due_at": t(self.due_at),
            "provisional": self.provisional, "paused_since": t(self.paused_since),
            "extensions": self.extensions, "warnings": self.warnings,
            "breached_at": t(self.breached_at), "stopped_at": t(self.stopped_at),
            "remaining_seconds": self.remaining.total_seconds()
            if self.remaining is not None else None,
        }


@dataclass
class Replayed:
    """The complaint as of ``at``, from its history alone."""

    number: str
    at: datetime | None
    state: str
    version: int
    severity: str | None
    fields: dict[str, Any]
    ruleset: str
    received_at: datetime
    escalated_to: str | None
    timers: dict[tuple[str, int], ReplayedTimer]
    events: list[HistoryEvent]

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number, "at": self.at.isoformat() if self.at else None,
            "state": self.state, "version": self.version, "severity": self.severity,
            "fields": self.fields, "ruleset": self.ruleset,
            "received_at": self.received_at.isoformat(), "escalated_to": self.escalated_to,
            "timers": [t.to_json() for t in self.timers.values()],
            "events": [e.to_json() for e in self.events],
        }


def _apply_timer_changes(timers: dict[tuple[str, int], ReplayedTimer],
                         changes: Mapping[str, Any], at: datetime) -> None:
    for item in changes.get("started", []):
        key = (item["timer"], int(item.get("run", 1)))
        timers[key] = ReplayedTimer(
            item["timer"], key[1], parse_iso(item["started_at"]), item["budget"],
            parse_iso(item["due_at"]) if item.get("due_at") else None,
            bool(item.get("provisional")))
    for kind in ("paused", "resumed", "rederived"):
        for item in changes.get(kind, []):
            found = timers.get((item["timer"], int(item.get("run", 1))))
            if found is None:
                continue
            found.due_at = parse_iso(item["due_at"]) if item.get("due_at") else None
            found.budget = item.get("budget", found.budget)
            found.provisional = bool(item.get("provisional"))
            if kind == "paused":
                found.status, found.paused_since = "paused", at
                found.pauses.append((at, None))
            elif kind == "resumed":
                found.status, found.paused_since = "running", None
                if found.pauses:
                    found.pauses[-1] = (found.pauses[-1][0], at)
    for item in changes.get("stopped", []):
        found = timers.get((item["timer"], int(item.get("run", 1))))
        if found is not None:
            found.status, found.stopped_at = "stopped", at


def fold(state: Replayed, event: HistoryEvent) -> None:
    """Apply one event to a replayed snapshot (in place)."""
    p = event.payload
    at = event.occurred_at
    state.state = event.to_state
    state.version = event.seq
    state.ruleset = event.ruleset
    if "fields" in p:
        state.fields.update(p["fields"])
    if "set" in p:
        state.fields.update(p["set"])
        state.fields = {k: v for k, v in state.fields.items() if v is not None}
    for name in p.get("dropped_fields", []):
        state.fields.pop(name, None)
    if "severity" in p:
        state.severity = p["severity"]
    if "timers" in p:
        _apply_timer_changes(state.timers, p["timers"], at)
    if event.type in ("timer_warning", "timer_breached"):
        found = state.timers.get((p["timer"], int(p.get("run", 1))))
        if found is not None:
            record = {"index": p.get("index"), "due_at": p.get("due_at"),
                      "fired_at": at.isoformat(), "lateness_seconds": p.get("lateness_seconds")}
            if event.type == "timer_warning":
                found.warnings.append(record)
            else:
                found.breached_at = at
                found.breach_due_at = parse_iso(p["due_at"])
        if p.get("actions", {}).get("reassign"):
            state.escalated_to = p["actions"]["reassign"]
    elif event.type in ("timer_extended", "deadline_recomputed"):
        found = state.timers.get((p["timer"], int(p.get("run", 1))))
        if found is not None:
            found.due_at = parse_iso(p["due_at"]) if p.get("due_at") else None
            found.provisional = bool(p.get("provisional"))
            if p.get("calendar_version"):
                found.calendar_version = p["calendar_version"]
            if event.type == "timer_extended":
                found.extensions.append({"amount": p.get("amount"), "unit": p.get("unit"),
                                         "at": at.isoformat(), "reason": p.get("reason")})
                found.budget = p.get("budget", found.budget)


def replay_events(number: str, events: Iterable[HistoryEvent], at: datetime | None,
                  remaining: Callable[[ReplayedTimer, str, datetime], timedelta | None]
                  | None = None) -> Replayed | None:
    """Fold ``events`` (oldest first) up to and including ``at``; ``None`` if the complaint
    did not exist yet at ``at``."""
    state: Replayed | None = None
    for event in events:
        if at is not None and event.occurred_at > at:
            break
        if state is None:
            state = Replayed(number, at, event.to_state, event.seq, None, {}, event.ruleset,
                             event.occurred_at, None, {}, [])
        fold(state, event)
        state.events.append(event)
    if state is not None and remaining is not None:
        moment = at or (state.events[-1].occurred_at if state.events else None)
        if moment is not None:
            for t in state.timers.values():
                if t.status == "running" and t.due_at is not None:
                    t.remaining = remaining(t, state.ruleset, moment)
    return state


# -- deep verification ---------------------------------------------------------------------

def deep_findings(
    number: str,
    events: list[HistoryEvent],
    compiled_for: Callable[[str], Compiled],
    now: datetime,
    stored: Mapping[str, Any] | None = None,
) -> Iterator[Finding]:
    """Check that every recorded transition was legal under the rule version in force, and
    that warnings and breaches match what the clocks imply."""
    if not events:
        return
    first = events[0]
    replayed = Replayed(number, None, first.to_state, 0, None, {}, first.ruleset,
                        first.occurred_at, None, {}, [])
    facts = Facts()
    floor: str | None = None
    for event in events:
        if event.type == "transition" and event.trigger is not None:
            compiled = compiled_for(event.ruleset)
            before = compiled.codec.decode(replayed.fields)
            actor = Actor(event.actor_id, event.actor_roles, event.actor_department)
            data = event.payload.get("set", {})
            try:
                step = compiled.machine.step(
                    number, replayed.state, event.trigger, actor, before,
                    compiled.builtins(number, replayed.received_at), facts, data,
                    floor, event.occurred_at)
            except TransitionRefused as exc:
                yield Finding(number, event.seq, "illegal_transition",
                              f"{event.trigger!r} by {event.actor_id} "
                              f"({', '.join(event.actor_roles) or 'no roles'}) was not allowed "
                              f"under rule set {event.ruleset[:12]}: [{exc.check}] {exc.reason}")
            else:
                if step.to_state != event.to_state:
                    yield Finding(number, event.seq, "wrong_target",
                                  f"{event.trigger!r} leads to {step.to_state!r} under the "
                                  f"rules, history says {event.to_state!r}")
                if step.severity != event.payload.get("severity", step.severity):
                    yield Finding(number, event.seq, "wrong_severity",
                                  f"the rules give severity {step.severity!r}, history says "
                                  f"{event.payload.get('severity')!r}")
        facts.record(event.seq, event.trigger, event.actor_id, event.from_state,
                     event.to_state, event.occurred_at)
        if event.type == "timer_breached":
            level = event.payload.get("actions", {}).get("raise_severity")
            if level is not None:
                levels = compiled_for(event.ruleset).rules.severity_levels
                if floor is None or levels.index(level) > levels.index(floor):
                    floor = level
        fold(replayed, event)
    for t in replayed.timers.values():
        if t.breached_at is not None and t.breach_due_at is not None \
                and t.breached_at < t.breach_due_at:
            yield Finding(number, None, "early_breach",
                          f"timer {t.timer} run {t.run} breached at {t.breached_at} before "
                          f"its due time {t.breach_due_at}")
        if t.breached_at is not None and t.due_at is not None and t.breach_due_at is not None \
                and t.due_at > t.breach_due_at and t.breached_at < t.due_at \
                and not t.extensions:
            yield Finding(number, None, "breach_mismatch",
                          f"timer {t.timer} run {t.run} breached for due {t.breach_due_at} "
                          f"but the clock was due {t.due_at}")
        end = t.stopped_at or now
        if t.breached_at is None and t.due_at is not None and t.status != "paused" \
                and t.due_at < end and t.due_at <= now - timedelta(minutes=1):
            yield Finding(number, None, "missed_breach",
                          f"timer {t.timer} run {t.run} was due {t.due_at.isoformat()} "
                          f"and {'stopped' if t.stopped_at else 'is still running'} "
                          f"without a recorded breach")
    if stored is not None:
        if stored.get("state") != replayed.state:
            yield Finding(number, replayed.version, "state_mismatch",
                          f"stored state {stored.get('state')!r}, replay gives "
                          f"{replayed.state!r}")
        stored_fields = json.loads(stored.get("fields", "{}"))
        if stored_fields != replayed.fields:
            yield Finding(number, replayed.version, "fields_mismatch",
                          "stored fields differ from the replayed fields")

