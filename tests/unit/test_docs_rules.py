"""docs/rules.md documents every key of the rule-file format, including timing, and maps the
procedure's timing rules (shared/procedure.md, section 5) onto the default timers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from complaintflow.rules.loader import default_rules_text, parse_rules
from complaintflow.rules.model import (
    WEEKDAYS,
    BreachActions,
    CalendarDef,
    CalendarOverride,
    Compare,
    Duration,
    DurationVariant,
    ReviewDef,
    RuleFile,
    TimerDef,
    TimerStart,
    TransitionDef,
    WarningDef,
)
from complaintflow.rules.ruleset import BUILTIN_FIELDS, RuleSet

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "rules.md").read_text("utf-8")

MODELS: tuple[type[BaseModel], ...] = (
    RuleFile,
    TimerDef,
    CalendarDef,
    CalendarOverride,
    ReviewDef,
    Duration,
    DurationVariant,
    WarningDef,
    BreachActions,
    TimerStart,
)

# the first column of the table in section 5 of shared/procedure.md
PROCEDURE_SECTION_5 = (
    "any department that takes a complaint hands it to customer service",
    "report to customer manager / service centre",
    "pass to quality dept",
    "first response",
    "registration",
    "handler contacts the customer after assignment",
    "salesperson visits the customer on site",
    "investigation organised",
    "on-site check / sample re-inspection",
    "investigation report",
    "disposal plan",
    "result fed back to customer",
    "progress report if not solved",
    "whole complaint",
    "extension",
    "reply with a solution",
    "revisit",
    "satisfied result reported to customer service",
    "after-hours receipt",
    "unresolved items reviewed",
)
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


@pytest.fixture(scope="module")
def default_rules() -> RuleSet:
    return parse_rules(default_rules_text(), "default.yaml")


def keys_of(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def section(heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = DOC.index(f"\n{heading}\n") + len(heading) + 2
    for m in re.finditer(r"^(#+) ", DOC[start:], flags=re.MULTILINE):
        if len(m.group(1)) <= level:
            return DOC[start : start + m.start()]
    return DOC[start:]


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|(-+\|)+", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # without the header


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_key_is_documented(model: type[BaseModel]) -> None:
    missing = [key for key in keys_of(model) if f"`{key}`" not in DOC]
    assert not missing, f"{model.__name__}: not in docs/rules.md: {missing}"


def test_every_key_of_a_comparison_is_documented() -> None:
    # subjects are shown with their argument, as in `field: NAME`
    missing = [key for key in keys_of(Compare) if not re.search(f"`{key}[`:]", DOC)]
    assert not missing, missing
    for key in ("elapsed_since", "unit", "calendar"):
        assert f"`{key}`" in section("### elapsed_since: not-before windows"), key


def test_the_timing_keys_are_in_the_top_level_table() -> None:
    rows = table_rows(section("## Top-level keys"))
    documented = {row[0].strip("`") for row in rows}
    assert set(keys_of(RuleFile)) <= documented


def test_weekdays_and_built_in_fields_are_documented() -> None:
    for name in (*WEEKDAYS, *BUILTIN_FIELDS):
        assert f"`{name}`" in DOC, name
    built_ins = {row[0].strip("`") for row in table_rows(section("### Built-in fields"))}
    assert set(BUILTIN_FIELDS) <= built_ins


def test_every_default_timer_is_in_the_procedure_table(default_rules: RuleSet) -> None:
    rows = table_rows(section("## Timing rules of the procedure"))
    mapped = " ".join(row[2] for row in rows)
    timers = [t.id for t in default_rules.definition.timers]
    assert timers
    missing = [t for t in timers if f"`{t}`" not in mapped]
    assert not missing, missing


def test_the_procedure_table_has_a_row_per_procedure_rule() -> None:
    rows = table_rows(section("## Timing rules of the procedure"))
    rules = [row[0] for row in rows]
    for rule in PROCEDURE_SECTION_5:
        assert rule in rules, rule


def test_the_procedure_table_names_only_what_the_default_file_has(
    default_rules: RuleSet,
) -> None:
    d = default_rules.definition
    models: tuple[type[BaseModel], ...] = (*MODELS, Compare, TransitionDef)
    known = {
        *(t.id for t in d.timers),
        *(r.id for r in d.reviews),
        *(s.id for s in d.states),
        *(f.id for f in d.fields),
        *(t.trigger for t in d.transitions),
        *BUILTIN_FIELDS,
        *(value for f in d.fields for value in f.values or ()),
        *(role.id for role in d.roles),
        *(key for model in models for key in keys_of(model)),
    }
    for row in table_rows(section("## Timing rules of the procedure")):
        for cell in row[2:]:
            for name in re.findall(r"`([^`]+)`", cell):
                if IDENTIFIER.match(name):
                    assert name in known, (name, row[0])


def test_timing_yaml_examples_are_copied_from_the_default_file() -> None:
    lines = {line.rstrip() for line in default_rules_text().splitlines()}
    start = DOC.index("\n## calendar and calendars\n")
    end = DOC.index("\n## Conditions\n")
    blocks = yaml_blocks(DOC[start:end]) + yaml_blocks(
        section("### elapsed_since: not-before windows")
    )
    assert len(blocks) >= 8
    for block in blocks:
        for line in block.splitlines():
            assert line.rstrip() in lines, line


def test_every_timer_of_an_example_is_a_default_timer(default_rules: RuleSet) -> None:
    d = default_rules.definition
    start = DOC.index("\n## calendar and calendars\n")
    end = DOC.index("\n## Conditions\n")
    shown = re.findall(r"^  - id: (\S+)$", "\n".join(yaml_blocks(DOC[start:end])), re.MULTILINE)
    assert {"whole_complaint", "first_response", "monthly_unresolved_review", "office"} <= set(
        shown
    )
    declared = {*(t.id for t in d.timers), *(r.id for r in d.reviews), *(c.id for c in d.calendars)}
    assert set(shown) <= declared
