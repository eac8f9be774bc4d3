"""ONE ``transitions`` machine per rule-set version, shared by every complaint.

Complaints are never added to the machine (``model=None``); each step triggers the event on
a two-slot subject holding only the current state, with the guard pipeline as the condition
of every transition. Building a machine or calling ``add_model`` per complaint would cost
hundreds of microseconds and tens of KB each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from transitions import EventData, Machine

from complaintflow.actor import Actor
from complaintflow.errors import TriggerNotAllowed, UnknownTrigger, hint
from complaintflow.rules.ruleset import RuleSet
from complaintflow.states.conditions import Facts, Scope, severity_function
from complaintflow.states.guards import CompiledTransition, Refusal, compile_transition, is_blank
from complaintflow.worktime import WorkingCalendar

__all__ = ["ComplaintMachine", "Step", "TriggerOption"]


class _Subject:
    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


@dataclass(frozen=True)
class Step:
    """The outcome of an allowed transition (not yet stored)."""

    transition: CompiledTransition
    from_state: str
    to_state: str
    fields: dict[str, Any]
    severity: str

    @property
    def trigger(self) -> str:
        return self.transition.trigger


@dataclass(frozen=True)
class TriggerOption:
    """One way out of the current state, as offered to an actor."""

    trigger: str
    to_state: str
    allowed: bool
    check: str | None = None
    reason: str | None = None
    needs_fields: tuple[str, ...] = ()
    label: str | None = None


@dataclass
class _Attempt:
    machine: ComplaintMachine
    number: str
    actor: Actor
    before: Mapping[str, Any]
    builtins: Mapping[str, Any]
    facts: Facts
    data: Mapping[str, Any]
    floor: str | None
    now: datetime | None = None
    pending_input: bool = False
    recorded: bool = False
    refusals: list[Refusal] = field(default_factory=list)
    chosen: Step | None = None

    def run(self, ct: CompiledTransition) -> tuple[Refusal | None, dict[str, Any], str]:
        rules = self.machine.rules
        updated, problems = ct.apply_data(rules, self.before, self.data,
                                          recorded=self.recorded)
        severity = self.machine.severity(updated, self.floor)
        scope_fields = {**updated, **self.builtins, "severity": severity}
        scope = Scope(scope_fields, self.actor, self.facts, self.now, self.machine.calendars,
                      rules.definition.calendar)
        refusal = ct.check(rules, self.actor, scope, problems, self.before,
                           pending_input=self.pending_input)
        return refusal, updated, severity

    def guard(self, ct: CompiledTransition, event: EventData) -> bool:
        refusal, updated, severity = self.run(ct)
        if refusal is not None:
            self.refusals.append(refusal)
            return False
        self.chosen = Step(ct, str(self.builtins["state"]), ct.definition.to, updated, severity)
        return True


class ComplaintMachine:
    """The state machine of one rule-set version."""

    def __init__(self, rules: RuleSet,
                 calendars: Mapping[str, WorkingCalendar] | None = None) -> None:
        self.rules = rules
        self.calendars: Mapping[str, WorkingCalendar] = calendars or {}
        self.severity = severity_function(rules)
        self.compiled = tuple(compile_transition(i, t, rules)
                              for i, t in enumerate(rules.transitions))
        self._machine = Machine(
            model=None,
            states=list(rules.states),
            initial=rules.initial,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
        )
        for ct in self.compiled:
            self._machine.add_transition(
                ct.trigger, list(ct.definition.source), ct.definition.to,
                conditions=[self._condition(ct)],
            )
        self._sources: dict[str, frozenset[str]] = {}
        for ct in self.compiled:
            self._sources[ct.trigger] = self._sources.get(ct.trigger, frozenset()) | frozenset(
                ct.definition.source)

    @staticmethod
    def _condition(ct: CompiledTransition) -> Any:
        def condition(event: EventData) -> bool:
            attempt: _Attempt = event.kwargs["attempt"]
            return attempt.guard(ct, event)

        return condition

    def step(
        self,
        number: str,
        state: str,
        trigger: str,
        actor: Actor,
        fields: Mapping[str, Any],
        builtins: Mapping[str, Any],
        facts: Facts,
        data: Mapping[str, Any],
        floor: str | None = None,
        now: datetime | None = None,
        *,
        recorded: bool = False,
    ) -> Step:
        """Run the guards and the machine step; raise the specific refusal if refused.
        ``recorded``: re-checking a recorded step (``CompiledTransition.apply_data``)."""
        if trigger not in self._sources:
            raise UnknownTrigger(number, trigger, state,
                                 f"no trigger {trigger!r} in rule set {self.rules.name!r}"
                                 + hint(trigger, self._sources))
        if state not in self._sources[trigger]:
            allowed = ", ".join(sorted(self._sources[trigger]))
            raise TriggerNotAllowed(number, trigger, state,
                                    f"{trigger!r} is allowed only from {allowed}")
        attempt = _Attempt(self, number, actor, fields, {**builtins, "state": state}, facts,
                           data, floor, now, recorded=recorded)
        subject = _Subject(state)
        if not self._machine.events[trigger].trigger(subject, attempt=attempt):
            best = max(attempt.refusals, key=lambda r: r.rank)
            raise best.exception(number, trigger, state)
        assert attempt.chosen is not None and subject.state == attempt.chosen.to_state
        return attempt.chosen

    def options(
        self,
        number: str,
        state: str,
        actor: Actor,
        fields: Mapping[str, Any],
        builtins: Mapping[str, Any],
        facts: Facts,
        floor: str | None = None,
        now: datetime | None = None,
    ) -> list[TriggerOption]:
        """Every transition out of ``state`` and whether ``actor`` may fire it now."""
        out: list[TriggerOption] = []
        attempt = _Attempt(self, number, actor, fields, {**builtins, "state": state}, facts,
                           {}, floor, now, pending_input=True)
        for ct in self.compiled:
            d = ct.definition
            if state not in d.source:
                continue
            refusal, updated, _ = attempt.run(ct)
            needs = tuple(n for n in d.requires if is_blank(updated.get(n)))
            label = d.label.zh if d.label else None
            if refusal is None:
                out.append(TriggerOption(d.trigger, d.to, True, needs_fields=needs, label=label))
            else:
                out.append(TriggerOption(d.trigger, d.to, False, refusal.check, refusal.reason,
                                         needs, label))
        return out
