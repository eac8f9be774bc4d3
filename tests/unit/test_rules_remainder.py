"""A structural problem hides nothing else: the parts of the file that can be read are still
checked for references, types and (when they mean something) the state graph, and what only
follows from the unreadable part is not reported as a further problem."""

from __future__ import annotations

import pytest

from tests.unit.test_rules_loader import at
from tests.unit.test_rules_strict import in_file_order, located, problems_of, replaced

RECORD = "    to: recorded\n    roles: [customer_service]\n"
REVISIT_ANY = "        - {elapsed_since: feed_back, unit: days, ge: 5}"


def paths(text: str) -> list[str]:
    return [p.path for p in problems_of(text)]


# -- the three shapes of the review --------------------------------------------------------


def test_an_unknown_key_does_not_hide_an_unknown_state_in_the_same_item() -> None:
    text = replaced(RECORD, "    to: recordd\n    roles: [customer_service]\n    colour: red\n")
    problems = problems_of(text)
    by_path = {p.path: p for p in problems}
    assert [p.path for p in problems] == ["transitions[10].to", "transitions[10].colour"]
    assert by_path["transitions[10].to"].suggestion == "recorded"
    assert by_path["transitions[10].to"].expected == "one of the declared states"
    assert located(by_path["transitions[10].to"]) == at(text, "recordd")
    assert located(by_path["transitions[10].colour"]) == at(text, "colour")


def test_a_bad_value_does_not_hide_an_unknown_trigger_in_the_same_condition() -> None:
    text = replaced(REVISIT_ANY, "        - {elapsed_since: feed_bak, unit: dayz, ge: 5}")
    problems = problems_of(text)
    base = "transitions[22].condition.any[1]"
    assert [p.path for p in problems] == [f"{base}.elapsed_since", f"{base}.unit"]
    unknown, unit = problems
    assert unknown.message == "unknown trigger 'feed_bak'"
    assert unknown.suggestion == "feed_back"
    assert located(unknown) == at(text, "feed_bak")
    assert unit.suggestion == "days"
    assert located(unit) == at(text, "dayz")


def test_a_top_level_problem_does_not_end_the_checking() -> None:
    text = replaced("format: 1", "format: 2")
    text = replaced(RECORD, "    to: recordd\n    roles: [customer_servce]\n", text)
    problems = problems_of(text)
    assert [p.path for p in problems] == ["format", "transitions[10].to",
                                          "transitions[10].roles[0]"]
    assert [p.suggestion for p in problems[1:]] == ["recorded", "customer_service"]
    assert all(p.line and p.column and p.expected for p in problems)
    assert in_file_order(problems)


# -- what follows from an unreadable part is not another problem ---------------------------


def test_an_unknown_key_for_the_subject_is_not_also_a_condition_without_subject() -> None:
    text = replaced(REVISIT_ANY, "        - {elapsed_snce: feed_back, unit: days, ge: 5}")
    # not also 'names 0 subjects' or "'unit' only applies to elapsed_since"
    assert paths(text) == ["transitions[22].condition.any[1].elapsed_snce"]


def test_a_dropped_transition_does_not_make_states_unreachable() -> None:
    text = replaced("    from: [resolved]\n    to: revisited\n",
                    "    from: [resolved]\n    to: 5\n")
    text = replaced(RECORD, "    to: recordd\n    roles: [customer_service]\n", text)
    # revisited (and closed through it) lose their way in; that is no problem of its own
    assert paths(text) == ["transitions[10].to", "transitions[22].to"]


def test_a_final_flag_that_cannot_be_read_is_not_also_no_final_state() -> None:
    text = replaced("    final: true\n", "    final: 'yes'\n")
    assert paths(text) == ["states[6].final"]


def test_the_graph_is_checked_when_the_structural_problem_is_elsewhere() -> None:
    text = replaced("format: 1", "format: 2")
    text = replaced("states:\n", "states:\n  - id: limbo\n    label: {zh: 未定, en: Limbo}\n",
                    text)
    problems = problems_of(text)
    assert [p.path for p in problems] == ["format", "states[0].id"]
    assert problems[1].message == "state 'limbo' is unreachable from 'received'"


# a top-level value the rest depends on, unreadable or missing: (old, new, where the problem is)
UNREADABLE_TOP = [
    # not also 'working_days needs a calendar', nor received_in_working_time unknown
    ("calendar: office\n", "calendar: Office\n", "Office\n"),
    # not also every state unreachable
    ("initial: received", "initial: Received", "Received\n"),
    # a missing key is located at the mapping that lacks it: the file
    ("name: 客户投诉处理程序 (default)\n", "", "format: 1"),
    # not also an unknown severity level
    ("  default: general", "  default: General", "General\n"),
]


@pytest.mark.parametrize(("old", "new", "needle"), UNREADABLE_TOP)
def test_an_unreadable_top_level_value_hides_nothing_else(old: str, new: str,
                                                          needle: str) -> None:
    text = replaced(RECORD, "    to: recordd\n    roles: [customer_service]\n",
                    replaced(old, new))
    problems = problems_of(text)
    assert [p.path for p in problems][1:] == ["transitions[10].to"]
    assert located(problems[0]) == at(text, needle)
    assert problems[1].suggestion == "recorded"


def test_a_bad_element_of_a_list_keeps_the_positions_of_the_others() -> None:
    text = replaced(RECORD, "    to: recorded\n    roles: [Customer_service, customer_servce]\n")
    problems = problems_of(text)
    assert [p.path for p in problems] == ["transitions[10].roles[0]",
                                          "transitions[10].roles[1]"]
    assert located(problems[1]) == at(text, "customer_servce")
    assert problems[1].suggestion == "customer_service"


def test_a_top_level_problem_alone_is_the_only_problem() -> None:
    assert paths(replaced("format: 1", "format: 2")) == ["format"]


def test_a_bad_required_reference_does_not_hide_the_rest_of_its_item() -> None:
    text = replaced(RECORD, "    to: Recorded\n    roles: [customer_servce]\n")
    problems = problems_of(text)
    assert [p.path for p in problems] == ["transitions[10].to", "transitions[10].roles[0]"]
    assert problems[1].suggestion == "customer_service"


def test_an_unreadable_source_list_does_not_hide_the_target() -> None:
    text = replaced("    from: [received]\n    to: recorded\n",
                    "    from: [Received]\n    to: recordd\n")
    problems = problems_of(text)
    assert [p.path for p in problems] == ["transitions[10].from[0]", "transitions[10].to"]
    assert problems[1].suggestion == "recorded"


def test_an_unreadable_trigger_is_not_offered_as_a_suggestion() -> None:
    text = replaced("  - trigger: record\n", "  - trigger: Record\n")
    text = replaced("      by: feed_back\n", "      by: feed_bak\n", text)
    problems = problems_of(text)
    assert [p.path for p in problems] == ["transitions[10].trigger",
                                          "transitions[22].approval.by"]
    assert problems[1].suggestion == "feed_back"
