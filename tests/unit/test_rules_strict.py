"""Rule files are read type-exactly, YAML problems come with every other problem, a value
reached through an alias is located at the alias, and only text is accepted as rule text."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from complaintflow import Engine, SimulatedClock
from complaintflow.errors import RuleError, RuleProblem
from complaintflow.rules.loader import default_rules_text, json_schema, parse_rules
from complaintflow.rules.source import format_path, read_yaml
from complaintflow.storage.tables import rulesets as R
from tests.unit.test_rules_loader import at

FILE = "strict.yaml"
DEFAULT = default_rules_text()

SMALL = """\
name: 小规则
initial: received
states:
  - id: received
    label: {zh: 接获, en: Received}
  - id: closed
    label: {zh: 结案, en: Closed}
    final: true
roles:
  - id: clerk
    label: {zh: 文员, en: Clerk}
  - id: manager
    label: {zh: 经理, en: Manager}
severity:
  levels: [general, major]
  default: general
transitions:
  - trigger: close
    from: [received]
    to: closed
    roles: [clerk]
"""


def replaced(old: str, new: str, base: str = DEFAULT) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def problems_of(text: str) -> tuple[RuleProblem, ...]:
    with pytest.raises(RuleError) as info:
        parse_rules(text, FILE)
    problems = info.value.problems
    assert problems
    assert all(p.file == FILE and p.message for p in problems), problems
    return problems


def located(problem: RuleProblem) -> tuple[int | None, int | None]:
    return problem.line, problem.column


def in_file_order(problems: tuple[RuleProblem, ...]) -> bool:
    places = [(p.line or 0, p.column or 0) for p in problems]
    return places == sorted(places)


# -- 1. types are exact ---------------------------------------------------------------------

# (text before the value, the value in the default file, the kind of the key)
SITES: list[tuple[str, str, str]] = [
    ("    final: ", "true", "bool"),
    ("{id: customer_name, type: string, required: ", "true", "bool"),
    ("{id: contact_person, type: string, personal: ", "true", "bool"),
    ("    align_to_opening: ", "true", "bool"),
    ("    count_start_day: ", "true", "bool"),
    ("    day_of_month: ", "4", "int"),
    ("    official_through: ", "2026", "int"),
    ("    duration: {minutes: ", "30", "int"),
    ("personal: true, max_length: ", "40", "int"),
    ("name: ", "客户投诉处理程序 (default)", "str"),
    ("timezone: ", "Asia/Shanghai", "str"),
    ("    country: ", "CN", "str"),
    ("    seed: ", '"002 1.1.1 / 1.1.3 / 1.3 (30 minutes, also for major complaints)"', "str"),
    ("{id: quantity, type: integer, min: ", "0", "number"),
    ("type: integer, min: 0, max: ", "100", "number"),
    ("warnings: [{fraction: ", "0.5", "number"),
]

_WORDS = st.sampled_from(["yes", "no", "on", "off", "y", "n", "zero", "x"])
_INTS = st.integers(-(10**12), 10**12).map(str)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=32).map(
    lambda f: repr(float(f)))
_BOOLS = st.sampled_from(["true", "false", "True", "FALSE"])


def _quoted(texts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return texts.flatmap(lambda t: st.sampled_from([f"'{t}'", f'"{t}"']))


#: values whose YAML type is not the key's
WRONG: dict[str, st.SearchStrategy[str]] = {
    "bool": st.one_of(_INTS, _FLOATS, _WORDS, _quoted(_BOOLS)),
    "int": st.one_of(_FLOATS, _BOOLS, _WORDS, _quoted(_INTS), st.just("1e3")),
    "str": st.one_of(_INTS, _FLOATS, _BOOLS),
    "number": st.one_of(_BOOLS, _WORDS, _quoted(_INTS), _quoted(_FLOATS)),
}


def path_at(text: str, place: tuple[int, int]) -> str:
    """The key path of the value that starts at ``place`` in ``text``."""
    _, source, problems = read_yaml(text, FILE)
    assert not problems
    (path,) = [p for p, loc in source.positions.items() if (loc.line, loc.column) == place]
    return format_path(path)


@pytest.mark.parametrize(("before", "value", "kind"), SITES)
def test_each_site_is_a_scalar_of_the_default_file(before: str, value: str, kind: str) -> None:
    line, column = at(DEFAULT, before + value)
    assert path_at(DEFAULT, (line, column + len(before)))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SITES).flatmap(lambda site: st.tuples(st.just(site), WRONG[site[2]])))
def test_a_value_of_the_wrong_yaml_type_is_reported_where_it_is(
    case: tuple[tuple[str, str, str], str],
) -> None:
    (before, value, _), wrong = case
    place = at(DEFAULT, before + value)
    place = (place[0], place[1] + len(before))
    path = path_at(DEFAULT, place)
    problems = problems_of(replaced(before + value, before + wrong))
    mine = [p for p in problems if p.path == path]
    assert mine, (path, problems)
    assert located(mine[0]) == place, mine[0]
    assert mine[0].expected, mine[0]


@pytest.mark.parametrize(
    ("before", "old", "new", "expected"),
    [
        ("    final: ", "true", "'yes'", "true or false"),
        ("    final: ", "true", '"true"', "true or false"),
        ("    final: ", "true", "1", "true or false"),
        ("    day_of_month: ", "4", "4.0", "an integer"),
        ("    day_of_month: ", "4", "'4'", "an integer"),
        ("    day_of_month: ", "4", "true", "an integer"),
        ("{id: quantity, type: integer, min: ", "0", "'0'", "a number"),
        ("{id: quantity, type: integer, min: ", "0", "false", "a number"),
        ("warnings: [{fraction: ", "0.5", "'0.5'", "a number"),
        ("warnings: [{fraction: ", "0.5", "true", "a number"),
        ("name: ", "客户投诉处理程序 (default)", "2026", "text"),
        ("format: ", "1", "true", "1"),
        ("format: ", "1", "1.0", "1"),
        ("format: ", "1", "'1'", "1"),
    ],
)
def test_no_value_is_converted_to_the_type_of_its_key(
    before: str, old: str, new: str, expected: str
) -> None:
    text = replaced(before + old, before + new)
    (problem,) = problems_of(text)
    line, column = at(text, before + new)
    assert located(problem) == (line, column + len(before)), problem
    assert problem.expected is not None and problem.expected.startswith(expected), problem


def test_numbers_are_decimals_of_the_written_number() -> None:
    def quantity_min(text: str) -> Any:
        rules = parse_rules(text, FILE)
        return next(f.min for f in rules.definition.fields if f.id == "quantity")

    old = "{id: quantity, type: integer, min: 0,"
    assert quantity_min(DEFAULT) == Decimal(0)
    assert str(quantity_min(replaced(old, old.replace("0,", "0.1,")))) == "0.1"
    assert quantity_min(replaced(old, old.replace("0,", "-7,"))) == Decimal(-7)
    (problem,) = problems_of(replaced(old, old.replace("0,", "1e999,")))
    assert problem.path == "fields[13].min" and "finite" in problem.message


def test_an_integer_too_long_to_convert_is_a_problem_not_a_crash() -> None:
    old = "{id: quantity, type: integer, min: 0,"
    text = replaced(old, old.replace("0,", "1" * 5000 + ","))
    (problem,) = problems_of(text)
    assert problem.path == "fields[13].min" and "too many digits" in problem.message
    assert located(problem) == (at(text, old[:-2])[0], at(text, "1" * 5000)[1])


def test_the_schema_says_number_for_min_and_max() -> None:
    fields = json_schema()["$defs"]["FieldDef"]["properties"]
    for key in ("min", "max"):
        assert fields[key]["anyOf"] == [{"type": "number"}, {"type": "null"}]


OVERRIDE_AT = "    beyond: provisional\n"


def with_override(value: str) -> str:
    return replaced(OVERRIDE_AT, OVERRIDE_AT + "    overrides:\n"
                    f"      - {{date: {value}, kind: holiday, note: 临时停工}}\n")


@pytest.mark.parametrize("value", ["2026-03-04", "'2026-03-04'", '"2026-03-04"'])
def test_an_override_date_is_read_from_its_iso_text(value: str) -> None:
    rules = parse_rules(with_override(value), FILE)
    assert rules.definition.calendars[0].overrides[0].date == date(2026, 3, 4)


@pytest.mark.parametrize(
    "value", ["0", "20260304", "'1700000000'", "true", "2026-3-4", "2026-03-04T00:00:00",
              "2026-02-30", "[2026, 3, 4]"],
)
def test_an_override_date_is_a_date_and_nothing_else(value: str) -> None:
    text = with_override(value)
    (problem,) = problems_of(text)
    assert problem.path == "calendars[0].overrides[0].date", problem
    line, column = at(text, f"{{date: {value}")
    assert located(problem) == (line, column + len("{date: ")), problem
    assert problem.expected == "a date such as 2026-10-01" or value.startswith("["), problem


# -- 2. YAML problems come with all the others ----------------------------------------------


def test_yaml_structural_and_reference_problems_are_reported_together() -> None:
    text = replaced("    final: true\n", "    final: true\n    final: false\n")
    text = replaced("  - {id: auditor, label:", "  - {id: auditor, colour: red, label:", text)
    text = replaced("to: recorded", "to: recordd", text)
    problems = problems_of(text)
    by_path = {p.path: p for p in problems}
    assert set(by_path) == {"states[6].final", "roles[13].colour", "transitions[2].to"}
    assert by_path["states[6].final"].message == "duplicate key 'final'"
    assert located(by_path["states[6].final"]) == at(text, "final: false")
    assert located(by_path["roles[13].colour"]) == at(text, "colour")
    assert by_path["transitions[2].to"].suggestion == "recorded"
    assert in_file_order(problems)


def test_a_refused_tag_is_not_reported_again_as_a_missing_value() -> None:
    text = replaced("name: 客户投诉处理程序 (default)", "name: !!binary abc")
    text = replaced("  - {id: auditor, label:", "  - {id: auditor, colour: red, label:", text)
    problems = problems_of(text)
    # not also 'name: Input should be a valid string (got null)'
    assert [p.path for p in problems] == ["name", "roles[13].colour"]
    assert "is not allowed in rule files" in problems[0].message
    assert located(problems[0]) == at(text, "!!binary")


def test_a_tag_on_a_key_is_refused_and_the_key_still_read() -> None:
    """A tag on a mapping key was dropped silently; the key is read as the plain key it
    carries, so nothing else is reported about it."""
    text = replaced("name: 客户投诉处理程序 (default)",
                    "!!python/name:os.system name: 客户投诉处理程序 (default)")
    text = replaced("to: recorded", "to: recordd", text)
    problems = problems_of(text)
    assert [p.path for p in problems] == ["name", "transitions[2].to"], problems
    assert problems[0].message == ("YAML tag 'tag:yaml.org,2002:python/name:os.system' "
                                   "is not allowed in rule files")
    assert located(problems[0]) == at(text, "!!python")


@pytest.mark.parametrize("tag", ["!!str", "!!null", "!"])
def test_a_standard_tag_on_a_key_is_refused_and_the_key_still_read(tag: str) -> None:
    """The composed key carries the tag the resolver would give it, so a written ``!!str``
    looked like no tag at all and was accepted."""
    text = replaced("name: 客户投诉处理程序 (default)", f"{tag} name: 客户投诉处理程序 (default)")
    problems = problems_of(text)
    assert [p.path for p in problems] == ["name"], problems
    assert "is not allowed in rule files" in problems[0].message
    assert located(problems[0]) == at(text, f"{tag} name")


def test_a_quoted_value_is_not_taken_for_a_tagged_one() -> None:
    text = replaced("name: 客户投诉处理程序 (default)", "name: '13:00'")
    assert parse_rules(text, FILE).name == "13:00"


def test_an_anchor_defined_twice_names_the_anchor_and_its_first_place() -> None:
    text = replaced("    label: {zh: 登记, en: Recorded}",
                    "    label: &shown {zh: 登记, en: Recorded}")
    text = replaced("    label: {zh: 确认, en: Confirmed}",
                    "    label: &shown {zh: 确认, en: Confirmed}", text)
    (problem,) = problems_of(text)
    first = at(text, "&shown")
    assert problem.message == (f"anchor 'shown' is defined twice (first at line {first[0]}, "
                               f"column {first[1]})")
    assert problem.expected == "each anchor name defined once"


def test_a_tagged_label_is_reported_once_and_the_rest_is_still_checked() -> None:
    text = replaced("    label: {zh: 登记, en: Recorded}",
                    "    label: !label {zh: 登记, en: Recorded}")
    text = replaced("roles: [customer_service]\n", "roles: [customer_servce]\n", text)
    problems = problems_of(text)
    assert problems[0].path == "states[1].label"
    assert len([p for p in problems if p.path.startswith("states[1]")]) == 1, problems
    assert any(p.suggestion == "customer_service" for p in problems), problems


def test_a_merge_key_does_not_also_report_the_keys_it_would_have_given() -> None:
    text = replaced("    label: {zh: 登记, en: Recorded}",
                    "    <<: {label: {zh: 登记, en: Recorded}}")
    text = replaced("to: recorded", "to: recordd", text)
    problems = problems_of(text)
    assert [p.path for p in problems] == ["states[1]", "transitions[2].to"], problems
    assert "plain strings" in problems[0].message
    assert located(problems[0]) == at(text, "<<")


def test_a_merge_key_does_not_hide_other_problems_of_its_mapping() -> None:
    text = replaced("    label: {zh: 登记, en: Recorded}",
                    "    <<: {x: 1}\n    label: {zh: 登记, en: Recorded}\n    colour: red")
    problems = problems_of(text)
    assert [p.path for p in problems] == ["states[1]", "states[1].colour"], problems


def test_the_first_of_two_duplicate_keys_is_still_checked() -> None:
    text = replaced("    final: true\n", "    final: 'yes'\n    final: true\n")
    problems = problems_of(text)
    assert [(p.path, p.message.split(" (")[0]) for p in problems] == [
        ("states[6].final", "Input should be a valid boolean"),
        ("states[6].final", "duplicate key 'final'"),
    ]


def test_a_tag_on_the_whole_file_is_the_only_problem() -> None:
    text = "!rules\n" + DEFAULT.replace("to: recorded", "to: recordd", 1)
    (problem,) = problems_of(text)
    assert problem.path == "" and "is not allowed" in problem.message


def test_a_file_that_is_not_yaml_still_gives_only_that_problem() -> None:
    text = replaced("to: recorded", "to: recordd")
    text = replaced("    roles: [customer_service]\n", "    roles: [customer_service\n", text)
    (problem,) = problems_of(text)
    assert problem.message.startswith("malformed YAML")


def test_every_problem_is_in_file_order() -> None:
    text = replaced("to: recorded", "to: recordd")
    text = replaced("timezone: Asia/Shanghai", "timezone: Asia/Shanghia", text)
    text = replaced("    final: true\n", "    final: true\n    final: true\n", text)
    text = replaced("  - {id: auditor, label:", "  - {id: auditor, colour: red, label:", text)
    problems = problems_of(text)
    assert len(problems) == 4
    assert in_file_order(problems)


# -- 3. a value reached through an alias is located at the alias ----------------------------


def test_a_problem_in_an_aliased_mapping_is_located_at_each_alias() -> None:
    text = replaced("    label: {zh: 接获, en: Received}",
                    "    label: &lab {zh: 接获, en: Received, colour: red}", SMALL)
    text = replaced("    label: {zh: 结案, en: Closed}", "    label: *lab", text)
    text = replaced("    label: {zh: 文员, en: Clerk}", "    label: *lab", text)
    problems = problems_of(text)
    assert [p.path for p in problems] == [
        "states[0].label.colour", "states[1].label.colour", "roles[0].label.colour"]
    first, second, third = problems
    assert located(first) == at(text, "colour")
    assert "via alias" not in first.message
    assert located(second) == at(text, "*lab", 1)
    assert located(third) == at(text, "*lab", 2)
    line, column = at(text, "colour")
    for p in (second, third):
        assert f"via alias *lab, from line {line}, column {column}" in p.message, p


def test_a_missing_key_in_an_aliased_mapping_is_located_at_the_alias() -> None:
    text = replaced("    label: {zh: 文员, en: Clerk}", "    label: &lab {zh: 文员}", SMALL)
    text = replaced("    label: {zh: 经理, en: Manager}", "    label: *lab", text)
    problems = problems_of(text)
    assert [p.path for p in problems] == ["roles[0].label.en", "roles[1].label.en"]
    # an anchored value starts at its anchor
    assert located(problems[0]) == at(text, "&lab")
    assert located(problems[1]) == at(text, "*lab")
    line, column = at(text, "&lab")
    assert f"(via alias *lab, from line {line}, column {column})" in problems[1].message


def test_an_aliased_bad_reference_is_located_at_the_alias() -> None:
    text = replaced("    to: closed\n", "    to: &target clossed\n", SMALL)
    text += "  - trigger: reject\n    from: [received]\n    to: *target\n    roles: [manager]\n"
    problems = problems_of(text)
    assert [p.path for p in problems] == ["transitions[0].to", "transitions[1].to"]
    assert all(p.suggestion == "closed" for p in problems)
    assert located(problems[0]) == at(text, "&target")
    assert located(problems[1]) == at(text, "*target")
    assert "via alias *target" in problems[1].message


def test_nested_aliases_are_located_at_the_outermost_alias() -> None:
    text = replaced("    label: {zh: 接获, en: Received}",
                    "    label: &outer {zh: 接获, en: &inner 5}", SMALL)
    text = replaced("    label: {zh: 结案, en: Closed}", "    label: *outer", text)
    text = replaced("    label: {zh: 文员, en: Clerk}", "    label: {zh: 文员, en: *inner}", text)
    problems = problems_of(text)
    assert [p.path for p in problems] == [
        "states[0].label.en", "states[1].label.en", "roles[0].label.en"]
    assert located(problems[0]) == at(text, "&inner")
    assert located(problems[1]) == at(text, "*outer")
    assert "via alias *outer" in problems[1].message
    assert located(problems[2]) == at(text, "*inner")
    assert "via alias *inner" in problems[2].message


def test_a_refused_tag_inside_an_anchor_is_located_at_each_use() -> None:
    text = replaced("  levels: [general, major]", "  levels: &lv !!set {general: null}", SMALL)
    text += "personal_data: {readers: *lv}\n"
    problems = problems_of(text)
    assert [p.path for p in problems] == ["severity.levels", "personal_data.readers"]
    assert located(problems[0]) == at(text, "&lv")
    assert located(problems[1]) == at(text, "*lv")
    assert "via alias *lv" in problems[1].message


def test_aliases_of_values_and_keys_still_load() -> None:
    text = replaced("    label: {zh: 文员, en: Clerk}",
                    "    &key label: &lab {zh: 文员, en: Clerk}", SMALL)
    text = replaced("    label: {zh: 经理, en: Manager}", "    *key : *lab", text)
    rules = parse_rules(text, FILE)
    assert [r.label.en for r in rules.definition.roles] == ["Clerk", "Clerk"]


def test_an_undefined_alias_is_malformed_yaml() -> None:
    text = replaced("    label: {zh: 经理, en: Manager}", "    label: *nowhere", SMALL)
    (problem,) = problems_of(text)
    assert problem.message == "malformed YAML: found undefined alias 'nowhere'"
    assert located(problem) == at(text, "*nowhere")


# -- 4. rule text is str --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", [DEFAULT.encode(), bytearray(DEFAULT.encode()), memoryview(DEFAULT.encode()),
             None, 42, [DEFAULT], Path("rules.yaml")],
)
def test_rule_text_that_is_not_str_is_a_rule_error(text: Any) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(text, FILE)
    (problem,) = info.value.problems
    assert problem.file == FILE
    assert problem.message.startswith(f"rule text must be str, not {type(text).__name__}")
    if isinstance(text, bytes | bytearray | memoryview):
        assert "decode it first" in problem.message


@pytest.mark.parametrize("name", [None, 3, Path("rules.yaml"), b"rules.yaml", ["x"]])
def test_a_source_name_that_is_not_str_is_a_rule_error(name: Any) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(DEFAULT, name)
    (problem,) = info.value.problems
    assert problem.message == f"the rule source name must be str, not {type(name).__name__}"


# -- rule sets stored by an earlier, lax release -----------------------------------------------

LAX = (SMALL.replace("    final: true", "    final: 'yes'")
       + "fields:\n  - {id: amount, type: decimal, min: '5', label: {zh: 金额, en: Amount}}\n")


def test_a_rule_set_stored_by_a_lax_release_is_read_as_it_was_read() -> None:
    with pytest.raises(RuleError):
        parse_rules(LAX, "lax.yaml")  # loaded today: refused
    stored = parse_rules(LAX, "lax.yaml", stored=True)
    assert stored.states["closed"].final is True
    assert stored.fields["amount"].min == Decimal(5)
    # a file that passes today reads the same either way
    assert parse_rules(DEFAULT, "d.yaml", stored=True).definition == \
        parse_rules(DEFAULT, "d.yaml").definition


def test_the_engine_reads_its_stored_rule_sets_leniently(tmp_path: Path) -> None:
    version = hashlib.sha256(LAX.encode("utf-8")).hexdigest()
    clock = SimulatedClock(datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    with Engine.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock) as engine:
        with engine.database.begin() as conn:  # as an earlier release stored it
            conn.execute(sa.insert(R).values(hash=version, name="小规则", source="lax.yaml",
                                             text=LAX, loaded_at=clock(), loaded_by=None))
        with engine.database.connect() as conn:
            assert engine.compiled(conn, version).rules.final_states == frozenset({"closed"})
