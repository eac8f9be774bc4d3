"""Everything built once per rule-set version and shared by all its complaints."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from complaintflow.actor import Actor
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.timing import build_calendars
from complaintflow.states.conditions import Facts, Scope
from complaintflow.states.machine import ComplaintMachine
from complaintflow.timers import TimerSet
from complaintflow.views import FieldCodec
from complaintflow.worktime import WorkingCalendar

__all__ = ["Compiled"]

_CACHE: dict[str, Compiled] = {}
_BUILTINS_KEPT = 4096
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Compiled:
    rules: RuleSet
    machine: ComplaintMachine
    codec: FieldCodec
    calendars: dict[str, WorkingCalendar]
    timers: TimerSet
    #: ``builtins`` by (number, received_at): the same for every fire of a complaint, and
    #: asking the calendar costs more than the rest of it; emptied when it grows past
    #: ``_BUILTINS_KEPT`` complaints
    _builtins: dict[tuple[str, datetime], dict[str, Any]] = field(
        default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, rules: RuleSet) -> Compiled:
        """The compiled form of ``rules``; shared per content hash (it is immutable)."""
        with _LOCK:
            found = _CACHE.get(rules.version)
            if found is None:
                found = _CACHE[rules.version] = cls._build(rules)
            return found

    @classmethod
    def _build(cls, rules: RuleSet) -> Compiled:
        calendars = build_calendars(rules.definition)
        machine = ComplaintMachine(rules, calendars)
        return cls(rules, machine, FieldCodec(rules), calendars, TimerSet(rules, calendars))

    @property
    def version(self) -> str:
        return self.rules.version

    @property
    def default_calendar(self) -> WorkingCalendar | None:
        name = self.rules.definition.calendar
        return self.calendars.get(name) if name else None

    def builtins(self, number: str, received_at: datetime) -> dict[str, Any]:
        """Built-in condition subjects besides severity and state (a new dict each time)."""
        key = (number, received_at)
        found = self._builtins.get(key)
        if found is None:
            found = {"number": number, "received_at": received_at}
            cal = self.default_calendar
            if cal is not None:
                found["received_in_working_time"] = cal.is_working_instant(received_at)
                found["received_on_working_day"] = cal.is_working_day(
                    cal.to_local(received_at).date())
            if len(self._builtins) >= _BUILTINS_KEPT:
                self._builtins.clear()
            self._builtins[key] = found
        return dict(found)

    def scope(self, fields: dict[str, Any], actor: Actor, facts: Facts,
              now: datetime) -> Scope:
        return Scope(fields, actor, facts, now, self.calendars, self.rules.definition.calendar)
