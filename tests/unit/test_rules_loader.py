"""One bad rule file per test: each problem is reported located (file, line, column, key path)
with what was expected and, for a misspelt name, a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from complaintflow.errors import RuleError, RuleProblem
from complaintflow.rules.loader import default_rules_text, load_rules, parse_rules
from complaintflow.rules.model import Compare
from complaintflow.rules.ruleset import RuleSet

FILE = "rules.yaml"

MINIMAL = """\
name: 测试规则
initial: received
states:
  - id: received
    label: {zh: 接获, en: Received}
  - id: handled
    label: {zh: 处理, en: Handled}
  - id: closed
    label: {zh: 结案, en: Closed}
    final: true
roles:
  - id: clerk
    label: {zh: 文员, en: Clerk}
  - id: manager
    label: {zh: 经理, en: Manager}
fields:
  - {id: amount, type: decimal, label: {zh: 金额, en: Amount}}
  - {id: score, type: integer, label: {zh: 得分, en: Score}}
  - {id: mood, type: enum, values: [happy, unhappy], label: {zh: 心情, en: Mood}}
  - {id: demand, type: enum_list, values: [repair, refund], label: {zh: 要求, en: Demand}}
  - {id: urgent, type: bool, label: {zh: 紧急, en: Urgent}}
  - {id: note, type: string, label: {zh: 备注, en: Note}}
severity:
  levels: [general, major]
  default: general
transitions:
  - trigger: handle
    from: [received]
    to: handled
    roles: [clerk]
    fields: [note]
  - trigger: close
    from: [handled]
    to: closed
    roles: [manager]
"""


def at(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based line and column where the ``occurrence``-th ``needle`` starts."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
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
    assert str(info.value).startswith(f"{len(problems)} problem")
    return problems


def the_problem(text: str, path: str) -> RuleProblem:
    """The only problem of ``text``, which must be at ``path``."""
    problems = problems_of(text)
    assert [p.path for p in problems] == [path], problems
    return problems[0]


def with_transition(extra: str, base: str = MINIMAL) -> str:
    return base + extra


def replaced(old: str, new: str, base: str = MINIMAL) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def assert_at(problem: RuleProblem, text: str, needle: str, occurrence: int = 1) -> None:
    assert (problem.line, problem.column) == at(text, needle, occurrence), problem


def test_the_minimal_file_loads() -> None:
    rules = parse_rules(MINIMAL, FILE)
    assert isinstance(rules, RuleSet)
    assert rules.source == FILE
    assert rules.final_states == {"closed"}


# -- YAML ----------------------------------------------------------------------------------


def test_malformed_yaml() -> None:
    text = replaced("    roles: [clerk]\n", "    roles: [clerk\n")
    (problem,) = problems_of(text)
    assert problem.message.startswith("malformed YAML")
    assert problem.line is not None and problem.column is not None
    assert at(text, "[clerk")[0] <= problem.line <= at(text, "fields: [note]")[0]
    assert problem.expected == "well-formed YAML"


def test_bad_indentation_is_malformed_yaml() -> None:
    text = replaced("  default: general", " default: general")
    (problem,) = problems_of(text)
    assert problem.message.startswith("malformed YAML")
    assert problem.line == at(text, " default: general")[0]


def test_control_characters_are_located() -> None:
    text = replaced("name: 测试规则", "name: 测试\x00规则")
    (problem,) = problems_of(text)
    assert "U+0000" in problem.message
    assert (problem.line, problem.column) == (1, 9)


def test_python_object_tags_are_refused_and_nothing_is_constructed(tmp_path: Path) -> None:
    target = tmp_path / "constructed"
    text = replaced("name: 测试规则", f"name: !!python/object/apply:os.mkdir ['{target}']")
    problem = the_problem(text, "name")
    assert "tag:yaml.org,2002:python/object/apply:os.mkdir" in problem.message
    assert problem.expected == "plain YAML without tags"
    assert_at(problem, text, "!!python")
    assert not target.exists()


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/name:os.system",
        "!!binary",
        "!!set",
        "!local",
        "!<tag:example.com,2000:x>",
        "!!omap",
        # standard tags too: before, they were dropped silently ("!!str 123" read as 123)
        "!!str",
        "!!int",
        "!!bool",
        "!!null",
        "!",
    ],
)
def test_other_tags_are_refused(tag: str) -> None:
    text = replaced("  default: general", f"  default: {tag} general")
    problem = the_problem(text, "severity.default")
    assert "is not allowed in rule files" in problem.message
    assert_at(problem, text, tag)


def test_a_tag_on_a_collection_is_refused() -> None:
    text = replaced("  levels: [general, major]", "  levels: !!set {general: null}")
    problem = the_problem(text, "severity.levels")
    assert_at(problem, text, "!!set")


def test_duplicate_keys() -> None:
    text = replaced("    to: handled\n", "    to: handled\n    to: closed\n")
    problem = the_problem(text, "transitions[0].to")
    assert problem.message == "duplicate key 'to'"
    assert_at(problem, text, "to: closed")


def test_merge_keys_are_refused() -> None:
    text = replaced("  default: general", "  default: general\n  <<: {x: 1}")
    problem = the_problem(text, "severity")
    assert "plain strings" in problem.message
    assert_at(problem, text, "<<")


def test_self_referring_aliases_are_refused() -> None:
    text = MINIMAL + "separation_of_duties: &loop [*loop]\n"
    problem = the_problem(text, "separation_of_duties[0]")
    assert "refers to itself" in problem.message
    assert problem.line == at(text, "*loop")[0]


def test_alias_bombs_are_cut_off() -> None:
    lines = ["description: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"k{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
    problems = problems_of("\n".join(lines) + "\n")
    assert any("expands to more than" in p.message for p in problems)
    assert all(p.line is not None for p in problems)


@pytest.mark.parametrize(
    ("plain", "expected"),
    [
        ("on", "on"),
        ("off", "off"),
        ("yes", "yes"),
        ("no", "no"),
        ("y", "y"),
        ("n", "n"),
        ("13:00", "13:00"),
        ("1:30:00", "1:30:00"),
        ("2026-02-11", "2026-02-11"),
        ("0x1F", "0x1F"),
        ("0o17", "0o17"),
        (".inf", ".inf"),
        ("NaN", "NaN"),
    ],
)
def test_yaml_11_scalars_stay_strings(plain: str, expected: str) -> None:
    text = replaced("name: 测试规则", f"name: {plain}")
    rules = parse_rules(text, FILE)
    assert rules.name == expected


def test_on_off_yes_no_can_be_enum_values() -> None:
    text = replaced("values: [happy, unhappy]", "values: [on, off, yes, no]")
    text = with_transition(
        "  - {trigger: check, from: [received], to: handled, roles: [manager],"
        " condition: {field: mood, in: [on, yes]}}\n",
        text,
    )
    rules = parse_rules(text, FILE)
    assert rules.fields["mood"].values == ["on", "off", "yes", "no"]
    (check,) = rules.transitions_by_trigger["check"]
    assert check.condition == Compare(field="mood", in_=["on", "yes"])


def test_true_and_numbers_are_resolved() -> None:
    rules = parse_rules(MINIMAL, FILE)
    assert rules.states["closed"].final is True
    text = with_transition(
        "  - {trigger: check, from: [received], to: handled, roles: [manager],"
        " condition: {field: score, ge: 85}}\n"
    )
    (check,) = parse_rules(text, FILE).transitions_by_trigger["check"]
    assert check.condition == Compare(field="score", ge=85)


def test_empty_file() -> None:
    for text in ("", "   \n", "# only a comment\n", "---\n"):
        with pytest.raises(RuleError) as info:
            parse_rules(text, FILE)
        (problem,) = info.value.problems
        assert problem.file == FILE
        assert problem.path == ""
        assert (problem.line, problem.column) == (1, 1) or "empty" not in problem.message
        assert "empty" in problem.message or "mapping" in problem.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just words\n", "42\n", "[1, 2]\n"])
def test_the_root_must_be_a_mapping(text: str) -> None:
    problem = the_problem(text, "")
    assert problem.message == "the rule file must be a mapping"
    assert problem.expected == "a mapping"
    assert (problem.line, problem.column) == (1, 1)


# -- the structure -------------------------------------------------------------------------


def test_unknown_top_level_key_with_did_you_mean() -> None:
    text = replaced("initial: received", "initial: received\ntransitons: []")
    problem = the_problem(text, "transitons")
    assert problem.message == "unknown key 'transitons'"
    assert problem.suggestion == "transitions"
    assert problem.expected is not None and "transitions" in problem.expected
    assert_at(problem, text, "transitons")


def test_unknown_nested_key_with_did_you_mean() -> None:
    text = replaced("    to: closed\n", "    to: closed\n    requries: [note]\n")
    problem = the_problem(text, "transitions[1].requries")
    assert problem.suggestion == "requires"
    assert_at(problem, text, "requries")


def test_unknown_key_inside_a_condition_with_did_you_mean() -> None:
    text = with_transition(
        "  - {trigger: check, from: [received], to: handled, roles: [manager],"
        " condition: {all: [{not: {feild: urgent, eq: true}}]}}\n"
    )
    problem = the_problem(text, "transitions[2].condition.all[0].not.feild")
    assert problem.suggestion == "field"
    assert problem.expected is not None and "is_set" in problem.expected
    assert_at(problem, text, "feild")


def test_a_missing_key_points_at_its_mapping() -> None:
    text = replaced("    roles: [manager]\n", "")
    problem = the_problem(text, "transitions[1].roles")
    assert problem.message == "Field required"
    assert problem.expected == "this key"
    assert_at(problem, text, "trigger: close")


def test_a_wrong_literal_with_did_you_mean() -> None:
    text = replaced("type: integer", "type: interger")
    problem = the_problem(text, "fields[1].type")
    assert problem.suggestion == "integer"
    assert_at(problem, text, "interger")


def test_star_or_a_list() -> None:
    text = MINIMAL + "submit: {roles: everyone}\n"
    problem = the_problem(text, "submit.roles")
    assert problem.expected == "a list or '*'"
    assert_at(problem, text, "everyone")


def test_identifiers_are_lower_case() -> None:
    text = replaced("  - id: manager", "  - id: Manager")
    problem = problems_of(text)[0]
    assert problem.path == "roles[1].id"
    assert problem.expected is not None and "lower-case identifier" in problem.expected
    assert_at(problem, text, "Manager")


def test_a_review_time_is_a_time_of_day_and_office_hours_an_interval() -> None:
    """Both patterns hold a '-' ([0-9]); a review's ``at`` was said to expect an interval."""
    calendar = """\
calendars:
  - id: office
    label: {zh: 办公时间, en: Office hours}
    hours:
      mon: ["8:30-12:00"]
reviews:
  - id: monthly
    label: {zh: 月度审查, en: Monthly review}
    day_of_month: 4
    at: "9am"
    calendar: office
    states: [received]
    notify: [manager]
"""
    problems = {p.path: p for p in problems_of(MINIMAL + calendar)}
    assert problems["reviews[0].at"].expected == "a time of day such as '09:00' (24-hour clock)"
    assert problems["calendars[0].hours.mon[0]"].expected == \
        "an interval such as '08:30-12:00' (24-hour clock)"


# -- references ----------------------------------------------------------------------------


def test_unknown_state_in_to() -> None:
    text = replaced("    to: closed", "    to: clossed")
    problem = the_problem(text, "transitions[1].to")
    assert problem.message == "unknown state 'clossed'"
    assert problem.suggestion == "closed"
    assert problem.expected == "one of the declared states"
    assert_at(problem, text, "clossed")


def test_unknown_state_in_from() -> None:
    text = replaced("    from: [handled]", "    from: [handeld]")
    problem = the_problem(text, "transitions[1].from[0]")
    assert problem.suggestion == "handled"
    assert_at(problem, text, "handeld")


def test_unknown_initial_state() -> None:
    text = replaced("initial: received", "initial: recieved")
    problem = the_problem(text, "initial")
    assert problem.suggestion == "received"
    assert_at(problem, text, "recieved")


def test_unknown_role() -> None:
    text = replaced("    roles: [manager]", "    roles: [manger]")
    problem = the_problem(text, "transitions[1].roles[0]")
    assert problem.message == "unknown role 'manger'"
    assert problem.suggestion == "manager"
    assert_at(problem, text, "manger")


def test_unknown_role_in_a_condition_on_the_actor() -> None:
    text = with_transition(
        "  - {trigger: check, from: [received], to: handled, roles: [clerk],"
        " condition: {actor: roles, contains: managr}}\n"
    )
    problem = the_problem(text, "transitions[2].condition.contains")
    assert problem.suggestion == "manager"
    assert_at(problem, text, "managr")


def test_unknown_field_in_fields() -> None:
    text = replaced("    fields: [note]", "    fields: [notes]")
    problem = the_problem(text, "transitions[0].fields[0]")
    assert problem.message == "unknown field 'notes'"
    assert problem.suggestion == "note"
    assert_at(problem, text, "notes")


def test_unknown_field_in_requires() -> None:
    text = replaced("    roles: [manager]\n", "    roles: [manager]\n    requires: [scroe]\n")
    problem = the_problem(text, "transitions[1].requires[0]")
    assert problem.suggestion == "score"
    assert_at(problem, text, "scroe")


def test_unknown_field_in_a_condition() -> None:
    text = replaced(
        "    roles: [manager]\n", "    roles: [manager]\n    condition: {field: amuont, gt: 0}\n"
    )
    problem = the_problem(text, "transitions[1].condition.field")
    assert problem.suggestion == "amount"
    assert_at(problem, text, "amuont")


def test_unknown_trigger_in_an_operand() -> None:
    text = replaced(
        "    roles: [manager]\n",
        "    roles: [manager]\n    condition: {actor: id, ne: {last_actor_of: handel}}\n",
    )
    problem = the_problem(text, "transitions[1].condition.ne.last_actor_of")
    assert problem.message == "unknown trigger 'handel'"
    assert problem.suggestion == "handle"
    assert_at(problem, text, "handel")


def test_built_in_fields_cannot_be_set() -> None:
    text = replaced("    fields: [note]", "    fields: [severity]")
    problem = the_problem(text, "transitions[0].fields[0]")
    assert "computed" in problem.message


# -- condition types -----------------------------------------------------------------------


def condition_problem(condition: str, needle: str) -> RuleProblem:
    text = replaced("    roles: [manager]\n", f"    roles: [manager]\n    condition: {condition}\n")
    (problem,) = problems_of(text)
    assert problem.path.startswith("transitions[1].condition")
    assert_at(problem, text, needle)
    assert problem.expected
    return problem


def test_decimal_field_against_a_string_literal() -> None:
    problem = condition_problem("{field: amount, ge: '100'}", "'100'")
    assert problem.path == "transitions[1].condition.ge"
    assert problem.message == "compares decimal with str '100'"


@pytest.mark.parametrize("literal", ["1e150", "1" + "0" * 400, "-1e101"])
def test_a_number_beyond_what_fields_can_hold_is_a_problem_not_a_crash(literal: str) -> None:
    """A literal no field value can reach (fields hold at most 100 digits either side of the
    point) is refused where it is written; it used to pass the check and then break
    ``Engine.open``, or crash the check itself on an integer too large for a float."""
    problem = condition_problem(f"{{field: amount, ge: {literal}}}", literal[:10])
    assert problem.path == "transitions[1].condition.ge"
    assert "is not a usable number: out of range" in problem.message


def test_a_duration_of_more_than_a_hundred_years_is_a_problem() -> None:
    from complaintflow import parse_rules as parse
    from complaintflow.rules.loader import default_rules_text

    text = default_rules_text()
    old = "    duration: {working_days: 15}\n"
    assert text.count(old) == 1
    with pytest.raises(RuleError) as info:
        parse(text.replace(old, "    duration: {minutes: 10000000000000000}\n"), FILE)
    (problem,) = info.value.problems
    assert problem.path.endswith("duration.minutes")
    assert "52704000" in problem.message
    assert problem.line == at(text, old.strip())[0]


def test_decimal_field_against_words() -> None:
    problem = condition_problem("{field: amount, eq: lots}", "lots")
    assert problem.message == "compares decimal with str 'lots'"


def test_lt_on_an_enum() -> None:
    problem = condition_problem("{field: mood, lt: happy}", "happy}")
    assert problem.path == "transitions[1].condition.lt"
    assert problem.message.startswith("lt cannot compare enum")


def test_contains_on_a_scalar() -> None:
    problem = condition_problem("{field: note, contains: x}", "x}")
    assert problem.path == "transitions[1].condition.contains"
    assert problem.message.startswith("contains needs a list")


def test_in_on_a_list() -> None:
    problem = condition_problem("{field: demand, in: [repair]}", "[repair]")
    assert problem.message.startswith("in needs a single value")


def test_field_against_a_field_of_another_type() -> None:
    problem = condition_problem("{field: note, eq: {field: amount}}", "{field: amount}")
    assert problem.path == "transitions[1].condition.eq"
    assert problem.message == "compares string with decimal"


def test_bool_against_a_number() -> None:
    problem = condition_problem("{field: urgent, eq: 1}", "1}")
    assert "bool" in problem.message


def test_string_against_a_number() -> None:
    problem = condition_problem("{field: note, eq: 5}", "5}")
    assert problem.expected == "a quoted string"


def test_enum_literal_not_among_the_values() -> None:
    problem = condition_problem("{field: mood, eq: unhapy}", "unhapy")
    assert problem.path == "transitions[1].condition.eq"
    assert problem.message == "'unhapy' is not one of happy, unhappy"
    assert problem.suggestion == "unhappy"


def test_enum_list_literal_not_among_the_values() -> None:
    problem = condition_problem("{field: demand, contains: refnud}", "refnud")
    assert problem.suggestion == "refund"


def test_enum_literal_inside_in() -> None:
    problem = condition_problem("{field: mood, in: [happy, unhapy]}", "unhapy")
    assert problem.path == "transitions[1].condition.in[1]"
    assert problem.suggestion == "unhappy"


def test_two_operators() -> None:
    problem = condition_problem("{field: score, ge: 1, le: 5}", "{field: score")
    assert problem.message == "has 2 operators (le, ge)"


def test_no_subject() -> None:
    problem = condition_problem("{eq: 5}", "{eq: 5}")
    assert problem.message.startswith("names 0 subjects")


def test_severity_rules_read_fields_only() -> None:
    text = replaced(
        "  default: general\n",
        "  default: general\n  rules:\n"
        "    - {level: major, when: {actor: department, eq: sales}}\n",
    )
    problem = the_problem(text, "severity.rules[0].when.actor")
    assert_at(problem, text, "department")


def test_severity_rules_cannot_read_built_in_fields() -> None:
    text = replaced(
        "  default: general\n",
        "  default: general\n  rules:\n    - {level: major, when: {field: state, eq: handled}}\n",
    )
    problem = the_problem(text, "severity.rules[0].when.field")
    assert "built-in 'state'" in problem.message
    assert_at(problem, text, "state, eq")


def test_severity_cannot_depend_on_itself() -> None:
    text = replaced(
        "  default: general\n",
        "  default: general\n  rules:\n    - {level: major, when: {field: severity, eq: major}}\n",
    )
    problem = the_problem(text, "severity.rules[0].when.field")
    assert problem.message == "severity cannot depend on itself"


def test_unknown_severity_level() -> None:
    text = replaced("  default: general\n", "  default: genral\n")
    problem = the_problem(text, "severity.default")
    assert problem.suggestion == "general"
    assert_at(problem, text, "genral")


def test_numbers_compare_across_numeric_types() -> None:
    text = replaced(
        "    roles: [manager]\n",
        "    roles: [manager]\n    condition: {all: [{field: score, ge: 84.5},"
        " {field: amount, lt: {field: score}}, {count_of: handle, le: 3}]}\n",
    )
    assert parse_rules(text, FILE)


# -- the state graph -----------------------------------------------------------------------


def test_unreachable_state() -> None:
    text = replaced("roles:\n", "  - id: limbo\n    label: {zh: 悬置, en: Limbo}\nroles:\n")
    problem = the_problem(text, "states[3].id")
    assert problem.message == "state 'limbo' is unreachable from 'received'"
    assert problem.expected == "a transition leading to it"
    assert_at(problem, text, "limbo")


def test_state_with_no_way_to_a_final_state() -> None:
    text = replaced("roles:\n", "  - id: limbo\n    label: {zh: 悬置, en: Limbo}\nroles:\n")
    text = with_transition(
        "  - {trigger: park, from: [handled], to: limbo, roles: [clerk]}\n", text
    )
    problem = the_problem(text, "states[3].id")
    assert problem.message == "state 'limbo' has no way to a final state"
    assert_at(problem, text, "limbo")


def test_no_final_state() -> None:
    text = replaced("    final: true\n", "")
    text = with_transition(
        "  - {trigger: reopen, from: [closed], to: handled, roles: [clerk]}\n", text
    )
    problem = the_problem(text, "states")
    assert problem.message == "no state is final"
    assert_at(problem, text, "- id: received")


def test_final_state_with_transitions_out() -> None:
    text = with_transition("  - {trigger: reopen, from: [closed], to: handled, roles: [clerk]}\n")
    problem = the_problem(text, "states[2].final")
    assert problem.message == "final state 'closed' has transitions out"
    assert_at(problem, text, "true")


def test_a_final_state_may_loop_on_itself() -> None:
    text = with_transition(
        "  - {trigger: annotate, from: [closed], to: closed, roles: [clerk], fields: [note]}\n"
    )
    assert parse_rules(text, FILE).final_states == {"closed"}


# -- ambiguity -----------------------------------------------------------------------------


def two_ways(first: str, second: str, roles: str = "[manager]") -> str:
    return with_transition(
        f"  - {{trigger: decide, from: [handled], to: closed, roles: [manager, clerk],"
        f" condition: {first}}}\n"
        f"  - {{trigger: decide, from: [handled], to: received, roles: {roles},"
        f" condition: {second}}}\n"
    )


def test_same_trigger_source_and_role_without_conditions_is_ambiguous() -> None:
    text = with_transition(
        "  - {trigger: close, from: [handled], to: received, roles: [manager, clerk]}\n"
    )
    problem = the_problem(text, "transitions[2].trigger")
    assert problem.message == (
        "'close' from handled is ambiguous with transitions[1]: their conditions can both hold"
    )
    assert problem.expected is not None and "exclude each other" in problem.expected
    assert_at(problem, text, "close, from")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("{field: urgent, eq: true}", "{field: urgent, is_set: true}"),
        ("{field: score, le: 85}", "{field: score, ge: 85}"),
        ("{field: mood, eq: happy}", "{field: mood, eq: happy}"),
        ("{field: mood, in: [happy, unhappy]}", "{field: mood, eq: unhappy}"),
        ("{field: score, lt: 85}", "{field: amount, ge: 85}"),
        ("{any: [{field: urgent, eq: true}, {field: score, lt: 5}]}", "{field: score, lt: 85}"),
    ],
)
def test_conditions_that_can_both_hold_are_ambiguous(first: str, second: str) -> None:
    text = two_ways(first, second)
    problem = the_problem(text, "transitions[3].trigger")
    assert "ambiguous with transitions[2]" in problem.message
    assert_at(problem, text, "decide", 2)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("{field: urgent, eq: true}", "{not: {field: urgent, eq: true}}"),
        ("{not: {field: urgent, eq: true}}", "{field: urgent, eq: true}"),
        ("{field: mood, eq: happy}", "{field: mood, eq: unhappy}"),
        ("{field: score, lt: 85}", "{field: score, ge: 85}"),
        ("{field: score, ge: 85}", "{field: score, lt: 85}"),
        ("{field: score, le: 84}", "{field: score, gt: 84}"),
        ("{field: mood, eq: happy}", "{field: mood, ne: happy}"),
        ("{field: mood, in: [happy]}", "{field: mood, not_in: [happy]}"),
        ("{field: note, is_set: true}", "{field: note, is_set: false}"),
        ("{all: [{field: urgent, eq: true}, {field: score, lt: 85}]}", "{field: score, ge: 85}"),
        ("{any: [{field: score, lt: 50}, {field: score, lt: 85}]}", "{field: score, ge: 85}"),
    ],
)
def test_conditions_that_exclude_each_other_are_not_ambiguous(first: str, second: str) -> None:
    assert parse_rules(two_ways(first, second), FILE)


def test_different_roles_are_not_ambiguous() -> None:
    text = with_transition("  - {trigger: close, from: [handled], to: received, roles: [clerk]}\n")
    assert parse_rules(text, FILE)


# -- other checks --------------------------------------------------------------------------


def test_number_pattern_without_seq() -> None:
    text = replaced("initial: received", "initial: received\nnumber_pattern: TS-{year}")
    problem = the_problem(text, "number_pattern")
    assert problem.message == "the pattern has no {seq} placeholder"
    assert problem.expected is not None and "{seq" in problem.expected
    assert_at(problem, text, "TS-{year}")


def test_number_pattern_with_unknown_placeholder() -> None:
    text = replaced("initial: received", "initial: received\nnumber_pattern: TS-{yaer}-{seq}")
    problem = the_problem(text, "number_pattern")
    assert problem.suggestion == "year"


def test_number_pattern_that_cannot_be_filled_in() -> None:
    text = replaced("initial: received", "initial: received\nnumber_pattern: 'TS-{seq}}'")
    problem = the_problem(text, "number_pattern")
    assert "cannot be filled in" in problem.message


def test_bad_timezone() -> None:
    text = replaced("initial: received", "initial: received\ntimezone: Asia/Shangai")
    problem = the_problem(text, "timezone")
    assert problem.message == "unknown time zone 'Asia/Shangai'"
    assert problem.expected == "an IANA zone name"
    assert problem.suggestion == "Asia/Shanghai"
    assert_at(problem, text, "Asia/Shangai")


@pytest.mark.parametrize(
    ("old", "new", "path", "needle"),
    [
        ("  - id: handled", "  - id: received", "states[1].id", "received\n    label: {zh: 处理"),
        ("  - id: manager", "  - id: clerk", "roles[1].id", "clerk\n    label: {zh: 经理"),
        ("{id: score,", "{id: amount,", "fields[1].id", "amount, type: integer"),
    ],
)
def test_duplicate_ids(old: str, new: str, path: str, needle: str) -> None:
    text = replaced(old, new)
    problems = problems_of(text)
    problem = next(p for p in problems if p.path == path)
    assert problem.message.endswith("is declared twice")
    assert problem.expected == "unique ids"
    assert_at(problem, text, needle)


def test_enum_without_values() -> None:
    text = replaced("{id: mood, type: enum, values: [happy, unhappy],", "{id: mood, type: enum,")
    problem = the_problem(text, "fields[2].type")
    assert "lists no values" in problem.message


def test_required_field_not_submittable() -> None:
    text = replaced("{id: note, type: string,", "{id: note, type: string, required: true,")
    text = replaced("initial: received", "initial: received\nsubmit: {fields: [amount]}", text)
    problem = the_problem(text, "fields[5].required")
    assert "submit.fields" in problem.message


def test_separation_rule_that_forbids_nothing() -> None:
    text = replaced(
        "initial: received",
        "initial: received\nseparation_of_duties:\n  - {id: empty, triggers: '*', reason: nothing}",
    )
    problem = the_problem(text, "separation_of_duties[0]")
    assert problem.message == "the rule forbids nothing"


def test_approval_by_an_unknown_trigger() -> None:
    text = replaced(
        "    roles: [manager]\n",
        "    roles: [manager]\n    approval: {by: aprove, since: handle}\n",
    )
    text = with_transition(
        "  - {trigger: approve, from: [handled], to: handled, roles: [manager]}\n", text
    )
    problem = the_problem(text, "transitions[1].approval.by")
    assert problem.suggestion == "approve"


def test_a_transition_cannot_approve_itself() -> None:
    text = replaced("    roles: [manager]\n", "    roles: [manager]\n    approval: {by: close}\n")
    problem = the_problem(text, "transitions[1].approval.by")
    assert problem.message == "a transition cannot approve itself"


# -- all problems at once ------------------------------------------------------------------


def test_structural_and_reference_problems_are_reported_together() -> None:
    text = replaced("{id: score, type: integer,", "{id: score, type: number,")
    text = replaced("    to: closed", "    to: clossed", text)
    text = replaced("    roles: [clerk]", "    roles: [clerk, boss]", text)
    text = replaced("  - id: manager\n", "  - id: manager\n    colour: red\n", text)
    problems = problems_of(text)
    by_path = {p.path: p for p in problems}
    assert set(by_path) == {
        "fields[1].type",
        "roles[1].colour",
        "transitions[1].to",
        "transitions[0].roles[1]",
    }
    assert by_path["fields[1].type"].suggestion is None or by_path["fields[1].type"].expected
    assert_at(by_path["fields[1].type"], text, "number")
    assert_at(by_path["roles[1].colour"], text, "colour")
    assert by_path["transitions[1].to"].suggestion == "closed"
    assert_at(by_path["transitions[1].to"], text, "clossed")
    assert_at(by_path["transitions[0].roles[1]"], text, "boss")
    for p in problems:
        assert p.line is not None and p.column is not None


def test_items_that_failed_the_structure_are_not_reported_again_as_unknown() -> None:
    text = replaced(
        "  - id: manager\n    label: {zh: 经理, en: Manager}\n",
        "  - id: manager\n    lable: {zh: 经理, en: Manager}\n",
    )
    paths = [p.path for p in problems_of(text)]
    assert paths == ["roles[1].label", "roles[1].lable"]


def test_later_list_items_keep_their_positions_after_a_bad_item() -> None:
    text = replaced("  - trigger: handle\n", "  - trigger: handle\n    colour: red\n")
    text = replaced("    roles: [manager]", "    roles: [manger]", text)
    problems = problems_of(text)
    by_path = {p.path: p for p in problems}
    assert set(by_path) == {"transitions[0].colour", "transitions[1].roles[0]"}
    assert_at(by_path["transitions[1].roles[0]"], text, "manger")


def test_many_reference_problems_in_one_error() -> None:
    text = default_rules_text()
    for old, new in [
        ("to: recorded", "to: recordd"),
        ("roles: [customer_service]\n", "roles: [customer_servce]\n"),
        ("{field: satisfaction, ne: dissatisfied}", "{field: satisfaction, ne: disatisfied}"),
        ("timezone: Asia/Shanghai", "timezone: Asia/Shanghia"),
    ]:
        text = replaced(old, new, text)
    problems = problems_of(text)
    assert {p.suggestion for p in problems} >= {
        "recorded",
        "customer_service",
        "dissatisfied",
        "Asia/Shanghai",
    }
    assert all(p.line and p.column and p.path for p in problems)


# -- files ---------------------------------------------------------------------------------


def test_load_a_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    rules = load_rules(path)
    assert rules.source == str(path)
    assert load_rules(str(path)).version == rules.version


def test_problems_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(replaced("    to: closed", "    to: clossed"), encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load_rules(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert str(problem).startswith(f"{path}:{problem.line}:{problem.column}: transitions[1].to")


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(RuleError) as info:
        load_rules(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert problem.message.startswith("cannot read")
    assert problem.line is None and problem.column is None


def test_a_directory_is_not_a_rule_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as info:
        load_rules(tmp_path)
    assert info.value.problems[0].message.startswith("cannot read")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gbk.yaml"
    path.write_bytes(MINIMAL.encode("gbk"))
    with pytest.raises(RuleError) as info:
        load_rules(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert problem.message.startswith("not UTF-8 text (byte ")


def test_the_default_file_is_loaded_without_a_path() -> None:
    assert load_rules().source.endswith("default.yaml")
