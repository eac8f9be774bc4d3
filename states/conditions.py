"""Conditions compiled once per rule set into plain closures (no eval, no callables in YAML)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

from complaintflow.actor import Actor
from complaintflow.rules.model import AllOf, AnyOf, Compare, Condition, NotOf, OperandRef
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.values import ValueType, coerce
from complaintflow.storage.hashing import canonical, parse_canonical
from complaintflow.worktime import WorkingCalendar

__all__ = ["Facts", "Scope", "compile_condition", "explain", "fields_read"]


@dataclass
class Facts:
    """What conditions and guards may know about a complaint's history."""

    last_actor: dict[str, str] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    last_time: dict[str, datetime] = field(default_factory=dict)
    entered_seq: int = 0  # the event that entered the current state
    #: the last event folded in: a stored summary behind the complaint's version is caught
    #: up from the events after it (a writer that does not keep the column, e.g. an older
    #: release still running during an upgrade). Bookkeeping, not a fact: not compared.
    through: int = field(default=0, compare=False)
    #: the texts of ``last_time`` as ``from_text`` read them or ``to_text`` wrote them,
    #: written again as they are while their instant is not recorded again (formatting a
    #: datetime costs more than the rest of the summary); dropped by ``record`` for its
    #: trigger
    _texts: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def record(self, seq: int, trigger: str | None, actor_id: str, from_state: str | None,
               to_state: str, occurred_at: datetime | None = None) -> None:
        self.through = max(self.through, seq)
        if trigger is not None:
            self.last_actor[trigger] = actor_id
            self.count[trigger] = self.count.get(trigger, 0) + 1
            self.last_seq[trigger] = seq
            if occurred_at is not None:
                self.last_time[trigger] = occurred_at
                self._texts.pop(trigger, None)
        if from_state != to_state:
            self.entered_seq = seq

    def copy(self) -> Facts:
        """An independent copy (``record`` on it leaves this one as it is)."""
        return Facts(dict(self.last_actor), dict(self.count), dict(self.last_seq),
                     dict(self.last_time), self.entered_seq, self.through, dict(self._texts))

    def to_text(self) -> str:
        """The summary as stored on the complaint row (``complaints.facts``)."""
        return canonical({
            "last_actor": self.last_actor, "count": self.count, "last_seq": self.last_seq,
            "last_time": {k: self._texts.get(k) or self._text_of(k, v)
                          for k, v in self.last_time.items()},
            "entered_seq": self.entered_seq, "through": self.through,
        })

    def _text_of(self, trigger: str, moment: datetime) -> str:
        text = self._texts[trigger] = moment.astimezone(UTC).isoformat()
        return text

    @classmethod
    def from_text(cls, text: str) -> Facts:
        raw = parse_canonical(text)
        times = raw["last_time"]
        return cls(raw["last_actor"], raw["count"], raw["last_seq"],
                   {k: datetime.fromisoformat(v) for k, v in times.items()},
                   raw["entered_seq"], raw.get("through", 0), times)


@dataclass
class Scope:
    """Everything a condition can read: the fields (after the data is applied), the actor,
    the history facts."""

    fields: Mapping[str, Any]
    actor: Actor
    facts: Facts
    now: datetime | None = None
    calendars: Mapping[str, WorkingCalendar] = field(default_factory=dict)
    default_calendar: str | None = None


Getter = Callable[[Scope], Any]
Predicate = Callable[[Scope], bool]


def _subject(ref: Compare | OperandRef) -> Getter:
    if ref.field is not None:
        name = ref.field
        return lambda s: s.fields.get(name)
    if ref.actor is not None:
        attr = ref.actor
        return lambda s: getattr(s.actor, attr)
    if ref.last_actor_of is not None:
        trig = ref.last_actor_of
        return lambda s: s.facts.last_actor.get(trig)
    if isinstance(ref, Compare) and ref.elapsed_since is not None:
        return _elapsed(ref.elapsed_since, ref.unit, ref.calendar)
    assert ref.count_of is not None
    trig = ref.count_of
    return lambda s: s.facts.count.get(trig, 0)


def _working_dates_after(cal: WorkingCalendar, since: datetime, now: datetime) -> int:
    """Working dates after the date of ``since`` up to and including the date of ``now``
    (local dates): "on the Nth working day after"."""
    day = cal.to_local(since).date()
    last = cal.to_local(now).date()
    count = 0
    while day < last:
        day += timedelta(days=1)
        count += cal.is_working_day(day)
    return count


def _elapsed(trigger: str, unit: str, calendar: str | None) -> Getter:
    """Time since the latest firing of ``trigger`` in ``unit`` (a Decimal), or None."""

    def get(s: Scope) -> Decimal | None:
        since = s.facts.last_time.get(trigger)
        if since is None or s.now is None:
            return None
        if unit in ("minutes", "hours", "days"):
            seconds = Decimal((s.now - since).total_seconds())
        else:
            cal = s.calendars.get(calendar or s.default_calendar or "")
            if cal is None:
                return None
            if unit == "working_days":
                return Decimal(_working_dates_after(cal, since, s.now))
            seconds = Decimal(cal.between(since, s.now).total_seconds())
        per = {"minutes": 60, "hours": 3600, "days": 86400, "working_minutes": 60,
               "working_hours": 3600}[unit]
        return seconds / per

    return get


def _subject_type(ref: Compare | OperandRef, rules: RuleSet) -> ValueType:
    if isinstance(ref, Compare) and ref.elapsed_since is not None:
        return ValueType("decimal")
    if ref.field is not None:
        return rules.subject_types[ref.field]
    if ref.actor is not None:
        return ValueType("string_list") if ref.actor == "roles" else ValueType("string")
    return ValueType("string") if ref.last_actor_of is not None else ValueType("integer")


def _literal(vtype: ValueType, value: Any) -> Any:
    if value is None:
        return None
    target = vtype.element() if vtype.is_list else vtype
    if target.numeric:
        return coerce(ValueType("decimal"), value)
    return coerce(target, value)


def _is_set(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str | tuple | list):
        return len(value) > 0
    return True


_ORDER = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}


def _compare(cmp: Compare, rules: RuleSet) -> Predicate:
    get = _subject(cmp)
    vtype = _subject_type(cmp, rules)
    if cmp.is_set is not None:
        want = cmp.is_set
        return lambda s: _is_set(get(s)) is want
    if cmp.in_ is not None or cmp.not_in is not None:
        members = frozenset(_literal(vtype, v) for v in (cmp.in_ or cmp.not_in or []))
        negate = cmp.not_in is not None
        return lambda s: (get(s) in members) is not negate
    for name in ("eq", "ne", "lt", "le", "gt", "ge", "contains"):
        operand = getattr(cmp, name)
        if operand is not None:
            break
    else:  # pragma: no cover - the checker guarantees one operator
        raise AssertionError("no operator")
    if not isinstance(operand, OperandRef):
        return _compare_constant(name, get, _literal(vtype, operand))
    other = _subject(operand)
    if name == "eq":
        return lambda s: bool(get(s) == other(s))
    if name == "ne":
        return lambda s: bool(get(s) != other(s))
    if name == "contains":
        return lambda s: (v := get(s)) is not None and other(s) in v
    op = _ORDER[name]

    def ordered(s: Scope) -> bool:
        left, right = get(s), other(s)
        if left is None or right is None:
            return False
        return bool(op(left, right))

    return ordered


def _compare_constant(name: str, get: Callable[[Scope], Any], const: Any) -> Predicate:
    """``_compare`` against a literal: the same predicates, with the literal bound (one call
    fewer per test: severity rules test a dozen flags on every fire)."""
    if name == "eq":
        return lambda s: bool(get(s) == const)
    if name == "ne":
        return lambda s: bool(get(s) != const)
    if name == "contains":
        return lambda s: (v := get(s)) is not None and const in v
    op = _ORDER[name]  # the checker gives every ordering a literal that is not null

    def ordered(s: Scope) -> bool:
        left = get(s)
        return left is not None and bool(op(left, const))

    return ordered


def compile_condition(cond: Condition, rules: RuleSet) -> Predicate:
    """A predicate for ``cond``; the rule set was type-checked, so this cannot fail."""
    if isinstance(cond, AllOf):
        parts = [compile_condition(c, rules) for c in cond.all]
        return lambda s: all(p(s) for p in parts)
    if isinstance(cond, AnyOf):
        parts = [compile_condition(c, rules) for c in cond.any]
        return lambda s: any(p(s) for p in parts)
    if isinstance(cond, NotOf):
        inner = compile_condition(cond.not_, rules)
        return lambda s: not inner(s)
    return _compare(cond, rules)


_SAID = {"eq": "must be", "ne": "must not be", "lt": "must be below", "le": "must be at most",
         "gt": "must be above", "ge": "must be at least", "contains": "must contain"}
_HOLDS = {"eq": "is", "ne": "is not", "lt": "is below", "le": "is at most", "gt": "is above",
          "ge": "is at least", "contains": "contains"}


def _named(ref: Compare | OperandRef) -> str:
    if ref.field is not None:
        return ref.field
    if ref.actor is not None:
        return f"the actor's {ref.actor}"
    if ref.last_actor_of is not None:
        return f"whoever last fired {ref.last_actor_of!r}"
    if isinstance(ref, Compare) and ref.elapsed_since is not None:
        return f"{ref.unit.replace('_', ' ')} since {ref.elapsed_since!r}"
    return f"the number of {ref.count_of!r}"


def _shown(value: Any, scope: Scope, rounding: str = ROUND_HALF_EVEN) -> str:
    if value is None:
        return "not set"
    if isinstance(value, datetime):
        cal = scope.calendars.get(scope.default_calendar or "")
        return (cal.to_local(value) if cal is not None else value).isoformat(
            sep=" ", timespec="minutes")
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -2 and abs(value) < 10**20:
            # elapsed time: 2.33 hours, not 28 digits; rounded away from the bound it
            # failed, so that 1.9999 is not shown as a 2.00 that would have passed
            value = value.quantize(Decimal("0.01"), rounding=rounding)
        return format(value, "f")
    if isinstance(value, tuple | list | frozenset):
        return "[" + ", ".join(_shown(v, scope) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def explain(cond: Condition, rules: RuleSet, scope: Scope) -> str:
    """Why ``cond`` is false in ``scope``, in words, with the values it read (for a
    refusal; the condition is compiled again here, which only a refusal pays for)."""
    if isinstance(cond, AllOf):
        failing = next(c for c in cond.all if not compile_condition(c, rules)(scope))
        return explain(failing, rules, scope)
    if isinstance(cond, AnyOf):
        return "none of these holds: " + "; ".join(explain(c, rules, scope) for c in cond.any)
    if isinstance(cond, NotOf):
        return f"this must not hold, and does: {_holds(cond.not_, rules, scope)}"
    return _said(cond, rules, scope)


def _holds(cond: Condition, rules: RuleSet, scope: Scope) -> str:
    """What makes ``cond`` true in ``scope``, in words (under a ``not``)."""
    if isinstance(cond, AllOf):
        return " and ".join(_holds(c, rules, scope) for c in cond.all)
    if isinstance(cond, AnyOf):
        true = next(c for c in cond.any if compile_condition(c, rules)(scope))
        return _holds(true, rules, scope)
    if isinstance(cond, NotOf):
        return explain(cond.not_, rules, scope)
    return _said(cond, rules, scope, negated=True)


def _said(cmp: Compare, rules: RuleSet, scope: Scope, negated: bool = False) -> str:
    lower = cmp.ge is not None or cmp.gt is not None  # a failed lower bound: value below
    upper = cmp.le is not None or cmp.lt is not None
    below = (lower and not negated) or (upper and negated)
    above = (upper and not negated) or (lower and negated)
    rounding = ROUND_FLOOR if below else ROUND_CEILING if above else ROUND_HALF_EVEN
    subject = f"{_named(cmp)} ({_shown(_subject(cmp)(scope), scope, rounding)})"
    if cmp.is_set is not None:
        if negated:
            return f"{subject} is {'set' if cmp.is_set else 'not set'}"
        return f"{subject} {'must be set' if cmp.is_set else 'must not be set'}"
    if cmp.in_ is not None or cmp.not_in is not None:
        members = ", ".join(_shown(v, scope) for v in (cmp.in_ or cmp.not_in or []))
        inside = cmp.in_ is not None
        if negated:
            return f"{subject} is {'one' if inside else 'none'} of {members}"
        return f"{subject} must {'' if inside else 'not '}be one of {members}"
    name, operand = next((k, getattr(cmp, k)) for k in _SAID if getattr(cmp, k) is not None)
    if isinstance(operand, OperandRef):
        other = f"{_named(operand)} ({_shown(_subject(operand)(scope), scope)})"
    else:
        other = _shown(_literal(_subject_type(cmp, rules), operand), scope)
    return f"{subject} {(_HOLDS if negated else _SAID)[name]} {other}"


def fields_read(cond: Condition | None) -> frozenset[str]:
    """The complaint fields a condition reads (to tell what user input could change)."""
    if cond is None:
        return frozenset()
    if isinstance(cond, AllOf | AnyOf):
        parts = cond.all if isinstance(cond, AllOf) else cond.any
        return frozenset().union(*(fields_read(c) for c in parts))
    if isinstance(cond, NotOf):
        return fields_read(cond.not_)
    names = {cond.field} if cond.field else set()
    for key in ("eq", "ne", "lt", "le", "gt", "ge", "contains"):
        operand = getattr(cond, key)
        if isinstance(operand, OperandRef) and operand.field:
            names.add(operand.field)
    return frozenset(n for n in names if n)


def severity_function(rules: RuleSet) -> Callable[[Mapping[str, Any], str | None], str]:
    """``severity(fields, floor)``: the highest level whose rule matches, never below floor."""
    levels = rules.severity_levels
    rank = {level: i for i, level in enumerate(levels)}
    compiled = [(rank[r.level], compile_condition(r.when, rules))
                for r in rules.definition.severity.rules]
    default_rank = rank[rules.definition.severity.default]
    nobody = Actor("", ())
    empty = Facts()

    def severity(fields: Mapping[str, Any], floor: str | None = None) -> str:
        scope = Scope(fields, nobody, empty)
        best = max([default_rank, rank.get(floor, 0) if floor else 0]
                   + [r for r, pred in compiled if pred(scope)])
        return levels[best]

    return severity
