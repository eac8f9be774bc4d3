"""A validated rule set: the rule file plus the lookups everything else uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from complaintflow.rules.model import (
    FieldDef,
    RoleDef,
    RuleFile,
    SeparationRule,
    StateDef,
    TransitionDef,
)
from complaintflow.rules.values import ValueType, type_of_field

__all__ = ["BUILTIN_FIELDS", "RuleSet", "raise_level"]

#: Subjects every condition may read besides the declared fields.
BUILTIN_FIELDS = ("severity", "state", "number", "received_at", "received_in_working_time",
                  "received_on_working_day")


@dataclass(frozen=True)
class RuleSet:
    """A rule file that passed every check. ``version`` is the SHA-256 of its text."""

    definition: RuleFile
    version: str
    text: str
    source: str
    transitions_by_trigger: Mapping[str, tuple[TransitionDef, ...]] = field(repr=False)

    @classmethod
    def build(cls, definition: RuleFile, version: str, text: str, source: str) -> RuleSet:
        by_trigger: dict[str, list[TransitionDef]] = {}
        for t in definition.transitions:
            by_trigger.setdefault(t.trigger, []).append(t)
        return cls(definition, version, text, source,
                   {k: tuple(v) for k, v in by_trigger.items()})

    @property
    def name(self) -> str:
        return self.definition.name

    @cached_property
    def states(self) -> Mapping[str, StateDef]:
        return {s.id: s for s in self.definition.states}

    @cached_property
    def roles(self) -> Mapping[str, RoleDef]:
        return {r.id: r for r in self.definition.roles}

    @cached_property
    def fields(self) -> Mapping[str, FieldDef]:
        return {f.id: f for f in self.definition.fields}

    @property
    def transitions(self) -> tuple[TransitionDef, ...]:
        return tuple(self.definition.transitions)

    @cached_property
    def triggers(self) -> tuple[str, ...]:
        return tuple(self.transitions_by_trigger)

    @property
    def initial(self) -> str:
        return self.definition.initial

    @cached_property
    def final_states(self) -> frozenset[str]:
        return frozenset(s.id for s in self.definition.states if s.final)

    @cached_property
    def severity_levels(self) -> tuple[str, ...]:
        return tuple(self.definition.severity.levels)

    @cached_property
    def personal_fields(self) -> frozenset[str]:
        return frozenset(f.id for f in self.definition.fields if f.personal)

    @cached_property
    def personal_readers(self) -> frozenset[str]:
        return frozenset(self.definition.personal_data.readers)

    def may_read_personal(self, roles: tuple[str, ...] | frozenset[str]) -> bool:
        return bool(self.personal_readers.intersection(roles))

    @cached_property
    def subject_types(self) -> Mapping[str, ValueType]:
        """Types of everything ``{field: ...}`` may name in a condition."""
        types = {f.id: type_of_field(f) for f in self.definition.fields}
        types["severity"] = ValueType("enum", self.severity_levels)
        types["state"] = ValueType("enum", tuple(self.states))
        types["number"] = ValueType("string")
        types["received_at"] = ValueType("datetime")
        if self.definition.calendar is not None:
            types["received_in_working_time"] = ValueType("bool")
            types["received_on_working_day"] = ValueType("bool")
        return types

    def separation_rules_for(self, trigger: str) -> tuple[SeparationRule, ...]:
        return tuple(
            r for r in self.definition.separation_of_duties
            if r.triggers == "*" or trigger in r.triggers
        )

    def outgoing(self, state: str) -> tuple[TransitionDef, ...]:
        return tuple(t for t in self.definition.transitions if state in t.source)

    def label(self, state: str, lang: str = "zh") -> str:
        s = self.states.get(state)
        if s is None:
            return state
        return s.label.zh if lang == "zh" else s.label.en


def raise_level(levels: tuple[str, ...], current: str | None, level: str) -> str:
    """``current`` raised to ``level`` if that is higher (``levels`` lowest first), as a
    breach's ``raise_severity`` does; a level that is not listed changes nothing, and a
    current one that is not listed (or none) is below every listed one."""
    if level not in levels:
        return level if current is None else current
    if current is None or current not in levels or levels.index(level) > levels.index(current):
        return level
    return current
