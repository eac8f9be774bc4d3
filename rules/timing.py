"""Calendars and timers of a rule file: building working calendars, and their load checks."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from datetime import time, timedelta
from typing import TYPE_CHECKING, Any

from complaintflow.errors import CalendarError, did_you_mean
from complaintflow.rules.model import WEEKDAYS, CalendarDef, Duration, RuleFile
from complaintflow.worktime import (
    CalendarSpec,
    CalendarSpecError,
    DayOverride,
    WorkingCalendar,
    WorkInterval,
)

if TYPE_CHECKING:
    from complaintflow.rules.check import _Checker



__all__ = ["UNITS", "build_calendars", "calendar_spec", "check_timing", "duration_of",
           "parse_interval"]

UNITS = ("minutes", "hours", "days", "working_minutes", "working_hours", "working_days")
_SPEC_PATH = re.compile(r"^(weekly|makeup_hours|overrides)(?:\[(\d+)\])?(?:\[(\d+)\])?"
                        r"(?:\.intervals(?:\[(\d+)\])?)?")


def parse_interval(text: str) -> WorkInterval:
    start, _, end = text.partition("-")
    h1, m1 = (int(x) for x in start.split(":"))
    h2, m2 = (int(x) for x in end.split(":"))
    end_time = time(0, 0) if (h2, m2) == (24, 0) else time(h2, m2)
    return WorkInterval(time(h1, m1), end_time)


def calendar_spec(cal: CalendarDef) -> CalendarSpec:
    """The worktime spec of a calendar declaration (raises ``CalendarSpecError``)."""
    weekly = {WEEKDAYS.index(day): tuple(parse_interval(t) for t in ivs)
              for day, ivs in cal.hours.items()}
    overrides = tuple(
        DayOverride(ov.date, ov.kind, tuple(parse_interval(t) for t in ov.hours), ov.note)
        for ov in cal.overrides
    )
    return CalendarSpec(
        id=cal.id, timezone=cal.timezone, weekly=weekly, country=cal.country,
        overrides=overrides, official_through=cal.official_through, beyond=cal.beyond,
        makeup_hours=tuple(parse_interval(t) for t in cal.makeup_hours),
    )


def build_calendars(rules: RuleFile) -> dict[str, WorkingCalendar]:
    return {cal.id: WorkingCalendar(calendar_spec(cal)) for cal in rules.calendars}


def duration_of(d: Duration) -> tuple[str, int]:
    """(unit, amount) of a duration that passed the checks (exactly one unit)."""
    for unit in UNITS:
        amount = getattr(d, unit)
        if amount is not None:
            return unit, int(amount)
    raise AssertionError("a checked duration has a unit")


def calendar_minutes(unit: str, amount: int) -> timedelta | None:
    """The length of a calendar-time duration; ``None`` for working units."""
    factor = {"minutes": 1, "hours": 60, "days": 1440}.get(unit)
    return None if factor is None else timedelta(minutes=amount * factor)


def _spec_path(index: int, cal: CalendarDef, path: str) -> tuple[Any, ...]:
    """Map a worktime problem path (``weekly[0][1]``) onto the YAML document."""
    base: tuple[Any, ...] = ("calendars", index)
    m = _SPEC_PATH.match(path)
    if path.startswith("timezone") or path.startswith("country") or path.startswith("beyond"):
        return (*base, path.split("[")[0])
    if not m:
        return base
    kind, a, b, c = m.group(1), m.group(2), m.group(3), m.group(4)
    if kind == "weekly":
        day = WEEKDAYS[int(a)] if a is not None and int(a) < 7 else None
        out: tuple[Any, ...] = (*base, "hours")
        if day is not None:
            out = (*out, day)
            if b is not None:
                out = (*out, int(b))
        return out
    if kind == "makeup_hours":
        return (*base, "makeup_hours", *(() if a is None else (int(a),)))
    out = (*base, "overrides", *(() if a is None else (int(a),)))
    if c is not None:
        out = (*out, "hours", int(c))
    return out


def _check_duration(c: _Checker, path: tuple[Any, ...], d: Duration, *, zero_ok: bool) -> None:
    given = [u for u in UNITS if getattr(d, u) is not None]
    if len(given) != 1:
        c.add(path, f"names {len(given)} units ({', '.join(given) or 'none'})",
              "exactly one of " + ", ".join(UNITS), depends=path)
        return
    if getattr(d, given[0]) == 0 and not zero_ok:
        c.add((*path, given[0]), "a zero budget is not allowed here", "a positive amount")


def check_timing(c: _Checker) -> None:
    """Calendars, timers and their references; appends to the checker's problems."""
    rules = c.rules
    check_reviews(c)
    calendars = [cal.id for cal in rules.calendars]
    c.unique(calendars, ("calendars",), "calendar")
    c.unique([t.id for t in rules.timers], ("timers",), "timer")
    for i, cal in enumerate(rules.calendars):
        try:
            calendar_spec(cal)
        except CalendarSpecError as exc:
            for problem in exc.problems:
                suggestion = None
                if problem.code == "unknown_timezone":
                    suggestion = did_you_mean(cal.timezone, zoneinfo.available_timezones())
                c.add(_spec_path(i, cal, problem.path), problem.message,
                      "an IANA zone name" if suggestion else None, suggestion)
        except CalendarError as exc:  # pragma: no cover - spec errors are CalendarSpecError
            c.add(("calendars", i), str(exc))
    if rules.calendar is not None:
        c.ref(("calendar",), rules.calendar, calendars, "calendar")
    states = [s.id for s in rules.states]
    levels = list(rules.severity.levels)
    for i, t in enumerate(rules.timers):
        path: tuple[Any, ...] = ("timers", i)
        calendar = t.calendar or rules.calendar
        if t.calendar is not None:
            c.ref((*path, "calendar"), t.calendar, calendars, "calendar")
        start = t.start
        if start.on == "enter":
            if not start.states:
                c.add((*path, "start", "states"), "start on 'enter' names no state",
                      "a list of states", depends=(*path, "start"))
            for j, s in enumerate(start.states):
                c.ref((*path, "start", "states", j), s, states, "state")
        elif start.on == "trigger":
            if not start.triggers:
                c.add((*path, "start", "triggers"), "start on 'trigger' names no trigger",
                      "a list of triggers", depends=(*path, "start"))
            for j, trig in enumerate(start.triggers):
                c.ref((*path, "start", "triggers", j), trig, c.triggers, "trigger")
        if start.on != "enter" and start.states:
            c.add((*path, "start", "states"), "states are only used with on: enter")
        if start.on != "trigger" and start.triggers:
            c.add((*path, "start", "triggers"), "triggers are only used with on: trigger")
        for key in ("stop", "pause"):
            for j, s in enumerate(getattr(t, key)):
                c.ref((*path, key, j), s, states, "state")
        for j, trig in enumerate(t.stop_triggers):
            c.ref((*path, "stop_triggers", j), trig, c.triggers, "trigger")
        if not t.stop and not t.stop_triggers:
            c.add((*path, "stop"), "the clock never stops", "stop states or stop_triggers",
                  depends=path)
        if t.count_start_day and t.duration.working_days is None:
            c.add((*path, "count_start_day"), "count_start_day only applies to working_days",
                  depends=path)
        if set(t.stop) & set(t.pause):
            c.add((*path, "pause"), "a state cannot both stop and pause the clock")
        if t.condition is not None:
            c.condition((*path, "condition"), t.condition)
        durations = [((*path, "duration"), t.duration)]
        for j, v in enumerate(t.variants):
            c.condition((*path, "variants", j, "when"), v.when)
            durations.append(((*path, "variants", j, "duration"), v.duration))
        for dpath, d in durations:
            _check_duration(c, dpath, d, zero_ok=not t.warnings)
            given = [u for u in UNITS if getattr(d, u) is not None]
            if given and given[0].startswith("working") and calendar is None:
                c.add(dpath, f"{given[0]} needs a calendar",
                      "a 'calendar' on the timer or at the top of the file", depends=path)
        if t.align_to_opening and calendar is None:
            c.add((*path, "align_to_opening"), "aligning to the opening needs a calendar",
                  depends=path)
        for j, w in enumerate(t.warnings):
            wpath = (*path, "warnings", j)
            if (w.fraction is None) == (w.before is None):
                c.add(wpath, "a warning needs exactly one of fraction or before", depends=wpath)
                continue
            if w.fraction is not None and w.fraction >= 1:
                c.add((*wpath, "fraction"), f"a warning at {w.fraction} of the budget would "
                      "come at or after the breach", "a fraction below 1")
            if w.before is not None:
                _check_duration(c, (*wpath, "before"), w.before, zero_ok=False)
                unit, amount = duration_of(w.before) if len(
                    [u for u in UNITS if getattr(w.before, u) is not None]) == 1 else ("", 0)
                if unit.startswith("working"):
                    c.add((*wpath, "before"), "a lead time is calendar time",
                          "minutes, hours or days")
                for _vpath, d in durations:
                    dunit_given = [u for u in UNITS if getattr(d, u) is not None]
                    if len(dunit_given) != 1 or unit.startswith("working") or not unit:
                        continue
                    budget = calendar_minutes(dunit_given[0], getattr(d, dunit_given[0]))
                    lead = calendar_minutes(unit, amount)
                    if budget is not None and lead is not None and lead >= budget:
                        c.add((*wpath, "before"), f"the warning would come before the clock "
                              f"starts ({amount} {unit} before a budget of {budget})",
                              "a lead time shorter than the budget", depends=path)
            for k, role in enumerate(w.notify):
                c.ref((*wpath, "notify", k), role, c.roles, "role")
        for k, role in enumerate(t.extend_roles):
            c.ref((*path, "extend_roles", k), role, c.roles, "role")
        b = t.on_breach
        for k, role in enumerate(b.notify):
            c.ref((*path, "on_breach", "notify", k), role, c.roles, "role")
        if b.raise_severity is not None:
            c.ref((*path, "on_breach", "raise_severity"), b.raise_severity, levels,
                  "severity level")
        if b.reassign is not None:
            c.ref((*path, "on_breach", "reassign"), b.reassign, c.roles, "role")
        if b.fire is not None:
            c.ref((*path, "on_breach", "fire"), b.fire, c.triggers, "trigger")


def check_reviews(c: _Checker) -> None:
    calendars = [cal.id for cal in c.rules.calendars]
    c.unique([r.id for r in c.rules.reviews], ("reviews",), "review")
    states = [s.id for s in c.rules.states]
    for i, r in enumerate(c.rules.reviews):
        path: tuple[Any, ...] = ("reviews", i)
        if r.calendar is not None:
            c.ref((*path, "calendar"), r.calendar, calendars, "calendar")
        elif c.rules.calendar is None:
            c.add((*path, "calendar"), "a review needs a calendar (for its time zone)",
                  depends=path)
        for j, s in enumerate(r.states):
            c.ref((*path, "states", j), s, states, "state")
        for j, role in enumerate(r.notify):
            c.ref((*path, "notify", j), role, c.roles, "role")


def calendars_by_id(calendars: Mapping[str, WorkingCalendar], name: str | None,
                    default: str | None) -> WorkingCalendar | None:
    key = name or default
    return calendars.get(key) if key else None
