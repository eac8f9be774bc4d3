"""SLA clocks kept as ledgers, and the deadlines derived from them.

A clock is never a stored due date. Its ledger records when it started, every pause (with
the reason), every extension (with the customer's consent), the budget in force and the
rule-set version whose calendar it counts on; the breach and warning instants are derived
from the ledger each time anything changes. The ``deadlines`` table only caches the
derived instants that are still pending, for the scheduler to claim.

Derivation (documented conventions):

* working units: due = ``add_working(start, budget + paused working time)``;
  ``working_days``: the end of the Nth working day (``add_working_days``), then the paused
  working time added on. Pauses are counted in whole working minutes.
* calendar units: due = start + budget + paused elapsed time.
* a warning at fraction *f*: the same formula with *f* × budget; a warning ``before``: the
  breach instant minus the lead (calendar time). Warnings that would fall before the start
  are dropped.
* while paused there is no due instant (nothing pending).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from complaintflow.errors import FieldProblem, InvalidInput
from complaintflow.rules.model import TimerDef
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.timing import calendar_minutes, duration_of
from complaintflow.rules.values import text_problem
from complaintflow.states.conditions import Predicate, Scope, compile_condition, fields_read
from complaintflow.states.guards import is_blank
from complaintflow.storage.hashing import canonical, iso, parse_canonical
from complaintflow.worktime import WorkingCalendar

__all__ = ["SCHEDULER", "CompiledTimer", "Consent", "Due", "Ledger", "TimerSet", "parse_iso",
           "recorded_actions"]

#: the actor id warnings, breaches and the transitions breaches fire are recorded under
SCHEDULER = "system:scheduler"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Consent:
    """The customer's agreement to an extension (procedure: announced in advance, with
    the customer's consent)."""

    given_by: str
    given_at: datetime
    channel: str
    reason: str

    def problems(self, now: datetime) -> list[FieldProblem]:
        out = []
        for name in ("given_by", "channel", "reason"):
            value = getattr(self, name)
            if not isinstance(value, str) or is_blank(value):
                out.append(FieldProblem(f"consent.{name}", "required"))
            elif (problem := text_problem(value)) is not None:
                out.append(FieldProblem(f"consent.{name}", problem))
        if not isinstance(self.given_at, datetime) or self.given_at.tzinfo is None:
            out.append(FieldProblem("consent.given_at", "an aware datetime"))
        elif self.given_at > now:
            out.append(FieldProblem("consent.given_at", "lies in the future"))
        return out

    def to_json(self) -> dict[str, str]:
        return {"given_by": self.given_by, "given_at": iso(self.given_at),
                "channel": self.channel, "reason": self.reason}


@dataclass
class Ledger:
    started_at: datetime
    unit: str
    amount: int
    calendar: str | None
    calendar_version: str
    pauses: list[list[str | None]] = field(default_factory=list)  # [start, end, reason]
    extensions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def paused(self) -> bool:
        return bool(self.pauses) and self.pauses[-1][1] is None

    @property
    def budget(self) -> int:
        if not self.extensions:
            return self.amount
        return self.amount + sum(int(e["amount"]) for e in self.extensions)

    def to_text(self) -> str:
        return canonical({
            "started_at": iso(self.started_at), "unit": self.unit, "amount": self.amount,
            "calendar": self.calendar, "calendar_version": self.calendar_version,
            "pauses": self.pauses, "extensions": self.extensions,
        })

    @classmethod
    def from_text(cls, text: str) -> Ledger:
        raw = parse_canonical(text)
        return cls(parse_iso(raw["started_at"]), raw["unit"], int(raw["amount"]),
                   raw["calendar"], raw["calendar_version"], raw["pauses"], raw["extensions"])

    def pause(self, now: datetime, reason: str) -> None:
        if not self.paused:
            self.pauses.append([iso(now), None, reason])

    def resume(self, now: datetime) -> None:
        if self.paused:
            self.pauses[-1][1] = iso(now)


@dataclass(frozen=True)
class Due:
    """Derived instants: the breach, and each warning by index; ``None`` while paused."""

    breach: datetime | None
    warnings: tuple[tuple[int, datetime], ...]
    provisional: bool


#: what ``TimerSet.derive`` gives a paused ledger
_PAUSED = Due(None, (), False)
_NO_TIME = timedelta()


@dataclass(frozen=True)
class CompiledTimer:
    definition: TimerDef
    condition: Predicate | None
    variants: tuple[tuple[Predicate, str, int], ...]
    unit: str
    amount: int

    @property
    def id(self) -> str:
        return self.definition.id

    @property
    def counts_working_time(self) -> bool:
        """Whether its duration, or a variant's, is in working units (needs a calendar)."""
        return any(unit.startswith("working")
                   for unit in (self.unit, *(unit for _, unit, _ in self.variants)))

    def budget_for(self, scope: Scope) -> tuple[str, int]:
        for predicate, unit, amount in self.variants:
            if predicate(scope):
                return unit, amount
        return self.unit, self.amount


class TimerSet:
    """The timers of one rule set, with its calendars."""

    def __init__(self, rules: RuleSet, calendars: Mapping[str, WorkingCalendar]) -> None:
        self.rules = rules
        self.calendars = calendars
        self.default_calendar = rules.definition.calendar
        compiled = []
        for t in rules.definition.timers:
            unit, amount = duration_of(t.duration)
            variants = tuple(
                (compile_condition(v.when, rules), *duration_of(v.duration)) for v in t.variants
            )
            compiled.append(CompiledTimer(
                t, compile_condition(t.condition, rules) if t.condition else None,
                variants, unit, amount,
            ))
        self.timers: tuple[CompiledTimer, ...] = tuple(compiled)
        self.by_id = {t.id: t for t in self.timers}
        self._leads: dict[tuple[str, int], timedelta] = {}
        self._plans: dict[str, tuple[CompiledTimer, tuple[_WarningStep, ...]]] = {}
        self._steps: dict[tuple[str | None, str], tuple[frozenset[str], frozenset[str]]] = {}
        self._starters: dict[tuple[str, str | None, str | None, str],
                             tuple[CompiledTimer, ...]] = {}
        #: a raised severity can change some clock's budget (variants read severity)
        self.severity_sensitive = any(
            "severity" in fields_read(v.when) for t in rules.definition.timers
            for v in t.variants)

    def starters(self, kind: str, trigger: str | None, from_state: str | None,
                 to_state: str) -> tuple[CompiledTimer, ...]:
        """The timers this event starts unless already running or their condition fails
        (worked out once per kind, trigger and states)."""
        key = (kind, trigger, from_state, to_state)
        found = self._starters.get(key)
        if found is None:
            found = self._starters[key] = tuple(
                t for t in self.timers
                if _starts(t, kind, trigger, from_state, to_state)
                and to_state not in t.definition.stop)
        return found

    def stops_and_pauses(self, trigger: str | None, to_state: str
                         ) -> tuple[frozenset[str], frozenset[str]]:
        """The ids of the timers a transition by ``trigger`` into ``to_state`` stops, and of
        those that pause in ``to_state`` (as ``sla.plan_event`` decides), worked out once."""
        key = (trigger, to_state)
        found = self._steps.get(key)
        if found is None:
            definitions = [t.definition for t in self.timers]
            found = self._steps[key] = (
                frozenset(d.id for d in definitions
                          if to_state in d.stop or trigger in d.stop_triggers),
                frozenset(d.id for d in definitions if to_state in d.pause))
        return found

    def calendar_of(self, timer: CompiledTimer) -> WorkingCalendar | None:
        name = timer.definition.calendar or self.default_calendar
        return self.calendars.get(name) if name else None

    def new_ledger(self, timer: CompiledTimer, scope: Scope, now: datetime) -> Ledger:
        calendar = self.calendar_of(timer)
        start = now
        if timer.definition.align_to_opening and calendar is not None \
                and not calendar.is_working_instant(now):
            start = calendar.next_working_instant(now)
        unit, amount = timer.budget_for(scope)
        name = timer.definition.calendar or self.default_calendar
        return Ledger(start, unit, amount, name, self.rules.version)

    def derive(self, timer: CompiledTimer, ledger: Ledger,
               calendar: WorkingCalendar | None) -> Due:
        pauses = ledger.pauses
        if pauses and pauses[-1][1] is None:  # ledger.paused
            return _PAUSED
        unit = ledger.unit
        total = ledger.budget
        started = ledger.started_at
        plan = self._warning_plan(timer)
        span = _CALENDAR_SPAN.get(unit)  # calendar_minutes(unit, 1)
        paused = _NO_TIME
        paused_min = 0
        per = 60 if unit == "working_hours" else 1
        provisional = False
        if span is not None:
            for pause in pauses:  # [start, end, reason], all ended
                paused += parse_iso(str(pause[1])) - parse_iso(str(pause[0]))
            # a timedelta times a float rounds to microseconds; times the whole budget
            # (``total * 1.0`` for an int) it is exact, and much cheaper as an int
            breach = started + (span * total if type(total) is int else span * (total * 1.0))
            if pauses:
                breach += paused
        else:
            if calendar is None:
                raise InvalidInput([FieldProblem(f"timers.{timer.id}",
                                                 "a working-time budget without a calendar")])
            for pause in pauses:
                paused_min += int(calendar.between(parse_iso(str(pause[0])),
                                                   parse_iso(str(pause[1])))
                                  .total_seconds() // 60)
            if unit == "working_days":
                # the end of the last working day: the breach, and with the working minutes
                # up to it every fractional warning, count from it
                result = calendar.add_working_days(started, total,
                                                   timer.definition.count_start_day)
                if paused_min:
                    provisional = result.provisional
                    result = calendar.add_working(result.instant, paused_min)
            else:
                result = calendar.add_working(started, int(total * 1.0 * per) + paused_min)
            breach, provisional = result.instant, provisional or result.provisional
        if not plan:
            return Due(breach, (), provisional)
        full_minutes: float | None = None
        warnings = []
        for index, fraction, lead in plan:
            if lead is not None:
                moment = breach - lead
            elif fraction == 1.0:
                moment = breach  # the breach itself (its provisional flag is counted)
            elif span is not None:
                moment = started + span * (total * fraction)
                if pauses:
                    moment += paused
            else:
                assert calendar is not None
                if unit != "working_days":
                    minutes = int(total * fraction * per)
                else:
                    if full_minutes is None:  # between(started, end of the last day)
                        full_minutes = calendar.working_days_span(
                            started, total, timer.definition.count_start_day
                        )[1].total_seconds()
                    minutes = int(full_minutes * fraction // 60)
                result = calendar.add_working(started, minutes + paused_min)
                provisional = provisional or result.provisional
                moment = result.instant
            if moment >= started:
                warnings.append((index, moment))
        return Due(breach, tuple(warnings), provisional)

    def _warning_plan(self, timer: CompiledTimer) -> tuple[_WarningStep, ...]:
        """Each warning of ``timer`` as (index, fraction, lead): a fraction of the budget,
        or a ``before`` lead as calendar time (worked out once per timer)."""
        found = self._plans.get(timer.id)
        if found is None or found[0] is not timer:
            steps: list[_WarningStep] = []
            for index, w in enumerate(timer.definition.warnings, start=1):
                if w.fraction is not None:
                    steps.append((index, w.fraction, None))
                else:
                    steps.append((index, 1.0, self._lead(timer, index)))
            found = self._plans[timer.id] = (timer, tuple(steps))
        return found[1]

    def _lead(self, timer: CompiledTimer, index: int) -> timedelta:
        """Warning ``index``'s ``before`` lead as calendar time (parsed once)."""
        key = (timer.id, index)
        found = self._leads.get(key)
        if found is None:
            before = timer.definition.warnings[index - 1].before
            assert before is not None
            unit, amount = duration_of(before)
            lead = calendar_minutes(unit, amount)
            assert lead is not None
            found = self._leads[key] = lead
        return found


#: the calendar length of one unit of each calendar-time unit (``calendar_minutes(unit, 1)``)
_CALENDAR_SPAN = {unit: span for unit in ("minutes", "hours", "days")
                  if (span := calendar_minutes(unit, 1)) is not None}
#: a warning of a timer: (index, fraction of the budget, lead before the breach or None)
_WarningStep = tuple[int, float, timedelta | None]


def _starts(
    timer: CompiledTimer, kind: str, trigger: str | None, from_state: str | None, to_state: str
) -> bool:
    start = timer.definition.start
    if start.on == "receipt":
        return kind == "receipt"
    if start.on == "enter":
        # receipt enters the initial state
        return to_state in start.states and (from_state != to_state or kind == "receipt")
    return trigger is not None and trigger in start.triggers


def recorded_actions(timer: CompiledTimer | None, kind: str, index: int) -> dict[str, Any]:
    """The ``actions`` a warning (``kind`` "warning", the ``index``-th) or a breach of
    ``timer`` records: the roles notified, and for a breach the severity raised, the role
    escalated to and the trigger fired, each only when the rules declare it (none for a
    timer the rule set does not have). The scheduler records these and deep verification
    expects them."""
    if timer is None:
        return {}
    d = timer.definition
    actions: dict[str, Any] = {}
    if kind == "warning":
        notify = d.warnings[index - 1].notify if 1 <= index <= len(d.warnings) else ()
    else:
        b = d.on_breach
        notify = b.notify
        if b.raise_severity is not None:
            actions["raise_severity"] = b.raise_severity
        if b.reassign is not None:
            actions["reassign"] = b.reassign
        if b.fire is not None:
            actions["fire"] = b.fire
    if notify:
        actions["notify"] = list(notify)
    return actions


def timer_payload(timer: CompiledTimer, ledger: Ledger, due: Due) -> dict[str, Any]:
    """What a history event records about a timer change."""
    return {
        "timer": timer.id,
        "started_at": iso(ledger.started_at),
        "budget": {"unit": ledger.unit, "amount": ledger.budget},
        "due_at": iso(due.breach) if due.breach else None,
        "provisional": due.provisional,
    }
