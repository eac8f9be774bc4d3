"""Calendars, timers and reviews in a rule file: every bad input is a located ``RuleError``
(file, line, column, key path) with a did-you-mean for a misspelt name.

Each case edits one line of a small valid rule file."""

from __future__ import annotations

import pytest

from complaintflow import RuleError, RuleProblem, RuleSet, parse_rules

FILE = "timing.yaml"

VALID = """\
name: 时限测试
initial: received
calendar: office
states:
  - id: received
    label: {zh: 接获, en: Received}
  - id: waiting
    label: {zh: 等待客户, en: Waiting}
  - id: closed
    label: {zh: 结案, en: Closed}
    final: true
roles:
  - id: clerk
    label: {zh: 文员, en: Clerk}
  - id: manager
    label: {zh: 经理, en: Manager}
fields:
  - {id: urgent, type: bool, label: {zh: 紧急, en: Urgent}}
severity:
  levels: [general, major]
  default: general
transitions:
  - trigger: wait
    from: [received]
    to: waiting
    roles: [clerk]
  - trigger: resume
    from: [waiting]
    to: received
    roles: [clerk]
  - trigger: answer
    from: [received]
    to: received
    roles: [clerk]
  - trigger: close
    from: [received]
    to: closed
    roles: [manager]
calendars:
  - id: office
    timezone: Asia/Shanghai
    hours:
      mon: ["08:30-12:00", "13:00-17:30"]
      tue: ["08:30-12:00", "13:00-17:30"]
    overrides:
      - {date: 2026-03-04, kind: holiday, note: 测试}
timers:
  - id: answer_in_time
    label: {zh: 答复时限, en: Answer}
    start: {on: receipt}
    condition: {field: urgent, eq: true}
    stop: [closed]
    stop_triggers: [answer]
    pause: [waiting]
    duration: {hours: 4}
    warnings: [{fraction: 0.5, notify: [clerk]}, {before: {hours: 1}, notify: [manager]}]
    on_breach: {notify: [manager]}
    extend_roles: [manager]
  - id: close_in_time
    label: {zh: 结案时限, en: Close}
    start: {on: enter, states: [received]}
    stop: [closed]
    duration: {working_days: 2}
    count_start_day: true
  - id: after_answer
    label: {zh: 答复后, en: After the answer}
    start: {on: trigger, triggers: [answer]}
    stop: [closed]
    duration: {days: 3}
reviews:
  - id: monthly
    label: {zh: 月度审查, en: Monthly}
    day_of_month: 4
    states: [received, waiting]
    notify: [manager]
"""


def edited(old: str, new: str) -> str:
    assert VALID.count(old) == 1, old
    return VALID.replace(old, new)


def at(text: str, needle: str, part: str | None = None) -> tuple[int, int]:
    """1-based line and column of ``part`` inside the (unique) ``needle``."""
    assert text.count(needle) == 1, needle
    index = text.index(needle) + (needle.index(part) if part else 0)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def problems_of(text: str) -> tuple[RuleProblem, ...]:
    with pytest.raises(RuleError) as info:
        parse_rules(text, FILE)
    problems = info.value.problems
    assert problems
    for p in problems:
        assert p.file == FILE
        assert p.message
        assert f"{FILE}:{p.line}:{p.column}: {p.path}: " in str(info.value)
    return problems


def problem_at(text: str, path: str, *, only: bool = True) -> RuleProblem:
    problems = problems_of(text)
    found = [p for p in problems if p.path == path]
    assert found, problems
    if only:
        assert [p.path for p in problems] == [path], problems
    return found[0]


def test_the_valid_file_loads() -> None:
    rules = parse_rules(VALID, FILE)
    assert isinstance(rules, RuleSet)
    assert [t.id for t in rules.definition.timers] == [
        "answer_in_time",
        "close_in_time",
        "after_answer",
    ]


# -- calendars -------------------------------------------------------------------------------


def test_unknown_timezone_in_a_calendar() -> None:
    text = edited("timezone: Asia/Shanghai", "timezone: Asia/Shangai")
    p = problem_at(text, "calendars[0].timezone")
    assert (p.line, p.column) == at(text, "Asia/Shangai")
    assert "Asia/Shangai" in p.message
    assert p.suggestion == "Asia/Shanghai"  # as for the top-level timezone


def test_unknown_top_level_timezone_for_comparison() -> None:
    text = edited("calendar: office\n", "calendar: office\ntimezone: Asia/Shangai\n")
    p = problem_at(text, "timezone")
    assert (p.line, p.column) == at(text, "Asia/Shangai")
    assert p.suggestion == "Asia/Shanghai"


def test_overlapping_intervals() -> None:
    text = edited('mon: ["08:30-12:00", "13:00-17:30"]', 'mon: ["08:30-12:00", "11:00-17:30"]')
    p = problem_at(text, "calendars[0].hours.mon[1]")
    assert (p.line, p.column) == at(text, '"11:00-17:30"')
    assert "overlaps" in p.message and "08:30-12:00" in p.message


def test_reversed_interval() -> None:
    text = edited('tue: ["08:30-12:00", "13:00-17:30"]', 'tue: ["12:00-08:30", "13:00-17:30"]')
    p = problem_at(text, "calendars[0].hours.tue[0]")
    assert (p.line, p.column) == at(text, '"12:00-08:30"')
    assert "end is before start" in p.message


def test_reversed_interval_in_an_override() -> None:
    text = edited(
        "      - {date: 2026-03-04, kind: holiday, note: 测试}\n",
        '      - {date: 2026-03-05, kind: hours, hours: ["17:00-09:00"], note: x}\n',
    )
    p = problem_at(text, "calendars[0].overrides[0].hours[0]")
    assert (p.line, p.column) == at(text, '"17:00-09:00"')


def test_an_override_for_a_date_twice() -> None:
    second = "      - {date: 2026-03-04, kind: workday, note: 又一次}\n"
    text = edited(
        "      - {date: 2026-03-04, kind: holiday, note: 测试}\n",
        "      - {date: 2026-03-04, kind: holiday, note: 测试}\n" + second,
    )
    p = problem_at(text, "calendars[0].overrides[1]")
    assert (p.line, p.column) == at(text, second, "{")
    assert "2026-03-04" in p.message and "overrides[0]" in p.message


def test_an_interval_that_is_not_a_time_range() -> None:
    text = edited('tue: ["08:30-12:00", "13:00-17:30"]', 'tue: ["08:30-12:00", "13:00-25:00"]')
    p = problem_at(text, "calendars[0].hours.tue[1]")
    assert (p.line, p.column) == at(text, '"13:00-25:00"')


# -- timers: references ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "path", "bad", "suggestion"),
    [
        pytest.param(
            "stop: [closed]\n    stop_triggers",
            "stop: [closd]\n    stop_triggers",
            "timers[0].stop[0]",
            "closd",
            "closed",
            id="stop-state",
        ),
        pytest.param(
            "pause: [waiting]",
            "pause: [wating]",
            "timers[0].pause[0]",
            "wating",
            "waiting",
            id="pause-state",
        ),
        pytest.param(
            "start: {on: enter, states: [received]}",
            "start: {on: enter, states: [recieved]}",
            "timers[1].start.states[0]",
            "recieved",
            "received",
            id="start-state",
        ),
        pytest.param(
            "stop_triggers: [answer]",
            "stop_triggers: [anwser]",
            "timers[0].stop_triggers[0]",
            "anwser",
            "answer",
            id="stop-trigger",
        ),
        pytest.param(
            "start: {on: trigger, triggers: [answer]}",
            "start: {on: trigger, triggers: [answr]}",
            "timers[2].start.triggers[0]",
            "answr",
            "answer",
            id="start-trigger",
        ),
        pytest.param(
            "    label: {zh: 结案时限, en: Close}\n",
            "    label: {zh: 结案时限, en: Close}\n    calendar: ofice\n",
            "timers[1].calendar",
            "ofice",
            "office",
            id="timer-calendar",
        ),
        pytest.param(
            "calendar: office\nstates",
            "calendar: offfice\nstates",
            "calendar",
            "offfice",
            "office",
            id="default-calendar",
        ),
        pytest.param(
            "condition: {field: urgent, eq: true}",
            "condition: {field: urgnt, eq: true}",
            "timers[0].condition.field",
            "urgnt",
            "urgent",
            id="condition-field",
        ),
        pytest.param(
            "on_breach: {notify: [manager]}",
            "on_breach: {notify: [manger]}",
            "timers[0].on_breach.notify[0]",
            "manger",
            "manager",
            id="breach-role",
        ),
        pytest.param(
            "{fraction: 0.5, notify: [clerk]}",
            "{fraction: 0.5, notify: [clerc]}",
            "timers[0].warnings[0].notify[0]",
            "clerc",
            "clerk",
            id="warning-role",
        ),
        pytest.param(
            "extend_roles: [manager]",
            "extend_roles: [managr]",
            "timers[0].extend_roles[0]",
            "managr",
            "manager",
            id="extend-role",
        ),
        pytest.param(
            "on_breach: {notify: [manager]}",
            "on_breach: {notify: [manager], reassign: manger}",
            "timers[0].on_breach.reassign",
            "manger",
            "manager",
            id="reassign-role",
        ),
        pytest.param(
            "on_breach: {notify: [manager]}",
            "on_breach: {notify: [manager], raise_severity: majr}",
            "timers[0].on_breach.raise_severity",
            "majr",
            "major",
            id="severity-level",
        ),
        pytest.param(
            "on_breach: {notify: [manager]}",
            "on_breach: {notify: [manager], fire: clos}",
            "timers[0].on_breach.fire",
            "clos",
            "close",
            id="breach-trigger",
        ),
    ],
)
def test_a_timer_naming_something_unknown(
    old: str, new: str, path: str, bad: str, suggestion: str
) -> None:
    text = edited(old, new)
    problems = problems_of(text)
    p = next((p for p in problems if p.path == path), None)
    assert p is not None, problems
    assert (p.line, p.column) == at(text, new, bad)
    assert repr(bad) in p.message and "unknown" in p.message
    assert p.suggestion == suggestion


def test_a_condition_comparing_with_the_wrong_type() -> None:
    text = edited("condition: {field: urgent, eq: true}", "condition: {field: urgent, eq: 3}")
    problems = problems_of(text)
    assert any(p.path.startswith("timers[0].condition") for p in problems), problems


# -- timers: budgets and warnings ----------------------------------------------------------


def test_working_units_without_a_calendar() -> None:
    text = edited("calendar: office\nstates", "states")
    p = problem_at(text, "timers[1].duration", only=False)
    assert (p.line, p.column) == at(text, "duration: {working_days: 2}", "{")
    assert "working_days needs a calendar" in p.message
    # the calendar-hours timers do not need one
    assert not [q for q in problems_of(text) if q.path.startswith(("timers[0]", "timers[2]"))]


def test_working_units_with_an_unknown_calendar_are_not_reported_twice() -> None:
    text = edited(
        "    label: {zh: 结案时限, en: Close}\n",
        "    label: {zh: 结案时限, en: Close}\n    calendar: ofice\n",
    )
    assert [p.path for p in problems_of(text)] == ["timers[1].calendar"]


def test_zero_budget_with_warnings() -> None:
    text = edited("duration: {hours: 4}", "duration: {hours: 0}")
    p = problem_at(text, "timers[0].duration.hours", only=False)
    assert (p.line, p.column) == at(text, "duration: {hours: 0}", "0")
    assert "zero budget" in p.message


def test_zero_budget_without_warnings_is_allowed() -> None:
    parse_rules(edited("duration: {days: 3}", "duration: {minutes: 0}"), FILE)


def test_negative_budget() -> None:
    text = edited("duration: {hours: 4}", "duration: {hours: -4}")
    p = problem_at(text, "timers[0].duration.hours")
    assert (p.line, p.column) == at(text, "duration: {hours: -4}", "-4")
    assert "greater than or equal to 0" in p.message


def test_a_budget_with_two_units() -> None:
    text = edited("duration: {days: 3}", "duration: {days: 3, hours: 2}")
    p = problem_at(text, "timers[2].duration")
    assert (p.line, p.column) == at(text, "duration: {days: 3, hours: 2}", "{")
    assert "2 units" in p.message


@pytest.mark.parametrize("fraction", ["1", "1.0", "1.5"])
def test_a_warning_at_or_after_the_breach(fraction: str) -> None:
    text = edited("fraction: 0.5", f"fraction: {fraction}")
    p = problem_at(text, "timers[0].warnings[0].fraction")
    assert (p.line, p.column) == at(text, f"fraction: {fraction}", fraction)
    assert "at or after the breach" in p.message


def test_a_warning_fraction_must_be_positive() -> None:
    text = edited("fraction: 0.5", "fraction: 0")
    p = problem_at(text, "timers[0].warnings[0].fraction")
    assert (p.line, p.column) == at(text, "fraction: 0,", "0")


@pytest.mark.parametrize("lead", ["{hours: 4}", "{hours: 5}", "{days: 1}"])
def test_a_lead_time_as_long_as_the_budget(lead: str) -> None:
    text = edited("before: {hours: 1}", f"before: {lead}")
    p = problem_at(text, "timers[0].warnings[1].before")
    assert (p.line, p.column) == at(text, f"before: {lead}", lead)
    assert p.expected == "a lead time shorter than the budget"


def test_a_lead_time_in_working_units() -> None:
    text = edited("before: {hours: 1}", "before: {working_hours: 1}")
    p = problem_at(text, "timers[0].warnings[1].before")
    assert "calendar time" in p.message


def test_a_warning_with_both_fraction_and_lead() -> None:
    text = edited(
        "{fraction: 0.5, notify: [clerk]}", "{fraction: 0.5, before: {hours: 1}, notify: [clerk]}"
    )
    p = problem_at(text, "timers[0].warnings[0]")
    assert (p.line, p.column) == at(text, "{fraction: 0.5, before")


# -- timers: shape ------------------------------------------------------------------------------


def test_a_timer_that_never_stops() -> None:
    text = edited(
        "    stop: [closed]\n    duration: {working_days: 2}", "    duration: {working_days: 2}"
    )
    p = problem_at(text, "timers[1].stop")
    assert (p.line, p.column) == at(text, "id: close_in_time")  # the timer itself
    assert "never stops" in p.message


def test_count_start_day_without_working_days() -> None:
    text = edited("duration: {working_days: 2}", "duration: {working_hours: 2}")
    p = problem_at(text, "timers[1].count_start_day")
    assert (p.line, p.column) == at(text, "count_start_day: true", "true")
    assert "working_days" in p.message


def test_a_state_that_both_stops_and_pauses() -> None:
    text = edited("pause: [waiting]", "pause: [waiting, closed]")
    p = problem_at(text, "timers[0].pause")
    assert (p.line, p.column) == at(text, "pause: [waiting, closed]", "[")


def test_a_start_on_enter_without_states() -> None:
    text = edited("start: {on: enter, states: [received]}", "start: {on: enter}")
    problem_at(text, "timers[1].start.states", only=False)


def test_an_unknown_start_kind_with_did_you_mean() -> None:
    text = edited("start: {on: receipt}", "start: {on: reciept}")
    p = problem_at(text, "timers[0].start.on")
    assert (p.line, p.column) == at(text, "on: reciept", "reciept")
    assert p.suggestion == "receipt"


def test_a_timer_id_declared_twice() -> None:
    text = edited("  - id: after_answer", "  - id: close_in_time")
    p = problem_at(text, "timers[2].id")
    assert "declared twice" in p.message


# -- reviews ----------------------------------------------------------------------------------


def test_review_with_an_unknown_state() -> None:
    text = edited("states: [received, waiting]", "states: [received, wating]")
    p = problem_at(text, "reviews[0].states[1]")
    assert (p.line, p.column) == at(text, "states: [received, wating]", "wating")
    assert p.suggestion == "waiting"


def test_review_with_an_unknown_role() -> None:
    text = edited("    notify: [manager]\n", "    notify: [manger]\n")
    p = problem_at(text, "reviews[0].notify[0]")
    assert p.suggestion == "manager"


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("day_of_month: 4", "day_of_month: 31", "reviews[0].day_of_month"),
        ("day_of_month: 4", "day_of_month: 0", "reviews[0].day_of_month"),
        ("    notify: [manager]\n", "    notify: [manager]\n    at: '25:00'\n", "reviews[0].at"),
    ],
)
def test_review_schedule_out_of_range(old: str, new: str, path: str) -> None:
    problem_at(edited(old, new), path)


def test_review_without_any_calendar() -> None:
    text = (
        edited("calendar: office\nstates", "states")
        .replace("duration: {working_days: 2}", "duration: {days: 2}")
        .replace("    count_start_day: true\n", "")
    )
    p = problem_at(text, "reviews[0].calendar")
    assert (p.line, p.column) == at(text, "id: monthly")


# -- all at once ------------------------------------------------------------------------------


def test_every_problem_is_reported_in_one_error() -> None:
    text = edited("timezone: Asia/Shanghai", "timezone: Asia/Shangai")
    text = text.replace("stop_triggers: [answer]", "stop_triggers: [anwser]")
    text = text.replace("fraction: 0.5", "fraction: 1.5")
    text = text.replace("states: [received, waiting]", "states: [received, wating]")
    paths = {p.path for p in problems_of(text)}
    assert paths == {
        "calendars[0].timezone",
        "timers[0].stop_triggers[0]",
        "timers[0].warnings[0].fraction",
        "reviews[0].states[1]",
    }
