"""Checks after the structural pass: references, condition types, and the state graph.

Every check appends to one list of problems, so the administrator sees all of them at once.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Collection, Sequence
from decimal import Decimal
from typing import Any

from complaintflow.errors import RuleProblem, did_you_mean
from complaintflow.rules.model import (
    AllOf,
    AnyOf,
    Compare,
    Condition,
    NotOf,
    OperandRef,
    RuleFile,
)
from complaintflow.rules.ruleset import BUILTIN_FIELDS
from complaintflow.rules.source import Path, SourceMap
from complaintflow.rules.timing import check_timing
from complaintflow.rules.values import ValueProblem, ValueType, coerce, type_of_field

__all__ = ["OPERATORS", "UNREADABLE", "check_rule_file", "did_you_mean"]

OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "contains", "is_set")
SUBJECTS = ("field", "actor", "last_actor_of", "count_of", "elapsed_since")
#: what the loader puts where a value that failed the structural pass is needed (passed in
#: ``ignore``): never offered as a suggestion, never compared with itself
UNREADABLE = "unreadable_value"
_PATTERN_TOKEN = re.compile(r"\{([^{}]*)\}")


class _Checker:
    def __init__(self, rules: RuleFile, source: SourceMap, graph: bool = True,
                 ignore: Collection[str] = (), damaged: Collection[Path] = ()) -> None:
        self.rules = rules
        # where the loader left out what failed the structural pass
        self.damaged = tuple(tuple(p) for p in damaged)
        # names declared by items that failed the structural pass: not reported as unknown
        self.ignore = frozenset(ignore)
        # graph checks on a graph with dangling edges would only repeat the real problem
        self.graph = graph
        self.source = source
        self.problems: list[RuleProblem] = []
        self.states = [s.id for s in rules.states]
        self.roles = [r.id for r in rules.roles]
        self.triggers = sorted({t.trigger for t in rules.transitions} - {UNREADABLE})
        self.types: dict[str, ValueType] = {f.id: type_of_field(f) for f in rules.fields}
        self.types["severity"] = ValueType("enum", tuple(rules.severity.levels))
        self.types["state"] = ValueType("enum", tuple(self.states))
        self.types["number"] = ValueType("string")
        self.types["received_at"] = ValueType("datetime")
        if rules.calendar is not None:
            self.types["received_in_working_time"] = ValueType("bool")
            self.types["received_on_working_day"] = ValueType("bool")

    def touched(self, path: Path) -> bool:
        """Whether the loader left out something at or under ``path``."""
        return any(d[:len(path)] == tuple(path) for d in self.damaged)

    def add(self, path: Path, message: str, expected: str | None = None,
            suggestion: str | None = None, *, depends: Path | None = None) -> None:
        # a problem of how the keys of ``depends`` go together: none when one was left out
        if depends is not None and self.touched(depends):
            return
        self.problems.append(self.source.problem(path, message, expected=expected,
                                                 suggestion=suggestion))

    def ref(self, path: Path, value: str, known: Sequence[str], kind: str) -> bool:
        if value in known:
            return True
        if value in self.ignore:
            return False
        if kind == "state":
            self.graph = False
        self.add(path, f"unknown {kind} {value!r}", f"one of the declared {kind}s",
                 did_you_mean(value, known))
        return False

    def unique(self, items: Sequence[str], path: tuple[str, ...], kind: str) -> None:
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item in seen:
                self.add((*path, i, "id"), f"{kind} {item!r} is declared twice", "unique ids")
            seen.add(item)

    # -- the passes -------------------------------------------------------------------------

    def run(self) -> list[RuleProblem]:
        r = self.rules
        self.unique(self.states, ("states",), "state")
        self.unique(self.roles, ("roles",), "role")
        self.unique([f.id for f in r.fields], ("fields",), "field")
        self.unique([s.id for s in r.separation_of_duties], ("separation_of_duties",),
                    "separation rule")
        try:
            zoneinfo.ZoneInfo(r.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            self.add(("timezone",), f"unknown time zone {r.timezone!r}", "an IANA zone name",
                     did_you_mean(r.timezone, zoneinfo.available_timezones()))
        self.check_pattern()
        self.ref(("initial",), r.initial, self.states, "state")
        self.check_fields()
        self.check_severity()
        self.check_transitions()
        self.check_separation()
        check_timing(self)
        if r.submit.roles != "*":
            for i, role in enumerate(r.submit.roles):
                self.ref(("submit", "roles", i), role, self.roles, "role")
        if r.submit.fields != "*":
            for i, name in enumerate(r.submit.fields):
                self.ref(("submit", "fields", i), name, [f.id for f in r.fields], "field")
            for i, f in enumerate(r.fields):
                if f.required and f.id not in r.submit.fields:
                    self.add(("fields", i, "required"),
                             f"{f.id!r} is required at submission but not in submit.fields",
                             depends=("submit", "fields"))
        for i, role in enumerate(r.personal_data.readers):
            self.ref(("personal_data", "readers", i), role, self.roles, "role")
        if self.graph:
            self.check_graph()
            self.check_ambiguity()
        return self.problems

    def check_pattern(self) -> None:
        pattern = self.rules.number_pattern
        before = len(self.problems)
        tokens = _PATTERN_TOKEN.findall(pattern)
        if "seq" not in [t.split(":")[0] for t in tokens]:
            self.add(("number_pattern",), "the pattern has no {seq} placeholder",
                     "a pattern such as 'TS-{year}-{seq:06d}'")
        for token in tokens:
            name, _, spec = token.partition(":")
            if name not in ("year", "seq"):
                self.add(("number_pattern",), f"unknown placeholder {{{name}}}",
                         "{year} or {seq}", did_you_mean(name, ["year", "seq"]))
            elif spec and not re.fullmatch(r"0?[1-9]d", spec):
                self.add(("number_pattern",), f"bad format {spec!r} for {{{name}}}",
                         "a width such as 06d")
        if len(self.problems) == before:
            try:
                pattern.format(year=2024, seq=1)
            except (ValueError, IndexError, KeyError) as exc:
                self.add(("number_pattern",), f"the pattern cannot be filled in: {exc}",
                         "literal text with {year} and {seq} placeholders")

    def check_fields(self) -> None:
        for i, f in enumerate(self.rules.fields):
            path: Path = ("fields", i)
            if f.id in BUILTIN_FIELDS:
                self.add((*path, "id"), f"{f.id!r} is a built-in name",
                         f"a name other than {', '.join(BUILTIN_FIELDS)}")
            if f.type in ("enum", "enum_list"):
                if not f.values:
                    self.add((*path, "type"), f"{f.type} field {f.id!r} lists no values",
                             "a non-empty 'values' list", depends=path)
                elif len(set(f.values)) != len(f.values):
                    self.add((*path, "values"), "a value is listed twice", "unique values")
            elif f.values is not None:
                self.add((*path, "values"), f"'values' is only for enum fields, not {f.type}")
            if (f.min is not None or f.max is not None) and f.type not in ("integer", "decimal"):
                self.add((*path, "min"), f"min/max only apply to numbers, not {f.type}")
            if f.min is not None and f.max is not None and f.min > f.max:
                self.add((*path, "min"), "min is larger than max")
            if f.max_length is not None and f.type not in ("string", "text"):
                self.add((*path, "max_length"), f"max_length only applies to text, not {f.type}")
        for key in ("department_field", "handler_field"):
            value = getattr(self.rules, key)
            if value is not None and self.ref((key,), value, list(self.types), "field"):
                kind = self.types[value].kind
                if kind not in ("string", "enum"):
                    self.add((key,), f"{value!r} is a {kind} field", "a string or enum field")

    def check_severity(self) -> None:
        sev = self.rules.severity
        levels = list(sev.levels)
        if len(set(levels)) != len(levels):
            self.add(("severity", "levels"), "a level is listed twice", "unique levels")
        self.ref(("severity", "default"), sev.default, levels, "severity level")
        for i, rule in enumerate(sev.rules):
            path: Path = ("severity", "rules", i)
            self.ref((*path, "level"), rule.level, levels, "severity level")
            self.condition((*path, "when"), rule.when, fields_only=True)

    def check_transitions(self) -> None:
        for i, t in enumerate(self.rules.transitions):
            path: Path = ("transitions", i)
            for j, s in enumerate(t.source):
                self.ref((*path, "from", j), s, self.states, "state")
            self.ref((*path, "to"), t.to, self.states, "state")
            for j, role in enumerate(t.roles):
                self.ref((*path, "roles", j), role, self.roles, "role")
            for key in ("fields", "requires"):
                for j, name in enumerate(getattr(t, key)):
                    if name in BUILTIN_FIELDS:
                        self.add((*path, key, j), f"{name!r} is computed and cannot be set")
                    else:
                        self.ref((*path, key, j), name, [f.id for f in self.rules.fields],
                                 "field")
            if t.condition is not None:
                self.condition((*path, "condition"), t.condition)
            if t.approval is not None:
                ap = t.approval
                self.ref((*path, "approval", "by"), ap.by, self.triggers, "trigger")
                if ap.since is not None:
                    self.ref((*path, "approval", "since"), ap.since, self.triggers, "trigger")
                if ap.when is not None:
                    self.condition((*path, "approval", "when"), ap.when)
                if ap.by == t.trigger != UNREADABLE:
                    self.add((*path, "approval", "by"), "a transition cannot approve itself")

    def check_separation(self) -> None:
        for i, rule in enumerate(self.rules.separation_of_duties):
            path: Path = ("separation_of_duties", i)
            if rule.triggers != "*":
                for j, trig in enumerate(rule.triggers):
                    self.ref((*path, "triggers", j), trig, self.triggers, "trigger")
            for j, trig in enumerate(rule.not_actor_of):
                self.ref((*path, "not_actor_of", j), trig, self.triggers, "trigger")
            for j, name in enumerate(rule.not_field):
                if self.ref((*path, "not_field", j), name, [f.id for f in self.rules.fields],
                            "field") and self.types[name].kind not in ("string", "enum_list"):
                    self.add((*path, "not_field", j),
                             f"{name!r} is a {self.types[name].kind} field",
                             "a string field holding an actor id")
            if not rule.not_actor_of and not rule.not_field:
                self.add(path, "the rule forbids nothing", "not_actor_of or not_field",
                         depends=path)

    # -- conditions -------------------------------------------------------------------------

    def condition(self, path: Path, cond: Condition, *, fields_only: bool = False) -> None:
        if isinstance(cond, AllOf):
            for i, c in enumerate(cond.all):
                self.condition((*path, "all", i), c, fields_only=fields_only)
        elif isinstance(cond, AnyOf):
            for i, c in enumerate(cond.any):
                self.condition((*path, "any", i), c, fields_only=fields_only)
        elif isinstance(cond, NotOf):
            self.condition((*path, "not"), cond.not_, fields_only=fields_only)
        else:
            self.compare(path, cond, fields_only)

    def subject_type(self, path: Path, ref: Compare | OperandRef,
                     fields_only: bool) -> ValueType | None:
        given = [k for k in SUBJECTS if getattr(ref, k, None) is not None]
        if len(given) != 1:
            self.add(path, f"names {len(given)} subjects ({', '.join(given) or 'none'})",
                     "exactly one of " + ", ".join(SUBJECTS), depends=path)
            return None
        kind = given[0]
        value = getattr(ref, kind)
        if fields_only and kind != "field":
            self.add((*path, kind), f"{kind!r} cannot be used here", "a field comparison")
            return None
        if kind == "field":
            if fields_only and value == "severity":
                self.add((*path, kind), "severity cannot depend on itself")
                return None
            if fields_only and value in BUILTIN_FIELDS:
                # severity is computed from the record alone; a built-in would read as unset
                self.add((*path, kind), f"severity rules read declared fields only, not the "
                         f"built-in {value!r}", "a declared field")
                return None
            if not self.ref((*path, kind), value, list(self.types), "field"):
                return None
            return self.types[value]
        if kind == "actor":
            if value == "roles":
                # the actor's roles are declared roles: literals are checked against them
                return ValueType("enum_list", tuple(self.roles))
            return ValueType("string")
        if not self.ref((*path, kind), value, self.triggers, "trigger"):
            return None
        if kind == "elapsed_since":
            assert isinstance(ref, Compare)
            calendars = [c.id for c in self.rules.calendars]
            if ref.calendar is not None:
                self.ref((*path, "calendar"), ref.calendar, calendars, "calendar")
            elif ref.unit.startswith("working") and self.rules.calendar is None:
                self.add((*path, "unit"), f"{ref.unit} needs a calendar",
                         "a 'calendar' here or at the top of the file", depends=path)
            return ValueType("decimal")
        return ValueType("string") if kind == "last_actor_of" else ValueType("integer")

    def compare(self, path: Path, cmp: Compare, fields_only: bool) -> None:
        if cmp.elapsed_since is None:
            for key, unused in (("unit", cmp.unit != "days"), ("calendar", cmp.calendar)):
                if unused:
                    self.add((*path, key), f"{key!r} only applies to elapsed_since",
                             "elapsed_since, or remove the key", depends=path)
        subject = self.subject_type(path, cmp, fields_only)
        ops = [op for op in OPERATORS if getattr(cmp, "in_" if op == "in" else op) is not None]
        if len(ops) != 1:
            self.add(path, f"has {len(ops)} operators ({', '.join(ops) or 'none'})",
                     "exactly one of " + ", ".join(OPERATORS), depends=path)
            return
        op = ops[0]
        operand = getattr(cmp, "in_" if op == "in" else op)
        if subject is None:
            return
        opath: Path = (*path, op)
        if op == "is_set":
            return
        if op in ("lt", "le", "gt", "ge") and not subject.ordered:
            self.add(opath, f"{op} cannot compare {subject.describe()}",
                     "a number, date or date-time subject")
            return
        if op == "contains":
            if not subject.is_list:
                self.add(opath, f"contains needs a list, not {subject.describe()}",
                         "an enum_list field or actor: roles")
                return
            self.operand(opath, subject.element(), operand, fields_only)
            return
        if op in ("in", "not_in"):
            if subject.is_list:
                self.add(opath, f"{op} needs a single value, not {subject.describe()}",
                         "a single-valued subject (for a list, use contains)")
                return
            for i, item in enumerate(operand):
                self.literal((*opath, i), subject, item)
            return
        if subject.is_list and not isinstance(operand, OperandRef):
            self.add(opath, f"{op} cannot compare a list with a single value",
                     "contains, or an operand that is a list")
            return
        self.operand(opath, subject, operand, fields_only)

    def operand(self, path: Path, subject: ValueType, operand: Any, fields_only: bool) -> None:
        if isinstance(operand, OperandRef):
            other = self.subject_type(path, operand, fields_only)
            if other is not None and not subject.comparable_with(other):
                self.add(path, f"compares {subject.describe()} with {other.describe()}",
                         f"a {subject.kind} operand")
            return
        if isinstance(operand, list):
            self.add(path, "a list operand is only allowed with in / not_in")
            return
        self.literal(path, subject, operand)

    def literal(self, path: Path, subject: ValueType, value: Any) -> None:
        if value is None:
            return
        target = subject.element() if subject.is_list else subject
        if target.kind in ("string", "text") and not isinstance(value, str):
            self.add(path, f"compares {target.kind} with {type(value).__name__} {value!r}",
                     "a quoted string")
            return
        if target.numeric:
            # a number of either kind compares with either numeric type, as fields do;
            # a quoted '5' is text, and is not silently read as a number
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.add(path, f"compares {target.kind} with {type(value).__name__} {value!r}",
                         "a number (without quotes)")
            else:
                try:  # what the condition compiles it to (conditions._literal)
                    coerce(ValueType("decimal"), value)
                except ValueProblem as exc:
                    self.add(path, f"{value!r:.40} is not a usable number: {exc}",
                             "a finite number")
            return
        if target.kind == "enum":
            if value not in target.values:
                self.add(path, f"{value!r} is not one of {', '.join(target.values)}",
                         "one of the listed values", did_you_mean(str(value), target.values))
            return
        try:
            coerce(target, value)
        except ValueError as exc:
            self.add(path, f"{value!r} does not fit {target.describe()}: {exc}",
                     target.describe())

    # -- the graph --------------------------------------------------------------------------

    def check_graph(self) -> None:
        r = self.rules
        known = set(self.states)
        edges: dict[str, set[str]] = {s: set() for s in known}
        for t in r.transitions:
            for s in t.source:
                if s in known and t.to in known:
                    edges[s].add(t.to)
        finals = {state.id for state in r.states if state.final}
        if not finals:
            self.add(("states",), "no state is final", "at least one state with final: true")
        for i, state in enumerate(r.states):
            if state.final and edges.get(state.id, set()) - {state.id}:
                self.add(("states", i, "final"), f"final state {state.id!r} has transitions out",
                         "no transition from a final state")
        if r.initial not in known:
            return
        reachable = {r.initial}
        frontier = [r.initial]
        while frontier:
            for nxt in edges[frontier.pop()]:
                if nxt not in reachable:
                    reachable.add(nxt)
                    frontier.append(nxt)
        reaches_final = set(finals)
        changed = True
        while changed:
            changed = False
            for s, outs in edges.items():
                if s not in reaches_final and outs & reaches_final:
                    reaches_final.add(s)
                    changed = True
        for i, state in enumerate(r.states):
            if state.id not in reachable:
                self.add(("states", i, "id"), f"state {state.id!r} is unreachable from "
                         f"{r.initial!r}", "a transition leading to it")
            elif finals and state.id not in reaches_final:
                self.add(("states", i, "id"), f"state {state.id!r} has no way to a final state",
                         "a path to a final state")

    def check_ambiguity(self) -> None:
        ts = self.rules.transitions
        for i, a in enumerate(ts):
            for j in range(i + 1, len(ts)):
                b = ts[j]
                if a.trigger != b.trigger or self.touched(("transitions", i)) \
                        or self.touched(("transitions", j)):
                    continue
                shared = sorted(set(a.source) & set(b.source))
                if not shared or not set(a.roles) & set(b.roles):
                    continue
                if a.condition is not None and b.condition is not None and _disjoint(
                    a.condition, b.condition
                ):
                    continue
                self.add(("transitions", j, "trigger"),
                         f"{b.trigger!r} from {', '.join(shared)} is ambiguous with "
                         f"transitions[{i}]: their conditions can both hold",
                         "conditions that exclude each other (e.g. X and not X)")


# -- disjointness of conditions (conservative: False means "could overlap") -----------------

def _key(c: Compare) -> tuple[str, str] | None:
    for k in SUBJECTS:
        v = getattr(c, k)
        if v is not None:
            return (k, str(v))
    return None


def _num(v: Any) -> Decimal | None:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return None
    try:
        return Decimal(str(v))
    except ArithmeticError:
        return None


def _interval(c: Compare) -> tuple[Decimal | None, bool, Decimal | None, bool] | None:
    for op in ("lt", "le", "gt", "ge"):
        value = getattr(c, op)
        n = _num(value) if not isinstance(value, OperandRef) else None
        if n is not None:
            if op in ("lt", "le"):
                return (None, False, n, op == "le")
            return (n, op == "ge", None, False)
    return None


def _compare_disjoint(a: Compare, b: Compare) -> bool:
    if _key(a) is None or _key(a) != _key(b):
        return False
    lit = (str, int, float, bool)
    set_a = {a.eq} if isinstance(a.eq, lit) else set(a.in_) if a.in_ is not None else None
    set_b = {b.eq} if isinstance(b.eq, lit) else set(b.in_) if b.in_ is not None else None
    if set_a is not None and set_b is not None:
        return not (set_a & set_b)
    if set_a is not None and (b.ne is not None or b.not_in is not None):
        excluded = {b.ne} if b.ne is not None else set(b.not_in or [])
        return set_a <= excluded
    if set_b is not None and (a.ne is not None or a.not_in is not None):
        excluded = {a.ne} if a.ne is not None else set(a.not_in or [])
        return set_b <= excluded
    if a.is_set is not None and b.is_set is not None:
        return a.is_set != b.is_set
    ia, ib = _interval(a), _interval(b)
    if ia and ib:
        lo_a, lo_a_inc, hi_a, hi_a_inc = ia
        lo_b, lo_b_inc, hi_b, hi_b_inc = ib
        if hi_a is not None and lo_b is not None and (
            hi_a < lo_b or (hi_a == lo_b and not (hi_a_inc and lo_b_inc))
        ):
            return True
        if hi_b is not None and lo_a is not None and (
            hi_b < lo_a or (hi_b == lo_a and not (hi_b_inc and lo_a_inc))
        ):
            return True
    return False


def _disjoint(a: Condition, b: Condition) -> bool:
    """True only when ``a`` and ``b`` can never hold together."""
    if (isinstance(a, NotOf) and a.not_ == b) or (isinstance(b, NotOf) and b.not_ == a):
        return True
    if isinstance(a, AllOf):
        return any(_disjoint(x, b) for x in a.all)
    if isinstance(b, AllOf):
        return any(_disjoint(a, y) for y in b.all)
    if isinstance(a, AnyOf):
        return all(_disjoint(x, b) for x in a.any)
    if isinstance(b, AnyOf):
        return all(_disjoint(a, y) for y in b.any)
    if isinstance(a, Compare) and isinstance(b, Compare):
        return _compare_disjoint(a, b)
    return False


def check_rule_file(rules: RuleFile, source: SourceMap, *, graph: bool = True,
                    ignore: Collection[str] = (),
                    damaged: Collection[Path] = ()) -> list[RuleProblem]:
    """Reference, type and (with ``graph``) state-graph problems of a structurally valid file.

    The loader also checks what is left of a file that failed the structural pass: names in
    ``ignore`` (what the left-out parts declared) are not reported when a reference to them
    is unknown, and ``damaged`` are the paths it left values out at or under, where a problem
    of how an item's keys go together (no subject, a timer that never stops, ...) or of
    ambiguity would only follow from what is missing."""
    return _Checker(rules, source, graph, ignore, damaged).run()
