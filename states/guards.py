"""The guard pipeline: the checks a transition passes, in a fixed, documented order.

1. ``trigger_exists``        the trigger is declared                      UnknownTrigger
2. ``source_state``          it is allowed from the current state         TriggerNotAllowed
3. ``role``                  the actor holds one of the allowed roles     RoleNotAllowed
4. ``separation_of_duties``  no separation rule (or recusal) forbids it   SeparationOfDuties
5. ``fields``                the data is settable and valid; required
                             fields have values once it is applied        MissingFields
6. ``condition``             the transition's condition holds             ConditionFailed
7. ``approval``              the required approval was given              ApprovalMissing

Checks 1-2 are decided per trigger, 3-7 per candidate transition (one trigger may have
several transitions from a state, told apart by their conditions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from complaintflow.actor import Actor
from complaintflow.errors import (
    ApprovalMissing,
    ConditionFailed,
    FieldProblem,
    MissingFields,
    RoleNotAllowed,
    SeparationOfDuties,
    TransitionRefused,
    hint,
)
from complaintflow.rules.model import TransitionDef
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.values import ValueProblem, check_field
from complaintflow.states.conditions import (
    Predicate,
    Scope,
    compile_condition,
    explain,
    fields_read,
)

__all__ = ["GUARD_ORDER", "CompiledTransition", "Refusal", "compile_transition", "is_blank"]

GUARD_ORDER = (
    "trigger_exists",
    "source_state",
    "role",
    "separation_of_duties",
    "fields",
    "condition",
    "approval",
)
_RANK = {name: i for i, name in enumerate(GUARD_ORDER)}


def is_blank(value: Any, *, recorded: bool = False) -> bool:
    """Whether a field value counts as missing: ``None``, an empty list, or text that is
    empty or only whitespace (``"   "``, ``"\\t\\n"``, the ideographic space ``"\\u3000"``).
    Whitespace is only looked at, never stripped: a value is stored as given.

    ``recorded``: a value in a recorded step, judged as the releases that recorded it did
    (only empty text was missing then), so that deep verification does not turn history
    those releases accepted into findings."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value if recorded else not value or value.isspace()
    return isinstance(value, tuple | list) and len(value) == 0


@dataclass(frozen=True)
class Refusal:
    """A failed check and why; ``why`` may be a function giving the reason, worked out only
    when someone reads it (a refused candidate is often passed over for another), so read it
    before the scope it was refused in changes."""

    check: str
    why: str | Callable[[], str]
    problems: tuple[FieldProblem, ...] = ()
    rule: str | None = None

    @property
    def reason(self) -> str:
        return self.why if isinstance(self.why, str) else self.why()

    @property
    def rank(self) -> int:
        return _RANK[self.check]

    def exception(self, number: str, trigger: str, state: str) -> TransitionRefused:
        cls: type[TransitionRefused] = {
            "role": RoleNotAllowed,
            "separation_of_duties": SeparationOfDuties,
            "condition": ConditionFailed,
            "approval": ApprovalMissing,
        }.get(self.check, TransitionRefused)
        if self.check == "fields":
            return MissingFields(number, trigger, state, self.reason, self.problems)
        if self.check == "separation_of_duties":
            return SeparationOfDuties(number, trigger, state, self.reason, self.rule)
        return cls(number, trigger, state, self.reason)


@dataclass(frozen=True)
class CompiledTransition:
    """One transition of the rule set with its checks compiled."""

    index: int
    definition: TransitionDef
    condition: Predicate | None
    condition_fields: frozenset[str]
    approval_when: Predicate | None
    settable: frozenset[str]

    @property
    def trigger(self) -> str:
        return self.definition.trigger

    def apply_data(self, rules: RuleSet, fields: Mapping[str, Any], data: Mapping[str, Any],
                   *, recorded: bool = False) -> tuple[dict[str, Any], list[FieldProblem]]:
        """The fields after ``data`` is applied, and every problem with the data.
        ``recorded``: ``data`` is a recorded step's, checked as the release that recorded it
        checked it (``is_blank``, ``check_field``)."""
        problems: list[FieldProblem] = []
        updated = dict(fields)
        for name, raw in data.items():
            field = rules.fields.get(name)
            if field is None:
                problems.append(FieldProblem(name, "no such field"
                                             + hint(str(name), rules.fields)))
            elif name not in self.settable:
                problems.append(FieldProblem(name, f"{self.trigger!r} may not set this field"))
            elif raw is None and not field.required:
                updated[name] = None
            else:
                try:
                    value = None if raw is None else check_field(field, raw, recorded=recorded)
                except ValueProblem as exc:
                    problems.append(FieldProblem(name, str(exc)))
                    continue
                # (recorded: releases before blank text counted as missing refused only None)
                if value is None or (field.required and not recorded and is_blank(value)):
                    problems.append(FieldProblem(name, "required on the complaint form: it "
                                                 "can be changed but not cleared"))
                else:
                    updated[name] = value
        for name in self.definition.requires:
            if is_blank(updated.get(name), recorded=recorded) \
                    and not any(p.field == name for p in problems):
                problems.append(FieldProblem(name, "required by this transition"))
        return updated, problems

    def check(
        self,
        rules: RuleSet,
        actor: Actor,
        scope: Scope,
        problems: list[FieldProblem],
        before: Mapping[str, Any],
        *,
        pending_input: bool = False,
    ) -> Refusal | None:
        """Checks 3-7 for this transition; ``None`` means allowed.

        With ``pending_input`` (used to offer buttons) missing input is not a refusal and
        conditions reading fields the actor may still supply are not evaluated."""
        d = self.definition
        if not actor.has_any(d.roles):
            return Refusal("role", f"needs one of the roles {', '.join(d.roles)}; "
                           f"actor {actor.id!r} has {', '.join(actor.roles) or 'none'}")
        for rule in rules.separation_rules_for(d.trigger):
            for trig in rule.not_actor_of:
                if scope.facts.last_actor.get(trig) == actor.id:
                    return Refusal("separation_of_duties",
                                   f"{rule.id}: {actor.id!r} fired {trig!r}; {rule.reason}",
                                   rule=rule.id)
            for name in rule.not_field:
                for values in (before, scope.fields):
                    value = values.get(name)
                    if value == actor.id or (isinstance(value, tuple) and actor.id in value):
                        return Refusal("separation_of_duties",
                                       f"{rule.id}: {actor.id!r} is named in {name!r}; "
                                       f"{rule.reason}", rule=rule.id)
        if problems and not pending_input:
            return Refusal("fields", "; ".join(str(p) for p in problems), tuple(problems))
        skip_condition = pending_input and bool(self.condition_fields & self.settable)
        if self.condition is not None and not skip_condition and not self.condition(scope):
            condition = d.condition
            assert condition is not None

            def why() -> str:
                about = f" ({d.description})" if d.description else ""
                return (f"the condition of {d.trigger!r} -> {d.to} is not met: "
                        f"{explain(condition, rules, scope)}{about}")

            return Refusal("condition", why)
        approval = d.approval
        if approval is not None and (self.approval_when is None or self.approval_when(scope)):
            facts = scope.facts
            after = facts.last_seq.get(approval.since, 0) if approval.since else \
                facts.entered_seq
            if facts.last_seq.get(approval.by, -1) <= after:
                since = f"the latest {approval.since!r}" if approval.since else \
                    "entering the current state"
                return Refusal("approval", f"needs {approval.by!r} after {since}")
        return None


def compile_transition(index: int, t: TransitionDef, rules: RuleSet) -> CompiledTransition:
    when = t.approval.when if t.approval is not None else None
    return CompiledTransition(
        index=index,
        definition=t,
        condition=compile_condition(t.condition, rules) if t.condition is not None else None,
        condition_fields=fields_read(t.condition),
        approval_when=compile_condition(when, rules) if when is not None else None,
        settable=frozenset(t.fields),  # requires only demands a value; it grants nothing
    )

