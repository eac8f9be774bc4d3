"""Replay: a complaint rebuilt purely from its history and the pinned rule versions.

``replay_events`` never looks at the complaint's current-state row; it folds the events
(upcast to the current payload layout) into a ``Replayed`` snapshot as of any instant. The
same fold drives deep verification, which re-runs every recorded transition through the
guards of the rule version it was decided under.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from complaintflow import arguments
from complaintflow.actor import Actor
from complaintflow.compiled import Compiled
from complaintflow.errors import (
    CalendarError,
    ComplaintflowError,
    IntegrityError,
    NotFound,
    TransitionRefused,
)
from complaintflow.rules.model import MAX_DURATION
from complaintflow.rules.ruleset import raise_level
from complaintflow.states.conditions import Facts, Scope, fields_read
from complaintflow.states.guards import CompiledTransition
from complaintflow.storage.hashing import iso
from complaintflow.timers import (
    SCHEDULER,
    CompiledTimer,
    Ledger,
    TimerSet,
    parse_iso,
    recorded_actions,
)
from complaintflow.verify import MISSED_AFTER, Finding, StoredEvent, fold_fields
from complaintflow.views import FieldCodec, HistoryEvent
from complaintflow.worktime import WorkingCalendar

__all__ = ["MALFORMED", "DeepVerifier", "Replayed", "ReplayedTimer", "fold", "fold_event",
           "malformed_history", "payload_problem", "replay_events"]


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
    #: the lowest severity the breaches recorded so far allow (``raise_severity``), as the
    #: complaint row's ``severity_floor``; derived only when ``replay_events`` is given
    #: the rule sets' severity levels
    severity_floor: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number, "at": self.at.isoformat() if self.at else None,
            "state": self.state, "version": self.version, "severity": self.severity,
            "severity_floor": self.severity_floor, "fields": self.fields,
            "ruleset": self.ruleset,
            "received_at": self.received_at.isoformat(), "escalated_to": self.escalated_to,
            "timers": [t.to_json() for t in self.timers.values()],
            "events": [e.to_json() for e in self.events],
        }


def _apply_timer_changes(timers: dict[tuple[str, int], ReplayedTimer],
                         changes: Mapping[str, Any], at: datetime,
                         migrated: bool = False) -> None:
    """``migrated``: the changes of a ``ruleset_migrated`` event, whose re-derived clocks
    count on the calendars of the rule set migrated to (the complaint's from then on)."""
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
            if migrated and kind == "rederived":
                found.calendar_version = None
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


def fold(state: Replayed, event: HistoryEvent,
         levels: tuple[str, ...] | None = None) -> None:
    """Apply one event to a replayed snapshot (in place); ``levels``: the severity levels
    of the event's rule set (lowest first), to derive the severity floor."""
    fold_event(state, event.type, event.seq, event.to_state, event.ruleset, event.payload,
               event.occurred_at, levels)


def fold_event(state: Replayed, type: str, seq: int, to_state: str, ruleset: str,
               p: Mapping[str, Any], at: datetime,
               levels: tuple[str, ...] | None = None) -> None:
    """``fold`` from an event's parts (deep verification has no ``HistoryEvent``)."""
    state.state = to_state
    state.version = seq
    state.ruleset = ruleset
    state.fields = fold_fields(state.fields, p)
    if "severity" in p:
        state.severity = p["severity"]
    if "timers" in p:
        _apply_timer_changes(state.timers, p["timers"], at, type == "ruleset_migrated")
    if type in ("timer_warning", "timer_breached"):
        found = state.timers.get((p["timer"], int(p.get("run", 1))))
        if found is not None:
            record = {"index": p.get("index"), "due_at": p.get("due_at"),
                      "fired_at": at.isoformat(), "lateness_seconds": p.get("lateness_seconds")}
            if type == "timer_warning":
                found.warnings.append(record)
            else:
                found.breached_at = at
                found.breach_due_at = parse_iso(p["due_at"])
        actions = p.get("actions")
        if isinstance(actions, Mapping) and actions.get("reassign"):
            state.escalated_to = actions["reassign"]
        if type == "timer_breached" and isinstance(actions, Mapping) and levels is not None:
            raised = actions.get("raise_severity")
            if isinstance(raised, str):  # as the scheduler raises the row's floor
                state.severity_floor = raise_level(levels, state.severity_floor, raised)
    elif type in ("timer_extended", "deadline_recomputed"):
        found = state.timers.get((p["timer"], int(p.get("run", 1))))
        if found is not None:
            found.due_at = parse_iso(p["due_at"]) if p.get("due_at") else None
            found.provisional = bool(p.get("provisional"))
            if p.get("calendar_version"):
                found.calendar_version = p["calendar_version"]
            if type == "timer_extended":
                found.extensions.append({"amount": p.get("amount"), "unit": p.get("unit"),
                                         "at": at.isoformat(), "reason": p.get("reason")})
                found.budget = p.get("budget", found.budget)


def replay_events(number: str, events: Iterable[HistoryEvent], at: datetime | None,
                  remaining: Callable[[ReplayedTimer, str, datetime], timedelta | None]
                  | None = None,
                  levels: Callable[[str], tuple[str, ...]] | None = None) -> Replayed | None:
    """Fold ``events`` (oldest first) up to and including ``at``; ``None`` if the complaint
    did not exist yet at ``at``. ``levels`` gives a rule-set version's severity levels
    (lowest first): with it, the severity floor the recorded breaches raised is derived
    too; without it, ``severity_floor`` stays None."""
    state: Replayed | None = None
    for event in events:
        if at is not None and event.occurred_at > at:
            break
        if state is None:
            state = Replayed(number, at, event.to_state, event.seq, None, {}, event.ruleset,
                             event.occurred_at, None, {}, [])
        fold(state, event, levels(event.ruleset) if levels is not None else None)
        state.events.append(event)
    if state is not None and remaining is not None:
        moment = at or (state.events[-1].occurred_at if state.events else None)
        if moment is not None:
            for t in state.timers.values():
                if t.status == "running" and t.due_at is not None:
                    t.remaining = remaining(t, state.ruleset, moment)
    return state


# -- deep verification ---------------------------------------------------------------------


@dataclass
class _Version:
    """One rule-set version as deep verification uses it, with what it caches."""

    compiled: Compiled
    severity_fields: tuple[str, ...]  # all the severity rules read
    timer_fields: frozenset[str]  # all the timers' start conditions and budget variants read
    candidates: dict[tuple[str, str], tuple[CompiledTransition, ...]] = field(
        default_factory=dict)

    @classmethod
    def of(cls, compiled: Compiled) -> _Version:
        read: set[str] = set()
        for rule in compiled.rules.definition.severity.rules:
            read |= fields_read(rule.when)
        variants: set[str] = set()  # and the start conditions
        for timer in compiled.rules.definition.timers:
            if timer.condition is not None:
                variants |= fields_read(timer.condition)
            for variant in timer.variants:
                variants |= fields_read(variant.when)
        return cls(compiled, tuple(sorted(read)), frozenset(variants))

    def transitions(self, trigger: str, state: str) -> tuple[CompiledTransition, ...]:
        """The transitions ``trigger`` may take from ``state``, in the machine's order."""
        found = self.candidates.get((trigger, state))
        if found is None:
            found = self.candidates[(trigger, state)] = tuple(
                ct for ct in self.compiled.machine.compiled
                if ct.trigger == trigger and state in ct.definition.source)
        return found


class DeepVerifier:
    """The deep part of verification, one complaint at a time (``verify.DeepCheck``).

    Every recorded transition is re-checked under the rule version in force: the candidate
    transitions of (trigger, state) go through the guard pipeline of ``fire``
    (``CompiledTransition.apply_data`` and ``check``, in the machine's order, the first
    allowed one wins) and must lead where the history says, with the severity it says. The
    severity function is re-run only when a field it reads (or the floor) changed since the
    complaint's previous transition. When no candidate is allowed, ``ComplaintMachine.step``
    runs to name the refusal exactly as ``fire`` would. Fields are decoded incrementally
    (only what an event sets). Then the clocks' warnings and breaches, and the current
    row, are compared with the replay."""

    def __init__(self, compiled_for: Callable[[str], Compiled], now: datetime,
                 upcast: Callable[[dict[str, Any], int], dict[str, Any]]) -> None:
        self._compiled_for = compiled_for
        self._versions: dict[str, _Version] = {}
        self._actors: dict[tuple[str, str, str | None], tuple[Actor, tuple[str, ...]]] = {}
        self._now = now
        self._upcast = upcast
        self._zones: dict[str, ZoneInfo] = {}
        self._unread: dict[str, Scope] = {}
        self._expected_actions: dict[tuple[str, str, str, int], dict[str, Any]] = {}

    def version(self, ruleset: str) -> _Version:
        found = self._versions.get(ruleset)
        if found is None:
            found = self._versions[ruleset] = _Version.of(self._compiled_for(ruleset))
        return found

    def _actor(self, actor_id: str, roles: str, department: str | None
               ) -> tuple[Actor, tuple[str, ...]]:
        key = (actor_id, roles, department)
        found = self._actors.get(key)
        if found is None:
            listed = tuple(json.loads(roles))
            found = self._actors[key] = (Actor(actor_id, listed, department), listed)
        return found

    def __call__(self, row: Any, events: Sequence[StoredEvent]) -> list[Finding]:
        return list(self.findings(row.number, events, {
            "state": row.state, "fields": row.fields, "severity_floor": row.severity_floor,
            "escalated_to": row.escalated_to}))

    def findings(self, number: str, events: Sequence[StoredEvent],
                 stored: Mapping[str, Any] | None = None) -> Iterator[Finding]:
        """Check that every recorded transition was legal under the rule version in force,
        that warnings and breaches match what the clocks imply and each breach records the
        actions of its timer's ``on_breach``; ``stored``: the current row's ``state``,
        ``fields``, ``severity_floor`` and ``escalated_to`` (those given), compared with
        the replay. A payload the engine would never write (a forger re-hashed it) ends the
        complaint's checks with a ``bad_payload`` finding for each malformed event."""
        try:
            yield from self._findings(number, events, stored)
        except MALFORMED:
            malformed = list(self._malformed(number, events))
            if not malformed:
                raise  # nothing stored is malformed: a fault of the verifier itself
            yield from malformed

    def _malformed(self, number: str, events: Sequence[StoredEvent]) -> Iterator[Finding]:
        """A ``bad_payload`` finding for each event whose payload ``payload_problem``
        calls malformed (asked only after checking the complaint failed)."""
        for event in events:
            raw = event.parsed()
            if raw is None:
                continue  # already a finding
            try:
                p = self._upcast(raw, event.schema_version)
                codec: FieldCodec | None = self.version(event.ruleset).compiled.codec
            except ComplaintflowError:
                codec = None
                p = raw
            problem = payload_problem(event.type, p, codec)
            if problem is not None:
                yield Finding(number, event.seq, "bad_payload",
                              f"the stored {event.type} payload is malformed: {problem}")

    def _findings(self, number: str, events: Sequence[StoredEvent],
                  stored: Mapping[str, Any] | None) -> Iterator[Finding]:
        if not events:
            return
        upcast = self._upcast
        versions = self._versions
        first = events[0]
        received = datetime.fromisoformat(first.occurred_at)
        replayed = Replayed(number, None, first.to_state, 0, None, {}, first.ruleset,
                            received, None, {}, [])
        facts = Facts()
        floor: str | None = None
        escalated: str | None = None
        typed: dict[str, Any] = {}  # replayed.fields decoded under typed_version's types
        typed_version: _Version | None = None
        builtins: dict[str, dict[str, Any]] = {}
        severity_memo: tuple[Any, ...] | None = None  # (version, floor, values, severity)
        clocks: _ClockCheck | None = None
        #: transitions breaches called for (timer, trigger, seq of the breach), due in the
        #: same transaction as the breach: as the transition or its timer_action_refused
        wanted: list[tuple[str, str, int]] = []
        wanted_at: datetime | None = None
        for event in events:
            raw = event.parsed()
            if raw is None:
                yield Finding(number, event.seq, "bad_payload",
                              "the stored payload is not a JSON object")
                return
            ruleset = event.ruleset
            version = versions.get(ruleset)
            if version is None:
                try:
                    version = self.version(ruleset)
                except NotFound:
                    yield Finding(number, event.seq, "unknown_ruleset",
                                  f"rule set {ruleset[:12]} is not stored: the event "
                                  "cannot be checked")
                    return
            p = upcast(raw, event.schema_version)
            at = datetime.fromisoformat(event.occurred_at)
            type_, trigger = event.type, event.trigger
            step_found = False  # the step itself was not allowed: its clock plan follows
            if wanted and at != wanted_at:
                yield from _unanswered(number, wanted)
            if event.actor_id == SCHEDULER and (
                    type_ == "timer_action_refused"
                    or (type_ == "transition" and trigger is not None)):
                yield from self._breach_action(number, event, p, wanted, replayed, typed,
                                               typed_version, builtins, received, facts,
                                               floor, at)
            if type_ != "transition" or trigger is None:
                found = self._other_event(number, event, p, version, replayed)
                if found:
                    step_found = True
                    yield from found
            else:
                compiled = version.compiled
                if typed_version is not version:
                    typed = compiled.codec.decode(replayed.fields)
                    typed_version = version
                actor, roles = self._actor(event.actor_id, event.actor_roles,
                                           event.actor_department)
                data = p.get("set", {})
                base = builtins.get(compiled.version)
                if base is None:
                    base = builtins[compiled.version] = compiled.builtins(number, received)
                state = replayed.state
                outcome: tuple[str, str] | None = None
                machine = compiled.machine
                rules = machine.rules
                for ct in version.transitions(trigger, state):
                    # ComplaintMachine's guard step for one candidate (_Attempt.run)
                    updated, problems = ct.apply_data(rules, typed, data, recorded=True)
                    values = tuple(map(updated.get, version.severity_fields))
                    if severity_memo is not None and severity_memo[0] is version \
                            and severity_memo[1] == floor and severity_memo[2] == values:
                        severity = severity_memo[3]
                    else:
                        severity = machine.severity(updated, floor)
                        severity_memo = (version, floor, values, severity)
                    # the scope's fields: {**updated, **base, "state": …, "severity": …},
                    # built in place (updated is this candidate's own copy)
                    updated.update(base)
                    updated["state"] = state
                    updated["severity"] = severity
                    scope = Scope(updated, actor, facts, at, machine.calendars,
                                  rules.definition.calendar)
                    if ct.check(rules, actor, scope, problems, typed) is None:
                        outcome = (ct.definition.to, severity)
                        break
                if outcome is None:
                    try:  # refused: the machine names the check exactly as fire would
                        step = machine.step(number, state, trigger, actor, typed, base, facts,
                                            data, floor, at, recorded=True)
                    except TransitionRefused as exc:
                        step_found = True
                        yield Finding(number, event.seq, "illegal_transition",
                                      f"{trigger!r} by {event.actor_id} "
                                      f"({', '.join(roles) or 'no roles'}) was not allowed "
                                      f"under rule set {ruleset[:12]}: [{exc.check}] "
                                      f"{exc.reason}")
                    else:
                        outcome = (step.to_state, step.severity)
                if outcome is not None:
                    to_state, severity = outcome
                    if to_state != event.to_state:
                        step_found = True
                        yield Finding(number, event.seq, "wrong_target",
                                      f"{trigger!r} leads to {to_state!r} under the "
                                      f"rules, history says {event.to_state!r}")
                    if severity != p.get("severity", severity):
                        step_found = True
                        yield Finding(number, event.seq, "wrong_severity",
                                      f"the rules give severity {severity!r}, history says "
                                      f"{p.get('severity')!r}")
            facts.record(event.seq, trigger, event.actor_id, event.from_state,
                         event.to_state, at)
            if type_ == "timer_warning":
                wrong = self._actions(number, event, p, "warning")
                if wrong is not None:
                    yield wrong
            elif type_ == "timer_breached":
                # the floor and the escalation follow the history; the actions themselves
                # are checked against the rule
                actions = p.get("actions")
                wrong = self._actions(number, event, p, "breach")
                if wrong is not None:
                    yield wrong
                if isinstance(actions, Mapping):
                    level = actions.get("raise_severity")
                    if isinstance(level, str):
                        floor = raise_level(version.compiled.rules.severity_levels, floor,
                                            level)
                    if actions.get("reassign"):
                        escalated = str(actions["reassign"])
                    if isinstance(actions.get("fire"), str):
                        wanted.append((str(p.get("timer")), actions["fire"], event.seq))
                        wanted_at = at
            if typed_version is not None and ("fields" in p or "set" in p
                                              or "dropped_fields" in p):
                codec = typed_version.compiled.codec
                if "fields" in p:
                    typed.update(codec.decode(p["fields"]))
                if "set" in p:
                    typed.update(codec.decode(p["set"]))
                    if None in typed.values():
                        typed = {k: v for k, v in typed.items() if v is not None}
                for name in p.get("dropped_fields", ()):
                    typed.pop(name, None)
            # fold_event without the timers and escalation: the clocks are checked on
            # ledgers of their own (_ClockCheck) and nothing here reads ReplayedTimer
            replayed.state, replayed.version = event.to_state, event.seq
            replayed.ruleset = ruleset
            replayed.fields = fold_fields(replayed.fields, p)
            if "severity" in p:
                replayed.severity = p["severity"]
            if clocks is None:
                clocks = _ClockCheck(self, number, self._zone(ruleset), replayed, facts,
                                     builtins, received)
            if "timers" in p or type_ in _CLOCK_EVENTS or type_ in _PLANNED:
                found = clocks.event(event, p, at, version, typed, typed_version,
                                     plan=not step_found)
                if found:
                    yield from found
        yield from _unanswered(number, wanted)
        if clocks is not None:
            yield from clocks.missed(self._now)
        if stored is not None:
            if stored.get("state") != replayed.state:
                yield Finding(number, replayed.version, "state_mismatch",
                              f"stored state {stored.get('state')!r}, replay gives "
                              f"{replayed.state!r}")
            stored_fields = json.loads(stored.get("fields", "{}"))
            if stored_fields != replayed.fields:
                yield Finding(number, replayed.version, "fields_mismatch",
                              "stored fields differ from the replayed fields")
            if "severity_floor" in stored and stored["severity_floor"] != floor:
                yield Finding(number, replayed.version, "severity_floor_mismatch",
                              f"stored severity floor {stored['severity_floor']!r}, the "
                              f"breaches recorded give {floor!r}")
            if "escalated_to" in stored and stored["escalated_to"] != escalated:
                yield Finding(number, replayed.version, "escalation_mismatch",
                              f"stored escalated to {stored['escalated_to']!r}, the breaches "
                              f"recorded give {escalated!r}")

    def _breach_action(self, number: str, event: StoredEvent, p: Mapping[str, Any],
                       wanted: list[tuple[str, str, int]], replayed: Replayed,
                       typed: dict[str, Any], typed_version: _Version | None,
                       builtins: dict[str, dict[str, Any]], received: datetime, facts: Facts,
                       floor: str | None, at: datetime) -> Iterator[Finding]:
        """A transition the scheduler fired, or its refusal, must answer a breach of the same
        transaction whose ``on_breach`` fires that trigger; a refusal must be one the rules
        give (the transition itself is checked as every transition is)."""
        refused = event.type == "timer_action_refused"
        trigger = str(p.get("trigger") if refused else event.trigger)
        timer = p.get("timer") if refused else None
        match = next((w for w in wanted if w[1] == trigger and timer in (None, w[0])), None)
        if match is None:
            what = "a refusal of" if refused else "the transition"
            yield Finding(number, event.seq, "unexpected_breach_action",
                          f"{what} {trigger!r} by the scheduler answers no breach of this "
                          "transaction that fires it")
            return
        wanted.remove(match)
        if not refused:
            return
        version = self.version(event.ruleset)
        compiled = version.compiled
        if typed_version is not version:
            typed = compiled.codec.decode(replayed.fields)
        base = builtins.get(compiled.version)
        if base is None:
            base = builtins[compiled.version] = compiled.builtins(number, received)
        roles = tuple(sorted({r for t in compiled.rules.transitions_by_trigger.get(trigger, ())
                              for r in t.roles}))
        try:  # as Scheduler._fire_action tries it
            compiled.machine.step(number, replayed.state, trigger, Actor(SCHEDULER, roles),
                                  typed, base, facts, {}, floor, at)
        except TransitionRefused:
            return
        yield Finding(number, event.seq, "wrong_action_refusal",
                      f"the breach of timer {match[0]} (seq {match[2]}) fires {trigger!r}, "
                      f"which the rules allowed then; history records it refused")

    def _actions(self, number: str, event: StoredEvent, p: Mapping[str, Any],
                 kind: str) -> Finding | None:
        """A warning's or breach's recorded actions against those its timer's rules give in
        the rule set in force (``timers.recorded_actions``, as the scheduler records them)."""
        timer = str(p.get("timer"))
        index = p.get("index", 1)
        key = (event.ruleset, timer, kind, index if isinstance(index, int) else 0)
        expected = self._expected_actions.get(key)
        if expected is None:
            found = self.version(event.ruleset).compiled.timers.by_id.get(timer)
            if kind == "warning" and (found is None or not
                                      1 <= key[3] <= len(found.definition.warnings)):
                return None  # a warning the rules do not have: unexpected_warning says so
            expected = self._expected_actions[key] = recorded_actions(found, kind, key[3])
        actions = p.get("actions")
        if actions == expected:
            return None
        if not isinstance(actions, Mapping):
            differ = f"actions recorded {actions!r}, the rule gives {_shown(expected)}"
        else:
            differ = "; ".join(
                f"{name} recorded {_shown(actions.get(name))}, the rule gives "
                f"{_shown(expected.get(name))}"
                for name in (*_ACTIONS, *sorted(set(actions) - set(_ACTIONS)))
                if actions.get(name) != expected.get(name))
        rule = "on_breach" if kind == "breach" else f"warning {key[3]}"
        return Finding(number, event.seq, f"wrong_{kind}_actions",
                       f"timer {timer} run {p.get('run', 1)}: {differ} ({rule} of rule set "
                       f"{event.ruleset[:12]})")

    def _other_event(self, number: str, event: StoredEvent, p: Mapping[str, Any],
                     version: _Version, replayed: Replayed) -> list[Finding]:
        """An event that is not a transition: the submission is checked against the rules
        of its version (initial state, a role allowed to submit, the severity the fields
        give); any other kind must leave the state and the fields as they were and the
        severity too, but for a breach raising it."""
        seq, type_ = event.seq, event.type
        compiled = version.compiled
        rules = compiled.rules
        out: list[Finding] = []
        if seq == 1 or type_ == "submitted":
            if seq != 1 or type_ != "submitted":
                out.append(Finding(number, seq, "illegal_event",
                                   f"a {type_!r} event at position {seq}: a history starts "
                                   "with its submission, and only there"))
                return out
            _, roles = self._actor(event.actor_id, event.actor_roles, event.actor_department)
            allowed = rules.definition.submit.roles
            if event.to_state != rules.initial:
                out.append(Finding(number, seq, "illegal_event",
                                   f"submitted into {event.to_state!r}, the rules' initial "
                                   f"state is {rules.initial!r}"))
            unknown = [r for r in roles if r not in rules.roles]
            if unknown:
                out.append(Finding(number, seq, "illegal_event",
                                   f"submitted by {event.actor_id} with roles the rules do "
                                   f"not declare: {', '.join(unknown)}"))
            elif allowed != "*" and not set(roles) & set(allowed):
                out.append(Finding(number, seq, "illegal_event",
                                   f"submitted by {event.actor_id} "
                                   f"({', '.join(roles) or 'no roles'}), the rules allow "
                                   f"{', '.join(allowed)}"))
            try:
                values = compiled.codec.decode(p.get("fields", {}))
                severity = compiled.machine.severity(values, None)
            except (ComplaintflowError, TypeError, ValueError, AttributeError) as exc:
                out.append(Finding(number, seq, "illegal_event",
                                   f"the submitted fields do not decode under the rules: "
                                   f"{exc}"))
                return out
            if p.get("severity") != severity:
                out.append(Finding(number, seq, "wrong_severity",
                                   f"the rules give severity {severity!r}, history says "
                                   f"{p.get('severity')!r}"))
            return out
        if type_ == "transition":  # without a trigger
            out.append(Finding(number, seq, "illegal_transition",
                               "a transition event without a trigger"))
            return out
        if type_ not in _EVENT_TYPES:
            out.append(Finding(number, seq, "illegal_event", f"unknown event type {type_!r}"))
            return out
        if type_ == "ruleset_migrated":
            return out  # moves state, fields and severity by the migration plan
        if event.to_state != event.from_state:
            out.append(Finding(number, seq, "illegal_event",
                               f"a {type_!r} event moved the complaint from "
                               f"{event.from_state!r} to {event.to_state!r}"))
        if "fields" in p or "set" in p or "dropped_fields" in p:
            changed = [key for key in ("fields", "set", "dropped_fields") if key in p]
            out.append(Finding(number, seq, "illegal_event",
                               f"a {type_!r} event changes fields ({', '.join(changed)})"))
        if "severity" in p:
            expected = replayed.severity
            level = p.get("actions", {}).get("raise_severity") \
                if type_ == "timer_breached" and isinstance(p.get("actions"), dict) else None
            if isinstance(level, str) and level in rules.severity_levels:
                expected = raise_level(rules.severity_levels, expected, level)
            if p["severity"] != expected:
                out.append(Finding(number, seq, "wrong_severity",
                                   f"a {type_!r} event records severity "
                                   f"{p['severity']!r}, the complaint had {expected!r}"))
        return out

    def unread_scope(self, version: str) -> Scope:
        """A scope for rule code that is known not to read it."""
        found = self._unread.get(version)
        if found is None:
            compiled = self.version(version).compiled
            found = self._unread[version] = compiled.scope({}, Actor("", ()), Facts(),
                                                            self._now)
        return found

    def _zone(self, version: str) -> ZoneInfo:
        """The zone the rules of ``version`` show times in."""
        zone = self._zones.get(version)
        if zone is None:
            zone = self._zones[version] = ZoneInfo(
                self.version(version).compiled.rules.definition.timezone)
        return zone

    def _calendar(self, name: str | None, version: str) -> WorkingCalendar | None:
        """The calendar ``name`` of rule-set ``version`` (``Engine.calendar_lookup``)."""
        if name is None:
            return None
        return self.version(version).compiled.calendars.get(name)


def _unanswered(number: str, wanted: list[tuple[str, str, int]]) -> Iterator[Finding]:
    """Breaches whose transaction ended without the transition their ``on_breach`` fires,
    or its refusal; ``wanted`` is emptied."""
    for timer, trigger, seq in wanted:
        yield Finding(number, seq, "missing_breach_action",
                      f"the breach of timer {timer} fires {trigger!r}; no such transition or "
                      "refusal follows in its transaction")
    wanted.clear()


#: the actions a breach records, in the order the scheduler adds them
_ACTIONS = ("raise_severity", "reassign", "fire", "notify")


def _shown(value: Any) -> str:
    """An action's value as a finding shows it."""
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value) if not isinstance(value, str) else value


# -- clocks ---------------------------------------------------------------------------------

#: every kind of event the engine writes
_EVENT_TYPES = frozenset({"submitted", "transition", "customer_consent", "timer_extended",
                          "deadline_recomputed", "timer_warning", "timer_breached",
                          "timers_rederived", "timer_action_refused", "ruleset_migrated"})
_CLOCK_EVENTS = frozenset({"timer_warning", "timer_breached", "customer_consent",
                           "timer_extended", "deadline_recomputed"})
_Key = tuple[str, int]  # (timer, run)
#: the events whose clock changes the timer rules decide (``sla.plan_event``)
_PLANNED = frozenset({"submitted", "transition"})
_Deadline = tuple[str, int]  # ("warning", index) or ("breach", 0), as the deadlines table
_BREACH: _Deadline = ("breach", 0)


@dataclass
class _Clock:
    """One clock run re-derived from its replayed ledger, with the deadlines the scheduler
    holds for it (``sla.replace_deadlines``: a change replaces those still ahead; those
    already due stay and fire late, once)."""

    timer: CompiledTimer
    timers: TimerSet  # of the rule version whose calendar it counts on
    ledger: Ledger
    changed_seq: int  # the event that started it or last changed it
    breach: datetime | None = None
    pending: dict[_Deadline, datetime] = field(default_factory=dict)
    fired: set[_Deadline] = field(default_factory=set)
    stopped: bool = False


class _ClockCheck:
    """Warnings and breaches of one complaint against the instants its clocks imply.

    Each clock's ledger is rebuilt from the history (start, budget from the timer
    definition of the rule version in force and the replayed fields and severity, calendar
    and calendar version, pauses, extensions) and derived with ``TimerSet.derive`` only
    when an event changes it."""

    def __init__(self, verifier: DeepVerifier, number: str, zone: ZoneInfo,
                 replayed: Replayed, facts: Facts, builtins: dict[str, dict[str, Any]],
                 received: datetime) -> None:
        self._v = verifier
        self._number = number
        self._zone = zone
        self.clocks: dict[_Key, _Clock] = {}
        self.active: dict[str, _Key] = {}  # timer -> its last run not stopped
        self.last_run: dict[str, int] = {}
        self._consent: dict[str, datetime] = {}  # timer -> the last consent given for it
        self._consent_event: tuple[int, str, str] | None = None  # (seq, timer, actor id)
        # what the timer rules' scope is built from (see _scope): the complaint's replay,
        # facts and built-ins, updated in place as the events are folded in ...
        self._replayed = replayed
        self._facts = facts
        self._builtins = builtins
        self._received = received
        # ... and the event being checked, with the fields after it (set by ``event``)
        self._event: StoredEvent | None = None
        self._at = received
        self._typed: Mapping[str, Any] = {}
        self._typed_version: _Version | None = None
        self._scoped: tuple[str, Scope] | None = None  # built for this event: (version, it)

    def _t(self, moment: datetime | None) -> str:
        return moment.astimezone(self._zone).isoformat() if moment is not None else "none"

    def _claimed_start(self, item: Mapping[str, Any], ledger: Ledger, key: _Key,
                       seq: int) -> Finding | None:
        """The start instant and budget a started clock's entry records (replay counts the
        clock from them) against those the rules give (``timer_payload`` wrote them)."""
        start, budget = item.get("started_at"), item.get("budget")
        if start == iso(ledger.started_at) and type(budget) is dict \
                and budget.get("unit") == ledger.unit and budget.get("amount") == ledger.budget:
            return None
        if not isinstance(start, str) or type(budget) is not dict:
            return self._finding(seq, "bad_payload", key, "was started with no readable "
                                 "start instant or budget")
        return self._finding(seq, "wrong_due", key, f"records a start at {start[:40]!r} "
                             f"with a budget of {budget!r:.60}, the rules give "
                             f"{iso(ledger.started_at)} and {ledger.budget} {ledger.unit}")

    def _finding(self, seq: int, kind: str, key: _Key, text: str) -> Finding:
        return Finding(self._number, seq, kind, f"timer {key[0]} run {key[1]} {text}")

    def _scope(self, version: str) -> Scope:
        """The scope the engine gives the timer rules after the current event, with the
        fields the start conditions and budget variants read (built on demand, once per
        event: only a condition, a variant budget or an aligned start reads it)."""
        scoped = self._scoped
        if scoped is not None and scoped[0] == version:
            return scoped[1]
        v = self._v
        found = v.version(version)
        compiled = found.compiled
        event = self._event
        assert event is not None
        actor, _ = v._actor(event.actor_id, event.actor_roles, event.actor_department)
        replayed = self._replayed
        fields = replayed.fields
        builtins = self._builtins
        base = builtins.get(compiled.version)
        if base is None:
            base = builtins[compiled.version] = compiled.builtins(self._number, self._received)
        decoded = self._typed if self._typed_version is found else compiled.codec.decode(
            {k: fields[k] for k in found.timer_fields if k in fields})
        values = {**decoded, **base, "severity": replayed.severity, "state": replayed.state}
        done = compiled.scope(values, actor, self._facts, self._at)
        self._scoped = (version, done)
        return done

    def _derive(self, clock: _Clock, key: _Key, seq: int, at: datetime,
                recorded: Any) -> Finding | None:
        """Derive after a change at ``at`` and compare with the recorded due time."""
        ledger = clock.ledger
        due = clock.timers.derive(clock.timer, ledger,
                                  self._v._calendar(ledger.calendar, ledger.calendar_version))
        breach = due.breach
        clock.breach, clock.changed_seq = breach, seq
        pending = clock.pending
        kept = {k: v for k, v in pending.items() if v <= at} if pending else {}
        if breach is not None:
            fired = clock.fired
            for index, moment in due.warnings:
                deadline = ("warning", index)
                if deadline not in kept and deadline not in fired:
                    kept[deadline] = moment
            if _BREACH not in kept and _BREACH not in fired:
                kept[_BREACH] = breach
        clock.pending = kept
        stated = parse_iso(recorded) if isinstance(recorded, str) and recorded else None
        if stated != breach:
            return self._finding(seq, "wrong_due", key,
                                 f"recorded due {self._t(stated)}, its ledger gives "
                                 f"{self._t(breach)}")
        return None

    def event(self, event: StoredEvent, p: Mapping[str, Any], at: datetime,
              found: _Version, typed: Mapping[str, Any], typed_version: _Version | None,
              plan: bool = True) -> list[Finding]:
        """The findings of one event (already folded into the replay) of rule version
        ``found``; ``typed``: the fields after it as ``typed_version`` decodes them;
        ``plan``: also whether it stops, pauses, resumes and starts the clocks the rules
        say (not after a step already found not allowed, whose clock changes follow from
        it)."""
        type_, seq = event.type, event.seq
        if type_ in ("timer_warning", "timer_breached"):
            return self._fired(event, p, at)
        out: list[Finding] = []
        if type_ == "customer_consent":
            consent = p.get("consent") or {}
            if isinstance(consent, dict) and consent.get("given_at"):
                self._consent[str(p.get("timer"))] = parse_iso(consent["given_at"])
                self._consent_event = (seq, str(p.get("timer")), event.actor_id)
            return out
        if type_ in ("timer_extended", "deadline_recomputed"):
            key = (str(p.get("timer")), int(p.get("run", 1)))
            clock = self.clocks.get(key)
            if clock is None:
                if type_ == "timer_extended":
                    out.append(self._finding(seq, "extension_not_allowed", key,
                                             "was extended but no such clock ran"))
                return out
            if type_ == "timer_extended":
                out.extend(self._extension_allowed(clock, key, event))
                out.extend(self._late_extension(clock, key, seq, at))
                clock.ledger.extensions.append({"amount": int(p.get("amount", 0))})
            elif p.get("calendar_version"):
                clock.ledger.calendar_version = str(p["calendar_version"])
            wrong = self._derive(clock, key, seq, at, p.get("due_at"))
            if wrong is not None:
                out.append(wrong)
            return out
        changes = p.get("timers", {})
        if type(changes) is not dict and not isinstance(changes, Mapping):
            return out
        self._event, self._at, self._scoped = event, at, None
        self._typed, self._typed_version = typed, typed_version
        if plan and type_ in _PLANNED:
            self._plan(event, changes, found, out)
        migrated = type_ == "ruleset_migrated"
        version = event.ruleset
        clocks, active = self.clocks, self.active
        touched: dict[_Key, Any] = {}
        for item in changes.get("stopped", ()):
            key = (item["timer"], int(item.get("run", 1)))
            clock = clocks.get(key)
            if clock is not None:
                clock.stopped = True  # deadlines already due still fire
                if active.get(key[0]) == key:
                    del active[key[0]]
                if clock.pending:
                    clock.pending = {k: v for k, v in clock.pending.items() if v <= at}
        for kind in ("paused", "resumed", "rederived"):
            for item in changes.get(kind, ()):
                key = (item["timer"], int(item.get("run", 1)))
                clock = clocks.get(key)
                if clock is None:
                    continue
                ledger = clock.ledger
                if kind == "paused":
                    ledger.pause(at, f"state:{event.to_state}")
                elif kind == "resumed":
                    ledger.resume(at)
                else:
                    timers = found.compiled.timers
                    timer = timers.by_id.get(key[0], clock.timer)
                    ledger.unit, ledger.amount = timer.budget_for(self._scope(version)) \
                        if timer.variants else (timer.unit, timer.amount)
                    if migrated:
                        clock.timer, clock.timers = timer, timers
                        ledger.calendar = timer.definition.calendar or timers.default_calendar
                        ledger.calendar_version = version
                touched[key] = item.get("due_at")
        for key, recorded in touched.items():
            wrong = self._derive(clocks[key], key, seq, at, recorded)
            if wrong is not None:
                out.append(wrong)
        timers = found.compiled.timers
        last_run = self.last_run
        for item in changes.get("started", ()):
            key = (item["timer"], int(item.get("run", 1)))
            started = timers.by_id.get(key[0])
            if started is None:
                out.append(self._finding(seq, "wrong_due", key, f"is not a timer of rule "
                                         f"set {version[:12]}"))
                continue
            timer = started
            definition = timer.definition
            if timer.variants or definition.align_to_opening:
                # a timer without variants never reads the scope (CompiledTimer.budget_for)
                ledger = timers.new_ledger(
                    timer, self._scope(version) if timer.variants
                    else self._v.unread_scope(version), at)
            else:  # what new_ledger gives, without building a scope it would not read
                ledger = Ledger(at, timer.unit, timer.amount,
                                definition.calendar or timers.default_calendar, version)
            if not migrated and event.to_state in definition.pause:
                ledger.pause(at, f"state:{event.to_state}")
            clock = clocks[key] = _Clock(timer, timers, ledger, seq)
            active[key[0]] = key
            if key[1] > last_run.get(key[0], 0):
                last_run[key[0]] = key[1]
            claimed = self._claimed_start(item, ledger, key, seq)
            if claimed is not None:  # what replay would count the clock from
                out.append(claimed)
            wrong = self._derive(clock, key, seq, at, item.get("due_at"))
            if wrong is not None:
                out.append(wrong)
        return out

    def _plan(self, event: StoredEvent, changes: Mapping[str, Any], found: _Version,
              out: list[Finding]) -> None:
        """Which clocks the timer rules of the event's version (``found``) stop, pause,
        resume and start at a submission or transition (``sla.plan_event``, from the clocks
        replayed so far), against the ones the event records (budgets are checked where
        they are derived); the findings go to ``out``."""
        timers = found.compiled.timers
        transition = event.type == "transition"
        trigger, to_state = event.trigger, event.to_state
        stops, pauses = timers.stops_and_pauses(trigger, to_state)
        by_id = timers.by_id
        stopped: list[_Key] = []
        paused: list[_Key] = []
        resumed: list[_Key] = []
        clocks, active = self.clocks, self.active
        for name, key in active.items():
            if transition and name in stops:
                stopped.append(key)
                continue
            marks = clocks[key].ledger.pauses  # Ledger.paused: the last pause not ended
            if name in pauses:
                if not (marks and marks[-1][1] is None):
                    paused.append(key)
            elif marks and marks[-1][1] is None and name in by_id:
                resumed.append(key)
        started: list[_Key] = []
        for timer in timers.starters("transition" if transition else "receipt", trigger,
                                     event.from_state, to_state):
            name = timer.definition.id
            if name in active:
                continue
            if timer.condition is not None and not timer.condition(self._scope(event.ruleset)):
                continue
            started.append((name, self.last_run.get(name, 0) + 1))
        for what, keys in (("stopped", stopped), ("paused", paused), ("resumed", resumed),
                           ("started", started)):
            items = changes.get(what, ())
            if not keys and not items:
                continue
            if type(items) is list and _names(items, keys):
                continue
            recorded: set[_Key] = set()
            for item in items:
                if isinstance(item, Mapping):
                    recorded.add((str(item.get("timer")), int(item.get("run", 1))))
            expected = set(keys)
            if expected == recorded:
                continue
            for key in sorted(expected - recorded):
                out.append(self._finding(event.seq, "wrong_timers", key,
                                         f"is {what} here by the rules, the history does "
                                         "not record it"))
            for key in sorted(recorded - expected):
                out.append(self._finding(event.seq, "wrong_timers", key,
                                         f"is recorded {what} here, the rules do not do "
                                         "that"))

    def _extension_allowed(self, clock: _Clock, key: _Key,
                           event: StoredEvent) -> Iterator[Finding]:
        """What ``Engine.extend_timer`` requires: the customer's consent recorded just
        before, by the same actor, for the same timer; a running clock the rule file lets
        be extended, by one of its roles."""
        seq = event.seq
        if self._consent_event != (seq - 1, key[0], event.actor_id):
            yield self._finding(seq, "unconsented_extension", key,
                                "was extended without the customer's consent recorded "
                                "just before it by the same actor")
        definition = clock.timer.definition
        _, roles = self._v._actor(event.actor_id, event.actor_roles, event.actor_department)
        if clock.stopped:
            yield self._finding(seq, "extension_not_allowed", key,
                                "was extended after it stopped")
        if not definition.extendable:
            yield self._finding(seq, "extension_not_allowed", key,
                                "was extended but the rule file does not allow extending it")
        elif definition.extend_roles and not set(roles) & set(definition.extend_roles):
            yield self._finding(seq, "extension_not_allowed", key,
                                f"was extended by {event.actor_id} "
                                f"({', '.join(roles) or 'no roles'}); the rule file allows "
                                f"{', '.join(definition.extend_roles)}")

    def _late_extension(self, clock: _Clock, key: _Key, seq: int,
                        at: datetime) -> Iterator[Finding]:
        due = clock.pending.get(("breach", 0))
        if ("breach", 0) in clock.fired:
            yield self._finding(seq, "late_extension", key,
                                "was extended after its breach was recorded")
        elif due is not None and at >= due:
            yield self._finding(seq, "late_extension", key,
                                f"was extended at {self._t(at)}, at or after its due "
                                f"instant {self._t(due)}")
        elif due is not None and self._consent.get(key[0], at) >= due:
            yield self._finding(seq, "late_extension", key,
                                f"was extended on a consent given "
                                f"{self._t(self._consent.get(key[0]))}, at or after its due "
                                f"instant {self._t(due)}")

    def _fired(self, event: StoredEvent, p: Mapping[str, Any], at: datetime
               ) -> list[Finding]:
        key = (str(p.get("timer")), int(p.get("run", 1)))
        clock = self.clocks.get(key)
        seq = event.seq
        warning = event.type == "timer_warning"
        deadline: _Deadline = ("warning", int(p.get("index") or 0)) if warning else _BREACH
        stated = parse_iso(p["due_at"]) if isinstance(p.get("due_at"), str) else None
        expected = clock.pending.pop(deadline, None) if clock is not None else None
        what = f"warning {deadline[1]}" if warning else "breach"
        if clock is None or expected is None:
            why = ("it has no such clock" if clock is None else
                   "it was recorded before" if deadline in clock.fired else
                   "its ledger implies none pending")
            return [Finding(self._number, seq, "unexpected_warning" if warning
                            else "unexpected_breach",
                            f"timer {key[0]} run {key[1]}: {what} recorded at "
                            f"{self._t(at)} but {why}")]
        clock.fired.add(deadline)
        out: list[Finding] = []
        if stated != expected:
            out.append(self._finding(seq, "warning_mismatch" if warning else "breach_mismatch",
                                     key, f"{what} recorded for due {self._t(stated)}, its "
                                          f"ledger gives {self._t(expected)}"))
        if at < expected:
            out.append(self._finding(seq, "early_warning" if warning else "early_breach", key,
                                     f"{what} recorded at {self._t(at)} before its due "
                                     f"instant {self._t(expected)}"))
        return out

    def missed(self, now: datetime) -> Iterator[Finding]:
        """Deadlines due a minute or more before ``now`` that no event records."""
        limit = now - MISSED_AFTER
        for key, clock in self.clocks.items():
            if not clock.pending:
                continue
            for (kind, index), moment in sorted(clock.pending.items(), key=lambda i: i[1]):
                if moment > limit:
                    continue
                state = "stopped" if clock.stopped else (
                    "is paused" if clock.ledger.paused else "is still running")
                what = "breach" if kind == "breach" else f"warning {index}"
                yield self._finding(clock.changed_seq, f"missed_{kind}", key,
                                    f"was due ({what}) {self._t(moment)} and {state} "
                                    f"without a recorded {kind}")


def _names(items: list[Any], keys: list[_Key]) -> bool:
    """Whether the timer changes ``items`` an event records name exactly the clocks
    ``keys``, in that order (then they are the same set: ``_plan`` has nothing to say)."""
    if len(items) != len(keys):
        return False
    for item, key in zip(items, keys, strict=True):
        if type(item) is not dict or (str(item.get("timer")), int(item.get("run", 1))) != key:
            return False
    return True


# -- malformed payloads ---------------------------------------------------------------------

#: what a deep check or a replay may raise on a payload the engine would never write (a
#: forger re-hashed it); ``payload_problem`` then says what is malformed
MALFORMED = (TypeError, ValueError, KeyError, AttributeError, IndexError, ArithmeticError,
             RecursionError, CalendarError)
_TIMER_CHANGES = ("started", "stopped", "paused", "resumed", "rederived")
#: the events whose payload names one clock (``timer``, ``run``) and maybe its deadline
_CLOCK_TYPES = _CLOCK_EVENTS | {"timer_action_refused"}


def _kind_of(value: Any) -> str:
    return "null" if value is None else {dict: "an object", list: "a list", str: "a string",
                                         bool: "a boolean"}.get(type(value),
                                                                type(value).__name__)


def _instant_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"is {_kind_of(value)}, not an ISO instant"
    try:
        parsed = parse_iso(value)
    except ValueError:
        return f"{value[:40]!r} is not an ISO instant"
    if parsed.tzinfo is None:
        return f"{value[:40]!r} has no UTC offset"
    return None if arguments.in_range(parsed) else f"{value[:40]!r} is not {arguments.WITHIN}"


def _run_problem(item: Mapping[str, Any]) -> str | None:
    run = item.get("run", 1)
    if type(run) is not int or not 1 <= run <= 2**31:
        return f"run is {run!r:.40}, not a run number"
    return None


def _timer_item_problem(kind: str, item: Any) -> str | None:
    """What is wrong with one entry of a payload's ``timers.<kind>`` list, if anything."""
    if type(item) is not dict:
        return f"is {_kind_of(item)}, not an object"
    if not isinstance(item.get("timer"), str):
        return f"timer is {_kind_of(item.get('timer'))}, not a timer name"
    problem = _run_problem(item)
    if problem is not None:
        return problem
    if kind == "stopped":
        return None
    if item.get("due_at") is not None:
        problem = _instant_problem(item["due_at"])
        if problem is not None:
            return f"due_at {problem}"
    if kind == "started":
        problem = _instant_problem(item.get("started_at"))
        if problem is not None:
            return f"started_at {problem}"
    if ("budget" in item or kind == "started") and type(item.get("budget")) is not dict:
        return f"budget is {_kind_of(item.get('budget'))}, not an object"
    return None


def _values_problem(key: str, value: Any, codec: FieldCodec | None) -> str | None:
    if type(value) is not dict:
        return f"{key} is {_kind_of(value)}, not an object"
    if codec is None:
        return None
    for name, raw in value.items():
        if raw is None and key == "set":
            continue  # a cleared field
        try:
            codec.decode({name: raw})
        except MALFORMED as exc:
            return f"{key}.{name}: {raw!r:.40} does not decode ({exc})"
    return None


def _fired_problem(p: Mapping[str, Any]) -> str | None:
    """What is wrong with a warning's or breach's lateness and actions, if anything."""
    late = p.get("lateness_seconds", 0)
    if type(late) not in (int, float) or not 0 <= late <= 1e10:
        return f"lateness_seconds is {late!r:.40}, not a number of seconds"
    actions = p.get("actions", {})
    if type(actions) is not dict:
        return f"actions is {_kind_of(actions)}, not an object"
    notify = actions.get("notify", [])
    if type(notify) is not list or not all(isinstance(r, str) for r in notify):
        return "actions.notify is not a list of roles"
    for name in ("raise_severity", "reassign", "fire"):
        if actions.get(name) is not None and not isinstance(actions[name], str):
            return f"actions.{name} is {_kind_of(actions[name])}, not a name"
    return None


def payload_problem(type_: str, p: Mapping[str, Any], codec: FieldCodec | None = None
                    ) -> str | None:
    """What is malformed in an event's payload (upcast) as replay and deep verification
    read it, or ``None``; ``codec``: the event's rule version's, to check the field values
    decode. Deep verification and replay ask it only once reading a payload failed (the
    valid path never pays for it); ``audit replay`` asks it of the events it shows."""
    for key in ("fields", "set"):
        if key in p:
            problem = _values_problem(key, p[key], codec)
            if problem is not None:
                return problem
    dropped = p.get("dropped_fields", [])
    if type(dropped) is not list or not all(isinstance(n, str) for n in dropped):
        return "dropped_fields is not a list of field names"
    if p.get("severity") is not None and not isinstance(p["severity"], str):
        return f"severity is {_kind_of(p['severity'])}, not a level"
    if "timers" in p:
        changes = p["timers"]
        if type(changes) is not dict:
            return f"timers is {_kind_of(changes)}, not an object"
        for kind in _TIMER_CHANGES:
            items = changes.get(kind, [])
            if type(items) is not list:
                return f"timers.{kind} is {_kind_of(items)}, not a list"
            for index, item in enumerate(items):
                problem = _timer_item_problem(kind, item)
                if problem is not None:
                    return f"timers.{kind}[{index}] {problem}"
    if type_ not in _CLOCK_TYPES:
        return None
    if not isinstance(p.get("timer"), str):
        return f"timer is {_kind_of(p.get('timer'))}, not a timer name"
    problem = _run_problem(p)
    if problem is not None:
        return problem
    deadline = p.get("index")
    if deadline is not None and (type(deadline) is not int or not 0 <= deadline <= 2**31):
        return f"index is {deadline!r:.40}, not a deadline index"
    fired = type_ in ("timer_warning", "timer_breached")
    if p.get("due_at") is not None or fired:
        problem = _instant_problem(p.get("due_at"))
        if problem is not None:
            return f"due_at {problem}"
    if fired:
        problem = _fired_problem(p)
        if problem is not None:
            return problem
    if type_ == "timer_extended":
        amount = p.get("amount", 0)
        if type(amount) is not int or not 0 <= amount <= max(MAX_DURATION.values()):
            return f"amount is {amount!r:.40}, not an extension amount"
        if "budget" in p and type(p["budget"]) is not dict:
            return f"budget is {_kind_of(p['budget'])}, not an object"
    if p.get("calendar_version") is not None and not isinstance(p["calendar_version"], str):
        return f"calendar_version is {_kind_of(p['calendar_version'])}, not a rule-set hash"
    consent = p.get("consent")
    if isinstance(consent, dict):
        if consent.get("given_at"):
            problem = _instant_problem(consent["given_at"])
            if problem is not None:
                return f"consent.given_at {problem}"
        if consent.get("given_by") is not None and not isinstance(consent["given_by"], str):
            return f"consent.given_by is {_kind_of(consent['given_by'])}, not a name"
    return None


def malformed_history(number: str, events: Iterable[HistoryEvent],
                      codec_for: Callable[[str], FieldCodec] | None
                      ) -> IntegrityError | None:
    """``IntegrityError`` naming the first event of ``events`` whose payload is malformed
    (``payload_problem``), or ``None``; for a replay that failed reading them. ``codec_for``
    gives a rule version's codec to check the field values (``None``: the shapes only, for
    masked events)."""
    for event in events:
        try:
            codec = codec_for(event.ruleset) if codec_for is not None else None
        except ComplaintflowError:
            codec = None
        problem = payload_problem(event.type, event.payload, codec)
        if problem is not None:
            return IntegrityError(
                f"event {event.seq} of {number}: its stored {event.type} payload is "
                f"malformed ({problem}); the row was changed outside the engine "
                "(`complaintflow audit verify --deep` checks the whole history)",
                number, event.seq)
    return None
